//! `autointerp run` asks the explainer's server once before the cache stage: an unreachable
//! server, or one without the prompt logprobs the simulation scorer needs, stops the run before
//! hours of caching, naming the server and the fix; a healthy one lets it go on.

mod cache_support;
mod run_support;

use cache_support::{write_sae, D_MODEL};
use run_support::*;

fn run_args(dir: &std::path::Path, url: &str, scorers: &str) -> Vec<String> {
    let model = tiny_model(dir);
    let sae = write_sae(&dir.join("sae"), "layers.0", D_MODEL, 64, 4);
    let dataset = dir.join("text.txt");
    std::fs::write(&dataset, text(3000)).unwrap();
    let mut args: Vec<String> = [
        "run",
        model.to_str().unwrap(),
        sae.to_str().unwrap(),
        "--dataset",
        dataset.to_str().unwrap(),
        "--hookpoints",
        "layers.0",
        "--n-tokens",
        "1024",
        "--ctx-len",
        "32",
        "--results-dir",
        dir.join("results").to_str().unwrap(),
        "--name",
        "pre",
        "--explainer-model",
        "m",
        "--explainer-base-url",
        url,
        "--scorers",
        scorers,
        "--max-attempts",
        "1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(RECORD_FLAGS.map(String::from));
    args
}

fn run(args: &[String]) -> std::process::Output {
    autointerp(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn an_unreachable_server_stops_the_run_before_caching() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard): nothing listens there.
    let out = run(&run_args(dir.path(), "http://127.0.0.1:9/v1", "detection"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:9") && err.contains("before caching"),
        "{err}"
    );
    assert!(!dir.path().join("results/pre/latents").exists());
}

#[test]
fn a_server_without_prompt_logprobs_is_refused_for_simulation_before_caching() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Faults::default());
    let out = run(&run_args(dir.path(), &server.url, "simulation"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prompt_logprobs") && err.contains("--simulation-mode json"),
        "{err}"
    );
    assert!(!dir.path().join("results/pre/latents").exists());

    // The same server is fine for detection: one check request, then the cache and the run.
    let out = run(&run_args(dir.path(), &server.url, "detection"));
    assert_success(&out);
    assert!(dir
        .path()
        .join("results/pre/latents/layers.0/config.json")
        .is_file());
}

#[test]
fn a_server_that_ignores_continue_final_message_is_refused_for_prefill_before_caching() {
    let dir = tempfile::tempdir().unwrap();
    let ignoring = Server::start(Faults {
        ignores_continue: true,
        ..Faults::default()
    });
    let mut args = run_args(dir.path(), &ignoring.url, "detection");
    args.push("--explainer-prefill".into());
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("continue_final_message") && err.contains("--explainer-prefill"),
        "{err}"
    );
    assert!(!dir.path().join("results/pre/latents").exists());

    // A server that continues the prefilled answer passes the check; the run goes on.
    let honouring = Server::start(Faults::default());
    let mut args = run_args(dir.path(), &honouring.url, "detection");
    args.push("--explainer-prefill".into());
    assert_success(&run(&args));
    let continued = honouring
        .bodies()
        .iter()
        .filter(|(_, body)| body["continue_final_message"] == serde_json::json!(true))
        .count();
    assert!(
        continued > 1,
        "the probe and the explainer continue answers"
    );
}
