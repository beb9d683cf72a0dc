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

/// Transport and answer-limit settings reach every request the run sends.
#[test]
fn request_settings_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    write_cache(&results.join("limits"), 4, &tok);
    let server = Server::start(Faults::default());
    let (tok_s, results_s) = (tok.to_str().unwrap(), results.to_str().unwrap());
    let mut args = run_args(tok_s, results_s, "limits", &server.url);
    args.extend([
        "--scorers",
        "detection,intruder,simulation",
        "--simulation-mode",
        "json",
        "--max-requests",
        "2",
        "--request-timeout",
        "30",
        "--queue-timeout",
        "600",
        "--extra-body",
        r#"{"repeat_penalty": 1.0, "top_k": 20}"#,
        "--classifier-max-tokens",
        "33",
        "--intruder-max-tokens",
        "44",
        "--simulation-max-tokens",
        "77",
    ]);
    args.extend(RECORD_FLAGS);
    assert_success(&autointerp(&args));
    let bodies = server.bodies();
    for kind in ["explain", "detection", "intruder", "simulation"] {
        assert!(bodies.iter().any(|(k, _)| k == kind), "no {kind} request");
    }
    for (kind, body) in &bodies {
        assert_eq!(body["repeat_penalty"], 1.0, "{kind}: {body}");
        assert_eq!(body["top_k"], 20, "{kind}: {body}");
        let want = match kind.as_str() {
            "detection" => Some(33),
            "intruder" => Some(44),
            "simulation" => Some(77),
            _ => None,
        };
        if let Some(n) = want {
            assert_eq!(body["max_tokens"], n, "{kind}: {body}");
        }
    }
    let saved: Value =
        serde_json::from_slice(&std::fs::read(results.join("limits/run_config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["max_requests"], 2);
    assert_eq!(saved["request_timeout_secs"], 30.0);
    assert_eq!(saved["extra_body"]["top_k"], 20);

    let mut bad = run_args(tok_s, results_s, "limits", &server.url);
    bad.extend(["--extra-body", r#"{"model": "other"}"#]);
    let bad = autointerp(&bad);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("extra_body may not set `model`"), "{err}");
}

/// `--prompt-dir`: a folder's templates replace the built-in ones in the requests sent, and a
/// broken one stops the run before anything is written, naming its file and line.
#[test]
fn a_prompt_folder_replaces_the_built_in_prompts_and_a_bad_one_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    write_cache(&results.join("prompts"), 4, &tok);
    let server = Server::start(Faults::default());
    let built_in = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autointerp-explain/prompts/detection.jinja");
    let detection = std::fs::read_to_string(built_in).unwrap();
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    let marked = detection.replacen(
        "{% filter system %}",
        "{% filter system %}HOUSE RULES.\n",
        1,
    );
    assert_ne!(marked, detection);
    std::fs::write(mine.join("detection.jinja"), marked).unwrap();
    let (tok_s, results_s) = (tok.to_str().unwrap(), results.to_str().unwrap());
    let run = |name: &str, prompts: &std::path::Path| {
        let mut args = run_args(tok_s, results_s, name, &server.url);
        args.extend([
            "--scorers",
            "detection",
            "--prompt-dir",
            prompts.to_str().unwrap(),
        ]);
        args.extend(RECORD_FLAGS);
        autointerp(&args)
    };
    assert_success(&run("prompts", &mine));
    let bodies = server.bodies();
    let system = |kind: &str| -> Vec<String> {
        bodies
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, b)| b["messages"][0]["content"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!system("detection").is_empty());
    assert!(system("detection")
        .iter()
        .all(|s| s.starts_with("HOUSE RULES.")));
    assert!(system("explain").iter().all(|s| !s.contains("HOUSE RULES")));

    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let broken = detection.replacen("{{ explanation }}", "{{ explanaton }}", 1);
    std::fs::write(bad.join("detection.jinja"), broken).unwrap();
    let out = run("never", &bad);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // The line of `{{ explanaton }}`.
    assert!(err.contains("detection.jinja:5: undefined value"), "{err}");
    assert!(!results.join("never").exists());
}

/// Secrets: credentials in a base URL are not saved in run_config.json, and `score` on a results
/// folder whose run_config.json names a key variable does not send that key.
#[test]
fn saved_configs_hold_no_credentials_and_send_no_keys() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    let run_dir = results.join("secrets");
    write_cache(&run_dir, 4, &tok);
    let server = Server::start(Faults::default());
    let with_credentials = server
        .url
        .replace("http://", "http://user:hunter2@")
        .replace("/v1", "/v1?key=abc123");
    let (tok_s, results_s) = (tok.to_str().unwrap(), results.to_str().unwrap());
    let mut args = run_args(tok_s, results_s, "secrets", &with_credentials);
    args.extend(["--scorers", "detection"]);
    args.extend(RECORD_FLAGS);
    let out = autointerp(&args);
    assert_success(&out);
    let saved = std::fs::read_to_string(run_dir.join("run_config.json")).unwrap();
    assert!(
        !saved.contains("hunter2") && !saved.contains("abc123"),
        "{saved}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("hunter2") && !stderr.contains("abc123"),
        "{stderr}"
    );

    // Someone edits the folder's config to send this machine's key to their server.
    let mut cfg: Value = serde_json::from_str(&saved).unwrap();
    cfg["explainer_base_url"] = Value::String(server.url.clone());
    cfg["api_key_env"] = Value::String("AUTOINTERP_LEAK_TEST".into());
    std::fs::write(run_dir.join("run_config.json"), cfg.to_string()).unwrap();
    server.clear();
    let before = server.auth_headers().len();
    let out = command(&["score", run_dir.to_str().unwrap(), "--overwrite", "scores"])
        .env("AUTOINTERP_LEAK_TEST", "sk-do-not-send")
        .output()
        .unwrap();
    assert_success(&out);
    let sent = &server.auth_headers()[before..];
    assert!(!sent.is_empty());
    assert!(
        sent.iter().flatten().all(|h| !h.contains("sk-do-not-send")),
        "{sent:?}"
    );
}
