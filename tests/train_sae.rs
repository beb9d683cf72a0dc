//! `autointerp train-sae` as a user runs it: on the tiny llama fixture, it writes a sparsify
//! folder that loads back, with its statistics; bad input is a clear error.

mod run_support;

use run_support::{assert_success, autointerp, text, tiny_model};
use serde_json::Value;

#[test]
fn trains_writes_sparsify_and_reports_held_out_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = dir.path().join("data.txt");
    std::fs::write(&data, text(3000)).unwrap();
    let out = dir.path().join("sae");
    let args = [
        "train-sae",
        "--model",
        model.to_str().unwrap(),
        "--hookpoint",
        "layers.1",
        "--dataset",
        data.to_str().unwrap(),
        "--n-tokens",
        "1024",
        "--eval-tokens",
        "128",
        "--ctx-len",
        "16",
        "--batch-size",
        "4",
        "--expansion-factor",
        "2",
        "--k",
        "4",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = autointerp(&args);
    assert_success(&run);
    // Without a terminal the bar is hidden; progress comes as log lines instead.
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("train-sae: 100%"), "{err}");
    assert!(err.contains("held-out (120 tokens) FVU"), "{err}");

    let sae = out.join("layers.1");
    let stats: Value =
        serde_json::from_slice(&std::fs::read(sae.join("train_stats.json")).unwrap()).unwrap();
    // 1024 tokens in rows of 16 = 64 rows, each without its first position.
    assert_eq!(stats["tokens"], 64 * 15);
    assert_eq!(stats["eval_tokens"], 8 * 15);
    let eval = &stats["eval"];
    let fvu = eval["fvu"].as_f64().unwrap();
    assert!(fvu.is_finite() && fvu > 0.0, "{stats}");
    // TopK: every token keeps exactly k latents (ties at zero aside).
    assert!(eval["mean_l0"].as_f64().unwrap() <= 4.0, "{stats}");

    let loaded = autointerp_sae::SparseCoder::load_dir(&sae, &[], tch::Device::Cpu).unwrap();
    assert_eq!(loaded.len(), 1);
    let coder = &loaded[0].1;
    assert_eq!(coder.d_in(), 32);
    assert_eq!(coder.width(), 64);

    // The same command again writes the same SAE: seeded data order and initialisation.
    let first = std::fs::read(sae.join("sae.safetensors")).unwrap();
    assert_success(&autointerp(&args));
    assert_eq!(std::fs::read(sae.join("sae.safetensors")).unwrap(), first);
}

#[test]
fn bad_input_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = dir.path().join("data.txt");
    std::fs::write(&data, text(200)).unwrap();
    let run = |dataset: &str, hook: &str| {
        let out = autointerp(&[
            "train-sae",
            "--model",
            model.to_str().unwrap(),
            "--hookpoint",
            hook,
            "--dataset",
            dataset,
            "--n-tokens",
            "256",
            "--ctx-len",
            "16",
            "--out",
            dir.path().join("sae").to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("nope.txt");
    let err = run(missing.to_str().unwrap(), "layers.1");
    assert!(err.contains("nope.txt"), "{err}");
    let err = run(data.to_str().unwrap(), "layers.7");
    assert!(err.contains("layers.7"), "{err}");
}
