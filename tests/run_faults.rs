//! Against a server that fails some requests (500, 429, garbage bodies, dropped connections), a
//! run finishes with every latent either scored or recorded as failed, none lost or duplicated,
//! and a rerun against a healthy server completes the failed ones.

mod run_support;

use std::collections::BTreeSet;

use run_support::*;

const N: usize = 24;
const SCORERS: [&str; 3] = ["detection", "fuzz", "simulation"];

#[test]
fn every_latent_is_scored_or_recorded_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    let run_dir = results.join("faulty");
    write_cache(&run_dir, N, &tok);
    let faulty = Server::start(Faults {
        inject: true,
        ..Faults::default()
    });
    let args = |url: &str| -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            tok.to_str().unwrap(),
            "--results-dir",
            results.to_str().unwrap(),
            "--name",
            "faulty",
            "--explainer-model",
            "m",
            "--explainer-base-url",
            url,
            "--scorers",
            "detection,fuzz,simulation",
            "--simulation-mode",
            "json",
            "--max-concurrency",
            "6",
            "--max-attempts",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(RECORD_FLAGS.iter().map(|s| s.to_string()));
        a
    };
    let a = args(&faulty.url);
    let out = autointerp(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_success(&out);
    assert!(faulty.injected() > 0);

    let failures = failures(&run_dir);
    let mut failed = BTreeSet::new();
    let mut stages = BTreeSet::new();
    for f in &failures {
        let id = f["latent"]
            .as_str()
            .unwrap_or_else(|| panic!("failure without a latent: {f}"));
        let i: usize = id
            .strip_prefix(&format!("{HOOK}_latent"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(i < N);
        let stage = f["stage"].as_str().unwrap().to_string();
        assert!(
            stages.insert((i, stage.clone())),
            "failure recorded twice: {f}"
        );
        assert!(!f["error"].as_str().unwrap().is_empty());
        failed.insert(i);
        if stage == "explain" {
            assert!(
                !run_dir
                    .join("explanations")
                    .join(format!("{id}.txt"))
                    .exists(),
                "{id}"
            );
        }
    }
    for i in 0..N {
        assert!(
            complete(&run_dir, i, &SCORERS) != failed.contains(&i),
            "latent {i}: complete = {}, failed = {}",
            complete(&run_dir, i, &SCORERS),
            failed.contains(&i)
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} failed", failed.len())),
        "{stderr}"
    );
    // The scripted failures: walnut's explanation never parses; falcon's fuzzing always gets 400s
    // (its other scores are kept).
    let walnut = WORDS.iter().position(|w| *w == "walnut").unwrap();
    let falcon = WORDS.iter().position(|w| *w == "falcon").unwrap();
    assert!(
        stages.contains(&(walnut, "explain".to_string())),
        "{failures:?}"
    );
    assert!(
        stages.contains(&(falcon, "score/fuzz".to_string())),
        "{failures:?}"
    );
    assert!(run_dir
        .join("scores/detection")
        .join(format!("{}.txt", latent(falcon)))
        .is_file());
    // A score with failed items is counted in failures.jsonl exactly as its file has them.
    for f in &failures {
        let (Some(items), Some(scorer)) = (
            f["items"].as_u64(),
            f["stage"].as_str().and_then(|s| s.strip_prefix("score/")),
        ) else {
            continue;
        };
        let path = run_dir
            .join("scores")
            .join(scorer)
            .join(format!("{}.txt", f["latent"].as_str().unwrap()));
        let details = autointerp_score::read_score_file(&path, scorer).unwrap();
        assert_eq!(details.n_failed() as u64, items, "{f}");
    }
    assert!(failed.len() < N, "{failures:?}");
    for path in files(&run_dir).into_keys() {
        let name = path.to_string_lossy().to_string();
        assert!(!name.contains(".tmp"), "{name}");
        if name.starts_with("scores") {
            let bytes = std::fs::read(run_dir.join(&path)).unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    // A healthy server finishes the job: only the failed latents are asked about.
    let healthy = Server::start(Faults::default());
    let a = args(&healthy.url);
    assert_success(&autointerp(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert!((0..N).all(|i| complete(&run_dir, i, &SCORERS)));
    assert!(run_support::failures(&run_dir).is_empty());
    let asked: BTreeSet<usize> = healthy
        .seen()
        .iter()
        .map(|s| WORDS.iter().position(|w| *w == s.word).unwrap())
        .collect();
    assert!(
        asked.is_subset(&failed),
        "asked {asked:?}, failed {failed:?}"
    );
}
