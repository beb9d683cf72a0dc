//! `autointerp cache` killed with SIGKILL mid-run, then rerun with the same command, ends with the
//! same files, byte for byte, as a run never stopped.

mod cache_support;
mod run_support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cache_support::{cache_args, cache_files, write_sae, D_MODEL};
use run_support::{assert_success, command, text, tiny_model};

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
    // One row per batch: thousands of checkpoints, so the kill lands mid-run.
    const ROWS: u64 = 600;
    let flags = [
        "--n-tokens",
        &(ROWS * 32).to_string(),
        "--ctx-len",
        "32",
        "--batch-size",
        "1",
        "--n-splits",
        "3",
    ]
    .map(str::to_string);
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
            "firing_counts.json"
        ]
    );

    let killed = dir.path().join("killed");
    let args = cache_args(&model, &sae, data, &killed, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let at = loop {
        if let Some(rows) = rows_done(&killed).filter(|&r| r >= 20) {
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
    let left = rows_done(&killed).unwrap();
    assert!(
        (at..ROWS).contains(&left),
        "killed at {left} of {ROWS} rows"
    );
    assert!(!killed.join("latents/layers.0/config.json").exists());

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
