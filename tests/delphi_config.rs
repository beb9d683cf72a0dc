//! delphi's `run_config.json` (tests/fixtures/delphi): read by `run --config` and by `explain` and
//! `score` on a delphi results folder; a setting autointerp cannot honour is named; our saved
//! `run_config.json` carries delphi's keys and reads back the same; `log/hookpoint_firing_counts.pt`
//! is written for delphi's `log_results`.

mod run_support;

use std::path::Path;

use autointerp_run::{Layout, RunConfig};
use run_support::*;
use serde_json::{json, Value};

/// The delphi fixture, with settings that fit the test cache and the test server.
fn delphi_config(tok: &Path) -> Value {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/delphi/run_config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    cfg["model"] = json!(tok);
    cfg["hookpoints"] = json!([HOOK]);
    cfg["name"] = json!("delphi");
    cfg["max_latents"] = json!(4);
    cfg["cache_cfg"]["cache_ctx_len"] = json!(16);
    let c = &mut cfg["constructor_cfg"];
    c["example_ctx_len"] = json!(8);
    c["min_examples"] = json!(8);
    c["n_non_activating"] = json!(4);
    let s = &mut cfg["sampler_cfg"];
    s["n_examples_train"] = json!(4);
    s["n_examples_test"] = json!(4);
    s["n_quantiles"] = json!(2);
    cfg
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

fn client_flags(url: &str) -> Vec<&str> {
    vec![
        "--explainer-provider",
        "openai",
        "--explainer-base-url",
        url,
        "--explainer-model",
        "m",
    ]
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `run --config` reads delphi's file; the run's saved `run_config.json` holds delphi's keys
/// beside ours and reads back to the same settings.
#[test]
fn run_reads_a_delphi_config_and_saves_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    let run_dir = results.join("delphi");
    write_cache(&run_dir, 8, &tok);
    let server = Server::start(Faults::default());
    let config = dir.path().join("delphi_run_config.json");
    write_json(&config, &delphi_config(&tok));

    let mut args = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        "--results-dir",
        results.to_str().unwrap(),
    ];
    args.extend(client_flags(&server.url));
    let out = autointerp(&args);
    assert_success(&out);
    let err = stderr(&out);
    assert!(err.contains("note:") && err.contains("num_gpus"), "{err}");
    for i in 0..8 {
        assert_eq!(
            complete(&run_dir, i, &["detection", "fuzz"]),
            i < 4,
            "latent {i}"
        );
    }
    assert!(run_dir.join("log/hookpoint_firing_counts.pt").is_file());

    // delphi's keys beside ours, saying the same.
    let saved_path = run_dir.join("run_config.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&saved_path).unwrap()).unwrap();
    assert_eq!(saved["min_examples"], 8);
    assert_eq!(saved["constructor_cfg"]["min_examples"], 8);
    assert_eq!(saved["center_examples"], false);
    assert_eq!(saved["constructor_cfg"]["center_examples"], true);
    assert_eq!(
        saved["cache_cfg"]["dataset_repo"],
        "EleutherAI/fineweb-edu-dedup-10b"
    );
    assert_eq!(saved["fuzz_type"], "active");
    assert_eq!(saved["pipeline_num_proc"], 8);
    assert_eq!(saved["max_concurrency"], 8);
    assert_eq!(saved["hookpoints"], json!([HOOK]));
    assert_eq!(saved["explainer_provider"], "openai");

    // Read back, and saved again: the same file.
    let back = RunConfig::from_json_file(&saved_path).unwrap();
    assert_eq!(back.min_examples, 8);
    assert!(!back.center_examples);
    let again = dir.path().join("again");
    autointerp_run::save_config(&back, &Layout::new(&again)).unwrap();
    assert_eq!(
        std::fs::read(again.join("run_config.json")).unwrap(),
        std::fs::read(&saved_path).unwrap()
    );
}

/// `explain` and `score` on a delphi results folder take its settings from delphi's
/// `run_config.json` (neighbours as the non-activating source included); `load_in_8bit` changes
/// nothing once the cache exists.
#[test]
fn explain_and_score_read_a_delphi_results_folder() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let run_dir = dir.path().join("results/delphi");
    write_cache(&run_dir, 8, &tok);
    let mut cfg = delphi_config(&tok);
    cfg["max_latents"] = json!(2);
    cfg["scorers"] = json!(["detection"]);
    cfg["load_in_8bit"] = json!(true);
    // delphi's neighbours, found by co-occurrence in the cache.
    cfg["constructor_cfg"]["non_activating_source"] = json!("neighbours");
    write_json(&run_dir.join("run_config.json"), &cfg);
    let server = Server::start(Faults::default());
    let path = run_dir.to_str().unwrap();

    let mut args = vec!["explain", path];
    args.extend(client_flags(&server.url));
    assert_success(&autointerp(&args));
    let mut args = vec!["score", path];
    args.extend(client_flags(&server.url));
    assert_success(&autointerp(&args));
    for i in 0..8 {
        assert_eq!(complete(&run_dir, i, &["detection"]), i < 2, "latent {i}");
    }
    assert!(!run_dir.join("scores/fuzz").exists());
    let saved = RunConfig::from_json_file(&run_dir.join("run_config.json")).unwrap();
    assert_eq!(
        saved.non_activating_source,
        autointerp_run::NonActivatingSource::Neighbours
    );
    // The test cache has no firing_counts.json (as delphi's): counted from the split files.
    let pt = std::fs::read(run_dir.join("log/hookpoint_firing_counts.pt")).unwrap();
    assert!(pt.starts_with(b"PK\x03\x04"));
}

/// A delphi setting autointerp cannot honour (here a provider delphi has not either) stops
/// `run --config` and `score` on the folder with its name and value; `load_in_8bit` stops a run
/// that would build the cache.
#[test]
fn unsupported_delphi_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let run_dir = dir.path().join("results/delphi");
    write_cache(&run_dir, 4, &tok);
    let mut cfg = delphi_config(&tok);
    cfg["explainer_provider"] = json!("vllm");
    let config = dir.path().join("delphi.json");
    write_json(&config, &cfg);
    write_json(&run_dir.join("run_config.json"), &cfg);

    let run = autointerp(&["run", "--config", config.to_str().unwrap()]);
    let score = autointerp(&["score", run_dir.to_str().unwrap()]);
    for out in [run, score] {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = stderr(&out);
        assert!(err.contains("explainer_provider = \"vllm\""), "{err}");
    }
    assert!(!run_dir.join("scores").exists());

    let mut cfg = delphi_config(&tok);
    cfg["load_in_8bit"] = json!(true);
    cfg["cache_cfg"]["dataset_repo"] = json!("data.jsonl");
    write_json(&config, &cfg);
    let out = autointerp(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--results-dir",
        dir.path().join("fresh").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("load_in_8bit"), "{err}");
}
