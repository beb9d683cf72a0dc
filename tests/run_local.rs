//! The in-process engine behind `--explainer-provider local` and `--surprisal-model`, on a tiny
//! random llama (autointerp-model's fixture) with the fixture's word-level tokenizer: it answers
//! nonsense, so explanations fail (and are recorded), but the surprisal scorer scores, and the
//! intervention scorers steer it along a sparse coder's decoder rows.

mod cache_support;
mod run_support;

use run_support::*;
use serde_json::Value;

#[test]
fn a_local_explainer_answers_and_its_failures_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let results = dir.path().join("results");
    let run_dir = results.join("local");
    write_cache(&run_dir, 4, &model);
    let mut args = vec![
        "run",
        model.to_str().unwrap(),
        "--results-dir",
        results.to_str().unwrap(),
        "--name",
        "local",
        "--explainer-provider",
        "local",
        "--explainer-model",
        model.to_str().unwrap(),
        "--scorers",
        "detection",
        "--latents",
        "0,1",
    ];
    args.extend(RECORD_FLAGS);
    let out = autointerp(&args);
    assert_success(&out);
    let failures = failures(&run_dir);
    assert_eq!(failures.len(), 2, "{failures:?}");
    for f in &failures {
        assert_eq!(f["stage"], "explain", "{f}");
        // The engine answered; its answer held no explanation.
        assert!(f.get("answer").is_some(), "{f}");
    }
}

/// The tiny model and, in `dir/cache`, a 4-latent cache whose first two latents have their
/// right explanations (`the word <w>`).
fn cache_with_two_explanations(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let model = tiny_model(dir);
    let cache = dir.join("cache");
    write_cache(&cache, 4, &model);
    std::fs::create_dir_all(cache.join("explanations")).unwrap();
    for (i, word) in WORDS.iter().enumerate().take(2) {
        std::fs::write(
            cache
                .join("explanations")
                .join(format!("{}.txt", latent(i))),
            format!("\"the word {word}\""),
        )
        .unwrap();
    }
    (model, cache)
}

#[test]
fn the_surprisal_scorer_runs_on_a_local_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let (model, cache) = cache_with_two_explanations(dir.path());
    let mut args = vec![
        "score",
        cache.to_str().unwrap(),
        "--scorers",
        "surprisal",
        "--surprisal-model",
        model.to_str().unwrap(),
    ];
    args.extend(RECORD_FLAGS);
    assert_success(&autointerp(&args));
    for i in 0..2 {
        let path = cache
            .join("scores/surprisal")
            .join(format!("{}.txt", latent(i)));
        let outcomes: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let outcomes = outcomes.as_array().unwrap();
        assert_eq!(outcomes.len(), 8, "test and non-activating examples");
        assert!(
            outcomes.iter().all(|o| o["loss_reduction"].is_number()),
            "{outcomes:?}"
        );
    }
    assert!(!cache
        .join("scores/surprisal")
        .join(format!("{}.txt", latent(2)))
        .exists());
}

#[test]
fn the_embedding_scorer_runs_a_local_sentence_model() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cache) = cache_with_two_explanations(dir.path());
    // The tiny random BERT of autointerp-model's fixtures, in sentence-transformers' layout.
    let bert = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autointerp-model/tests/fixtures/bert");
    let embedding_model = format!("local:{}", bert.display());
    let mut args = vec![
        "score",
        cache.to_str().unwrap(),
        "--scorers",
        "embedding",
        "--embedding-model",
        &embedding_model,
    ];
    args.extend(RECORD_FLAGS);
    assert_success(&autointerp(&args));
    for i in 0..2 {
        let path = cache
            .join("scores/embedding")
            .join(format!("{}.txt", latent(i)));
        let outcomes: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let outcomes = outcomes.as_array().unwrap();
        assert_eq!(outcomes.len(), 8, "test and non-activating examples");
        assert!(
            outcomes.iter().all(|o| o["similarity"].is_number()),
            "{outcomes:?}"
        );
    }

    // A folder that is not a sentence model: the error names it.
    let bad = dir.path().join("not-a-model");
    std::fs::create_dir_all(&bad).unwrap();
    let bad_model = format!("local:{}", bad.display());
    let mut args = vec![
        "score",
        cache.to_str().unwrap(),
        "--scorers",
        "embedding",
        "--embedding-model",
        &bad_model,
        "--overwrite",
        "scores",
    ];
    args.extend(RECORD_FLAGS);
    let out = autointerp(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-a-model"), "{err}");
}

#[test]
fn the_intervention_scorers_steer_the_local_model_and_score_with_the_control() {
    let dir = tempfile::tempdir().unwrap();
    let (model, cache) = cache_with_two_explanations(dir.path());
    let sae = cache_support::write_sae(&dir.path().join("sae"), HOOK, 32, 8, 2);
    let m = model.to_str().unwrap();
    let mut args = vec![
        "score",
        cache.to_str().unwrap(),
        "--scorers",
        "intervention,surprisal-intervention",
        "--model",
        m,
        "--sparse-model",
        sae.to_str().unwrap(),
        "--surprisal-model",
        m,
        "--explainer-provider",
        "local",
        "--explainer-model",
        m,
        "--classifier-answer",
        "logprob",
        "--intervention-max-tokens",
        "4",
        "--random-control",
    ];
    args.extend(RECORD_FLAGS);
    assert_success(&autointerp(&args));
    for scorer in ["intervention", "surprisal-intervention"] {
        for folder in [
            format!("scores/{scorer}"),
            format!("scores/random/{scorer}"),
        ] {
            for i in 0..2 {
                let path = cache.join(&folder).join(format!("{}.txt", latent(i)));
                let records: Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                let records = records.as_array().unwrap();
                assert_eq!(records.len(), 8, "one per neutral prompt: {path:?}");
                for r in records {
                    assert!(r["strength"].as_f64().unwrap() > 0.0, "{r}");
                    assert_eq!(r["target_kl"], 1.0, "{r}");
                    assert!(r["kl"].as_f64().unwrap() > 0.0, "{r}");
                    assert_ne!(r["clean"], r["steered"], "{r}");
                }
                if scorer == "intervention" {
                    // The judge was asked each time; the tiny vocabulary has no digits, so its
                    // answers are failed trials, recorded with what it wrote.
                    assert!(records.iter().all(|r| r["raw"].is_string()), "{records:?}");
                    assert!(
                        records.iter().all(|r| r["correct"].is_null()),
                        "{records:?}"
                    );
                } else {
                    assert!(
                        records.iter().all(|r| r["steered_logprob"].is_number()),
                        "{records:?}"
                    );
                }
            }
        }
        // The same steering for the real and the control explanation.
        let read = |f: &str| -> Value {
            serde_json::from_slice(
                &std::fs::read(cache.join(f).join(format!("{}.txt", latent(0)))).unwrap(),
            )
            .unwrap()
        };
        let (real, control) = (
            read(&format!("scores/{scorer}")),
            read(&format!("scores/random/{scorer}")),
        );
        assert_eq!(real[0]["strength"], control[0]["strength"]);
        assert_eq!(real[0]["steered"], control[0]["steered"]);
    }
    // The report reads both.
    assert_success(&autointerp(&[
        "report",
        cache.to_str().unwrap(),
        "--no-plots",
    ]));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(cache.join("report/summary.json")).unwrap()).unwrap();
    let text = summary.to_string();
    assert!(text.contains("surprisal-intervention"), "{text}");
}

#[test]
fn the_output_explainer_steers_the_local_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let cache = dir.path().join("cache");
    write_cache(&cache, 4, &model);
    let sae = cache_support::write_sae(&dir.path().join("sae"), HOOK, 32, 8, 2);
    let m = model.to_str().unwrap();
    let mut args = vec![
        "explain",
        cache.to_str().unwrap(),
        "--explainer",
        "ensemble",
        "--model",
        m,
        "--sparse-model",
        sae.to_str().unwrap(),
        "--explainer-provider",
        "local",
        "--explainer-model",
        m,
        "--explainer-max-tokens",
        "8",
        "--latents",
        "0,1",
    ];
    args.extend(RECORD_FLAGS);
    let out = autointerp(&args);
    assert_success(&out);
    // The tiny model's answers (it knows no explanation marker, so its whole one-line answer
    // is taken) are explanations of both latents.
    for i in 0..2 {
        let path = cache
            .join("explanations")
            .join(format!("{}.txt", latent(i)));
        assert!(path.exists(), "{path:?}");
    }
    let log = std::fs::read_to_string(cache.join("run.log")).unwrap();
    assert!(!log.contains("shows no token changes"), "{log}");
}
