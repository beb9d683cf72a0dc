//! `autointerp cache` killed with SIGKILL mid-run, then rerun with the same command, ends with the
//! same files, byte for byte, as a run never stopped; rerun with other weights, it starts afresh.
//! Meanwhile readers refuse the unfinished cache, and a second command on the folder is refused.

mod cache_support;
mod run_support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use autointerp_core::fs::DirLock;
use cache_support::{cache_args, cache_files, write_sae, write_sae_seeded, D_MODEL};
use run_support::{assert_success, command, text, tiny_model};

/// One row per batch and a checkpoint after each: hundreds of checkpoints, so a kill lands
/// mid-run.
const ROWS: u64 = 600;

fn flags() -> Vec<String> {
    [
        "--n-tokens",
        &(ROWS * 32).to_string(),
        "--ctx-len",
        "32",
        "--batch-size",
        "1",
        "--checkpoint-every",
        "0",
        "--n-splits",
        "3",
    ]
    .map(str::to_string)
    .to_vec()
}

/// Starts `autointerp cache` with `args` and SIGKILLs it once its checkpoint passes 20 rows;
/// returns the rows its checkpoint holds.
fn kill_midway(args: &[&str], out: &Path) -> u64 {
    let mut child = command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let at = loop {
        if let Some(rows) = rows_done(out).filter(|&r| r >= 20) {
            break rows;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed; give it more rows"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = rows_done(out).unwrap();
    assert!(
        (at..ROWS).contains(&left),
        "killed at {left} of {ROWS} rows"
    );
    assert!(!out.join("latents/layers.0/config.json").exists());
    left
}

/// Rows done according to the run's checkpoint, if one is there.
fn rows_done(out: &Path) -> Option<u64> {
    let bytes = std::fs::read(out.join("latents/.checkpoint.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["rows_done"].as_u64()
}

#[test]
fn a_killed_cache_run_resumes_to_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let sae = write_sae(&dir.path().join("sae"), "layers.0", D_MODEL, 64, 4);
    let dataset = dir.path().join("text.txt");
    std::fs::write(&dataset, text(60_000)).unwrap();
    let flags = flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let data = dataset.to_str().unwrap();

    let whole = dir.path().join("whole");
    let args = cache_args(&model, &sae, data, &whole, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_success(&command(&args).output().unwrap());
    let expected = cache_files(&whole);
    let names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "0_20.safetensors",
            "21_41.safetensors",
            "42_63.safetensors",
            "config.json",
            "firing_counts.json",
            "vocab_projection.json"
        ]
    );

    let killed = dir.path().join("killed");
    let args = cache_args(&model, &sae, data, &killed, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kill_midway(&args, &killed);
    // Readers refuse the unfinished cache rather than read what is there.
    let shown = command(&[
        "latents",
        "show",
        "--cache",
        killed.to_str().unwrap(),
        "--hookpoint",
        "layers.0",
        "--latent",
        "0",
        "--model",
        model.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&shown.stderr);
    assert!(
        !shown.status.success() && err.contains("unfinished cache") && err.contains("rerun"),
        "{err}"
    );

    let out = command(&args).env("RUST_LOG", "info").output().unwrap();
    assert_success(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("resuming from checkpoint"), "{log}");
    assert!(!killed.join("latents/.checkpoint.json").exists());
    assert!(!killed.join("latents/layers.0/.spill").exists());
    let got = cache_files(&killed);
    assert_eq!(got.len(), expected.len());
    for ((name, want), (got_name, bytes)) in expected.iter().zip(&got) {
        assert_eq!(name, got_name);
        assert!(bytes == want, "{name} differs after the resumed run");
    }
}

#[test]
fn a_rerun_with_other_weights_caches_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let dataset = dir.path().join("text.txt");
    std::fs::write(&dataset, text(60_000)).unwrap();
    let data = dataset.to_str().unwrap();
    let flags = flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // Coder B, cached whole; then coder A at the same path, killed midway; then B written over
    // A, as when a training run replaces its checkpoint, and the same command again.
    let sae = dir.path().join("sae");
    let write_b = || write_sae_seeded(&sae, "layers.0", D_MODEL, 64, 4, 8);
    write_b();
    let clean = dir.path().join("clean");
    let args = cache_args(&model, &sae, data, &clean, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_success(&command(&args).output().unwrap());
    let expected = cache_files(&clean);

    write_sae(&sae, "layers.0", D_MODEL, 64, 4);
    let out = dir.path().join("out");
    let args = cache_args(&model, &sae, data, &out, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kill_midway(&args, &out);

    write_b();
    let rerun = command(&args).env("RUST_LOG", "info").output().unwrap();
    assert_success(&rerun);
    let log = String::from_utf8_lossy(&rerun.stderr);
    assert!(!log.contains("resuming from checkpoint"), "{log}");
    let got = cache_files(&out);
    assert_eq!(got.len(), expected.len());
    for ((name, want), (got_name, bytes)) in expected.iter().zip(&got) {
        assert_eq!(name, got_name);
        assert!(
            bytes == want,
            "{name} differs from a clean run with the new coder"
        );
    }
}

#[test]
fn a_second_command_on_a_folder_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let sae = write_sae(&dir.path().join("sae"), "layers.0", D_MODEL, 64, 4);
    let dataset = dir.path().join("text.txt");
    std::fs::write(&dataset, text(2_000)).unwrap();
    let out = dir.path().join("out");
    let flags = ["--n-tokens", "256", "--ctx-len", "32", "--n-splits", "2"];
    let args = cache_args(&model, &sae, dataset.to_str().unwrap(), &out, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // This test process stands for the other command.
    let held = DirLock::acquire(&out).unwrap();
    let refused = command(&args).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains(&format!("process {}", std::process::id()))
            && err.contains(".autointerp.lock"),
        "{err}"
    );
    assert!(
        !out.join("latents").exists(),
        "the refused command wrote nothing"
    );
    drop(held);
    assert_success(&command(&args).output().unwrap());
    assert!(!out.join(".autointerp.lock").exists());
}
