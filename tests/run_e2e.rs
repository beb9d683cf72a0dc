//! `autointerp run`, `explain` and `score` end to end on a tiny cache, against a scripted
//! OpenAI-compatible server.

mod run_support;

use std::path::Path;

use autointerp_core::LatentRecord;
use run_support::*;
use serde_json::Value;

const N: usize = 8;

fn run_args<'a>(tok: &'a str, results: &'a str, url: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        tok,
        "unused-sparse-model",
        "--results-dir",
        results,
        "--name",
        "e2e",
        "--hookpoints",
        HOOK,
        "--explainer-model",
        "test-model",
        "--explainer-base-url",
        url,
        "--api-key-env",
        "AUTOINTERP_RUN_TEST_KEY",
        "--scorers",
        "detection,fuzz,intruder,simulation,embedding",
        "--simulation-mode",
        "json",
        "--embedding-base-url",
        url,
        "--embedding-model",
        "bag-of-words",
        "--random-control",
        "--max-concurrency",
        "3",
    ];
    args.extend(RECORD_FLAGS);
    args
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn a_run_explains_scores_and_controls_every_latent_then_resumes_without_asking_again() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    let run_dir = results.join("e2e");
    write_cache(&run_dir, N, &tok);
    let server = Server::start(Faults::default());
    let (tok_s, results_s) = (tok.to_str().unwrap(), results.to_str().unwrap());
    let args = run_args(tok_s, results_s, &server.url);

    let out = command(&args)
        .env("AUTOINTERP_RUN_TEST_KEY", "sk-very-secret")
        .output()
        .unwrap();
    assert_success(&out);

    // The effective config, without the key.
    let config = std::fs::read_to_string(run_dir.join("run_config.json")).unwrap();
    assert!(!config.contains("sk-very-secret"));
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["api_key_env"], "AUTOINTERP_RUN_TEST_KEY");
    assert_eq!(config["example_ctx_len"], 8);
    assert_eq!(config["random_control"], true);

    let scorers = ["detection", "fuzz", "intruder", "simulation", "embedding"];
    for (i, word) in WORDS.iter().enumerate().take(N) {
        let id = latent(i);
        let record: LatentRecord = serde_json::from_slice(
            &std::fs::read(run_dir.join("latents").join(format!("{id}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(record.id.to_string(), id);
        assert_eq!(
            (
                record.train.len(),
                record.test.len(),
                record.non_activating.len()
            ),
            (4, 4, 4)
        );
        let explanation =
            std::fs::read_to_string(run_dir.join("explanations").join(format!("{id}.txt")))
                .unwrap();
        assert_eq!(explanation, format!("\"the word {word}\""));
        assert!(complete(&run_dir, i, &scorers), "{id}");
        // The server is right about everything, so detection and fuzzing are right everywhere.
        for s in ["detection", "fuzz"] {
            let outcomes = read_json(&run_dir.join("scores").join(s).join(format!("{id}.txt")));
            let outcomes = outcomes.as_array().unwrap();
            assert!(!outcomes.is_empty());
            assert!(
                outcomes.iter().all(|o| o["correct"] == true),
                "{s} {id}: {outcomes:?}"
            );
        }
        // The random control: another latent's explanation, scored by the scorers that read one.
        let control = std::fs::read_to_string(
            run_dir
                .join("random_explanations")
                .join(format!("{id}.txt")),
        )
        .unwrap();
        assert_ne!(control, explanation);
        for s in ["detection", "fuzz", "simulation", "embedding"] {
            assert!(
                run_dir
                    .join("scores/random")
                    .join(s)
                    .join(format!("{id}.txt"))
                    .is_file(),
                "random {s} {id}"
            );
        }
        assert!(!run_dir.join("scores/random/intruder").exists());
    }
    assert!(failures(&run_dir).is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{N} latents done ({N} explained), 0 failed")),
        "{stderr}"
    );
    assert!(stderr.contains("cost $"), "{stderr}");
    // The per-scorer table ends the run, and the results folder keeps it in run.log with the
    // command line and what was done.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mean, failures excluded"), "{stdout}");
    for s in scorers {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(s)),
            "{s}: {stdout}"
        );
    }
    let log = std::fs::read_to_string(run_dir.join("run.log")).unwrap();
    assert!(
        log.contains("autointerp") && log.contains("--explainer-base-url"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{N} latents done")) && log.contains("mean, failures excluded"),
        "{log}"
    );
    assert!(!log.contains("sk-very-secret"));
    let first = files(&run_dir);

    // A rerun finds everything done and asks nothing.
    server.clear();
    let out = command(&args)
        .env("AUTOINTERP_RUN_TEST_KEY", "sk-very-secret")
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(server.seen(), vec![]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{N} already done")), "{stderr}");
    assert_eq!(files(&run_dir), first);
    let log = std::fs::read_to_string(run_dir.join("run.log")).unwrap();
    assert_eq!(
        log.matches("=== autointerp").count(),
        2,
        "each command appends: {log}"
    );

    // `--overwrite scores` scores again with the same explanations: same files.
    let mut again = args.clone();
    let at = again.iter().position(|a| *a == "--scorers").unwrap();
    again[at + 1] = "detection";
    again.extend(["--overwrite", "scores"]);
    let out = command(&again)
        .env("AUTOINTERP_RUN_TEST_KEY", "sk-very-secret")
        .output()
        .unwrap();
    assert_success(&out);
    let seen = server.seen();
    assert!(seen.iter().all(|s| s.kind == "detection"), "{seen:?}");
    assert!(!seen.is_empty());
    let now = files(&run_dir);
    for (path, bytes) in &first {
        if path.starts_with("scores")
            || path.starts_with("explanations")
            || path.starts_with("latents")
        {
            assert_eq!(now.get(path), Some(bytes), "{}", path.display());
        }
    }
}

#[test]
fn explain_then_score_an_existing_cache() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let cache = dir.path().join("cache");
    write_cache(&cache, N, &tok);
    let server = Server::start(Faults::default());
    let cache_s = cache.to_str().unwrap();

    let mut args = vec![
        "explain",
        cache_s,
        "--explainer-model",
        "m",
        "--explainer-base-url",
        &server.url,
        "--latents",
        "1,3,5",
    ];
    args.extend(RECORD_FLAGS);
    let out = autointerp(&args);
    assert_success(&out);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.kind == "explain"));
    let explained: Vec<String> = files(&cache.join("explanations"))
        .into_keys()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        explained,
        vec![
            "layers.0_latent1.txt",
            "layers.0_latent3.txt",
            "layers.0_latent5.txt"
        ]
    );
    assert!(!cache.join("scores").exists());

    // `score` reads the settings `explain` saved (latents, example sizes, model) and its
    // explanations; latents without one are reported, not scored.
    server.clear();
    let out = autointerp(&[
        "score",
        cache_s,
        "--scorers",
        "detection",
        "--latents",
        "1,2,3,5",
    ]);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 latents have no explanation"), "{stderr}");
    let seen = server.seen();
    assert!(
        !seen.is_empty() && seen.iter().all(|s| s.kind == "detection"),
        "{seen:?}"
    );
    for i in [1, 3, 5] {
        assert!(complete(&cache, i, &["detection"]), "{i}");
    }
    assert!(!cache.join("scores/detection/layers.0_latent2.txt").exists());
}

#[test]
fn missing_scorer_backends_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    write_cache(&results.join("x"), 4, &tok);
    let (tok_s, results_s) = (tok.to_str().unwrap(), results.to_str().unwrap());
    let base = [
        "run",
        tok_s,
        "--results-dir",
        results_s,
        "--name",
        "x",
        "--explainer-model",
        "m",
    ];
    let base = base
        .iter()
        .chain(&["--explainer-base-url", "http://127.0.0.1:9/v1"]);

    let args: Vec<&str> = base
        .clone()
        .chain(&["--scorers", "surprisal"])
        .copied()
        .collect();
    let out = autointerp(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Surprisal needs a base model run in this process.
    assert!(err.contains("--surprisal-model"), "{err}");

    let args: Vec<&str> = base
        .clone()
        .chain(&["--scorers", "embedding"])
        .copied()
        .collect();
    let err = String::from_utf8_lossy(&autointerp(&args).stderr).to_string();
    assert!(err.contains("--embedding-model"), "{err}");

    let args: Vec<&str> = base
        .chain(&["--explainer-provider", "local"])
        .copied()
        .collect();
    let out = autointerp(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in-process engine"), "{err}");

    // Without a cache and without what building one takes.
    let out = autointerp(&[
        "run",
        tok_s,
        "--results-dir",
        results_s,
        "--name",
        "new",
        "--hookpoints",
        HOOK,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("SPARSE_MODEL"),
        "{err}"
    );
    let out = autointerp(&[
        "run",
        tok_s,
        "sae",
        "--results-dir",
        results_s,
        "--name",
        "new",
        "--hookpoints",
        HOOK,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--dataset"), "{err}");
}

#[test]
fn a_run_builds_its_cache_first_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let dataset = dir.path().join("text.txt");
    std::fs::write(&dataset, text(3000)).unwrap();
    let results = dir.path().join("results");
    let server = Server::start(Faults::default());
    let args = [
        "run",
        model.to_str().unwrap(),
        "neurons:4",
        "--hookpoints",
        "layers.0.mlp.hidden",
        "--dataset",
        dataset.to_str().unwrap(),
        "--n-tokens",
        "1024",
        "--ctx-len",
        "32",
        "--n-splits",
        "2",
        "--results-dir",
        results.to_str().unwrap(),
        "--name",
        "cached",
        "--example-ctx-len",
        "8",
        "--min-examples",
        "6",
        "--n-examples-train",
        "3",
        "--n-examples-test",
        "3",
        "--n-non-activating",
        "3",
        "--n-quantiles",
        "1",
        "--explainer-model",
        "m",
        "--explainer-base-url",
        &server.url,
        "--scorers",
        "detection",
    ];
    let out = autointerp(&args);
    assert_success(&out);
    let run_dir = results.join("cached");
    assert!(run_dir
        .join("latents/layers.0.mlp.hidden/config.json")
        .is_file());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("caching layers.0.mlp.hidden"), "{stderr}");
    let done = (0..64)
        .filter(|&i| {
            run_dir
                .join(format!(
                    "scores/detection/layers.0.mlp.hidden_latent{i}.txt"
                ))
                .is_file()
        })
        .count();
    assert!(done > 0, "{stderr}");
    assert!(
        stderr.contains(&format!("{done} latents done ({done} explained), 0 failed")),
        "{stderr}"
    );

    // The cache is complete: a rerun neither caches nor asks anything.
    server.clear();
    let out = autointerp(&args);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("caching"), "{stderr}");
    assert_eq!(server.seen(), vec![]);
}

/// With `--explainer-logits`, the explainer's prompt ends with the tokens each latent promotes
/// (from the cache's vocabulary projection); without it, the prompt has no such line.
#[test]
fn explainer_logits_show_the_promoted_tokens_only_when_asked() {
    use autointerp_core::{LatentTokens, VocabProjection};
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let cache = dir.path().join("cache");
    write_cache(&cache, N, &tok);
    // Latent i promotes its own word (id i + 1) and " in" (30), and suppresses " a" (26).
    VocabProjection {
        method: "test".into(),
        vocab_size: 40,
        k: 2,
        latents: (0..N as u32)
            .map(|i| LatentTokens {
                promoted: vec![(i + 1, 1.5), (30, 0.5)],
                suppressed: vec![(26, -1.0)],
            })
            .collect(),
    }
    .write_to_dir(&cache.join("latents").join(HOOK))
    .unwrap();
    let server = Server::start(Faults::default());
    let cache_s = cache.to_str().unwrap();
    let explain = |latents: &str, extra: &[&str]| {
        let mut args = vec![
            "explain",
            cache_s,
            "--explainer-model",
            "m",
            "--explainer-base-url",
            &server.url,
            "--latents",
            latents,
        ];
        args.extend(RECORD_FLAGS);
        args.extend(extra);
        assert_success(&autointerp(&args));
    };
    let last_user = |body: &Value| -> String {
        let messages = body["messages"].as_array().unwrap();
        messages.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string()
    };

    explain("1,3", &["--explainer-logits"]);
    let with = server.bodies();
    assert_eq!(with.len(), 2);
    for (_, body) in &with {
        let prompt = last_user(body);
        let line = prompt
            .lines()
            .find(|l| l.starts_with("Tokens the feature promotes: "))
            .unwrap_or_else(|| panic!("{prompt}"));
        let word = [" apple", " copper"]
            .into_iter()
            .find(|w| prompt.contains(&format!("<<{w}>>")))
            .expect("latent 1 or 3");
        assert_eq!(
            line,
            format!("Tokens the feature promotes: \"{word}\", \" in\""),
            "{prompt}"
        );
    }
    assert_eq!(
        read_json(&cache.join("run_config.json"))["explainer_logits"],
        true
    );

    explain("2,4", &["--explainer-logits=false"]);
    let without = &server.bodies()[with.len()..];
    assert_eq!(without.len(), 2);
    for (_, body) in without {
        let prompt = last_user(body);
        assert!(!prompt.contains("promotes"), "{prompt}");
    }
}

#[test]
fn best_of_k_keeps_the_sample_that_scores_best_on_validation() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    let run_dir = results.join("k");
    write_cache(&run_dir, 4, &tok);
    let server = Server::start(Faults::default());
    let (t, r) = (tok.to_str().unwrap(), results.to_str().unwrap());
    let mut args = run_support::run_args(t, r, "k", &server.url);
    // Seeds 22, 23, 24: the server misses the word on even seeds, so the second sample is the
    // only right one, and the first (kept by a plain run) is wrong.
    args.extend([
        "--scorers",
        "detection",
        "--explainer-samples",
        "3",
        "--random-control",
    ]);
    args.extend(RECORD_FLAGS);
    let out = autointerp(&args);
    assert_success(&out);
    for (i, word) in WORDS.iter().enumerate().take(4) {
        let explanation = std::fs::read_to_string(
            run_dir
                .join("explanations")
                .join(format!("{}.txt", latent(i))),
        )
        .unwrap();
        assert_eq!(explanation, format!("\"the word {word}\""));
        let samples = read_json(&run_dir.join("samples").join(format!("{}.json", latent(i))));
        assert_eq!(samples["chosen"], 1, "{samples}");
        assert_eq!(samples["select"], "detection");
        let s = samples["samples"].as_array().unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0]["explanation"], "the word nothing");
        assert_eq!(s[1]["validation_score"], 1.0);
        assert_eq!(s[0]["validation_score"], 0.5);
        // The first sample was scored on the same test examples as the kept one.
        let first = read_json(
            &run_dir
                .join("samples/first/detection")
                .join(format!("{}.txt", latent(i))),
        );
        let kept = read_json(
            &run_dir
                .join("scores/detection")
                .join(format!("{}.txt", latent(i))),
        );
        let texts = |v: &Value| -> Vec<String> {
            let mut t: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["str_tokens"].to_string())
                .collect();
            t.sort();
            t
        };
        assert_eq!(texts(&first), texts(&kept));
        // The record keeps every held-out example; each half has half of them.
        let record = read_json(&run_dir.join("latents").join(format!("{}.json", latent(i))));
        assert_eq!(record["test"].as_array().unwrap().len(), 4);
        assert_eq!(
            kept.as_array().unwrap().len(),
            4,
            "2 test + 2 non-activating"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("detection, best of the sampled explanations: the kept explanations beat the first samples"),
        "{stdout}"
    );

    // Scoring again (the run's saved settings say best-of-K) keeps to the test half.
    let mut again = vec![
        "score",
        run_dir.to_str().unwrap(),
        "--explainer-base-url",
        &server.url,
        "--overwrite",
        "scores",
    ];
    again.extend(RECORD_FLAGS);
    assert_success(&autointerp(&again));
    let kept = read_json(
        &run_dir
            .join("scores/detection")
            .join(format!("{}.txt", latent(0))),
    );
    assert_eq!(
        kept.as_array().unwrap().len(),
        4,
        "2 test + 2 non-activating"
    );

    // A causal scorer cannot choose: it would be tested on what it chose on.
    let mut args = run_support::run_args(t, r, "k2", &server.url);
    args.extend([
        "--scorers",
        "detection",
        "--explainer-samples",
        "2",
        "--explainer-select",
        "intervention",
    ]);
    args.extend(RECORD_FLAGS);
    write_cache(&results.join("k2"), 4, &tok);
    let out = autointerp(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a causal scorer"), "{err}");
}
