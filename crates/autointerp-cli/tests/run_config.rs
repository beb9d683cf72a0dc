//! `autointerp run --config run.toml`: settings from a file, flags over them, unknown keys
//! rejected by name.

mod run_support;

use run_support::*;
use serde_json::Value;

#[test]
fn settings_come_from_the_file_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    write_cache(&results.join("from-flag"), 8, &tok);
    let server = Server::start(Faults::default());
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            # A delphi-style run, written as a file.
            model = {tok:?}
            sparse_model = "unused"
            hookpoints = ["{HOOK}"]
            name = "from-file"
            results_dir = {results:?}
            explainer_model = "m"
            explainer_base_url = "{url}"
            scorers = ["detection", "fuzz"]
            max_latents = 6
            example_ctx_len = 8
            min_examples = 8
            n_examples_train = 4
            n_examples_test = 4
            n_non_activating = 4
            n_quantiles = 2
            train_type = "top"
            "#,
            url = server.url
        ),
    )
    .unwrap();
    let out = autointerp(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--name",
        "from-flag",
        "--max-latents",
        "3",
        "--scorers",
        "detection",
    ]);
    assert_success(&out);
    let run_dir = results.join("from-flag");
    assert!(!results.join("from-file").exists());
    let saved: Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run_config.json")).unwrap()).unwrap();
    assert_eq!(saved["name"], "from-flag");
    assert_eq!(saved["max_latents"], 3);
    assert_eq!(saved["train_type"], "top");
    assert_eq!(saved["scorers"], serde_json::json!(["detection"]));
    assert_eq!(saved["n_examples_train"], 4);
    for i in 0..8 {
        assert_eq!(complete(&run_dir, i, &["detection"]), i < 3, "latent {i}");
    }
    assert!(!run_dir.join("scores/fuzz").exists());
}

#[test]
fn a_bad_config_is_an_error_that_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");

    std::fs::write(&config, "model = \"m\"\nn_tokenz = 1000\n").unwrap();
    let out = autointerp(&["run", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("n_tokenz") && err.contains("run.toml"),
        "{err}"
    );

    std::fs::write(&config, "scorers = [\"detektion\"]\n").unwrap();
    let err =
        String::from_utf8_lossy(&autointerp(&["run", "--config", config.to_str().unwrap()]).stderr)
            .to_string();
    assert!(err.contains("detektion"), "{err}");

    std::fs::write(&config, "max_concurrency = 0\n").unwrap();
    let err = String::from_utf8_lossy(
        &autointerp(&["run", "m", "--config", config.to_str().unwrap()]).stderr,
    )
    .to_string();
    assert!(err.contains("max_concurrency"), "{err}");

    let err =
        String::from_utf8_lossy(&autointerp(&["run", "--config", "/no/such/run.toml"]).stderr)
            .to_string();
    assert!(err.contains("/no/such/run.toml"), "{err}");
}
