//! The run engine used as a library: a scorer written outside the project's crates plugs into a
//! run (and its random control), progress arrives as events, and a cancelled run writes nothing
//! half-done and resumes.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use autointerp_client::{ChatRequest, ChatResponse, Client, Usage};
use autointerp_core::{Explanation, LatentRecord, Score};
use autointerp_run::{Event, ExplainerKind, Run, RunConfig};
use autointerp_score::{EmbeddingOutcome, ScoreDetails, Scorer, ScorerResult};
use support::{write_cache, WORDS};

fn config(root: &Path) -> RunConfig {
    RunConfig {
        explainer: ExplainerKind::Tokens,
        scorers: Vec::new(),
        random_control: true,
        example_ctx_len: 8,
        min_examples: 8,
        n_examples_train: 4,
        n_examples_test: 4,
        n_non_activating: 4,
        n_quantiles: 2,
        max_concurrency: 2,
        results_dir: root.into(),
        name: "run".into(),
        ..RunConfig::default()
    }
}

/// A scorer nobody in the project wrote: the share of examples whose text contains a word of the
/// explanation exactly when the latent fires on them.
struct Mentions;

impl Scorer for Mentions {
    fn name(&self) -> &'static str {
        "mentions"
    }

    async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> autointerp_score::Result<ScorerResult> {
        let words: Vec<String> = explanation
            .text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| WORDS.contains(w))
            .map(|w| format!(" {w}"))
            .collect();
        let outcomes: Vec<EmbeddingOutcome> = (record.test.iter().map(|e| (e, true)))
            .chain(record.non_activating.iter().map(|e| (e, false)))
            .map(|(e, activating)| {
                let text = e.text();
                let mentioned = words.iter().any(|w| text.contains(w.as_str()));
                EmbeddingOutcome {
                    text,
                    activating,
                    quantile: None,
                    distance: None,
                    similarity: Some(if mentioned == activating { 1.0 } else { 0.0 }),
                }
            })
            .collect();
        let right = outcomes
            .iter()
            .filter(|o| o.similarity == Some(1.0))
            .count();
        Ok(ScorerResult {
            score: Score {
                latent: record.id,
                scorer: "mentions".into(),
                value: right as f64 / outcomes.len().max(1) as f64,
                n_failed: 0,
            },
            details: ScoreDetails::Embedding { outcomes },
            failures: Vec::new(),
            usage: Usage::default(),
        })
    }
}

/// Reads a score file's headline the way the report does: the mean of the outcome similarities.
fn mean_similarity(path: &Path) -> f64 {
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let values: Vec<f64> = rows
        .iter()
        .filter_map(|r| r["similarity"].as_f64())
        .collect();
    values.iter().sum::<f64>() / values.len() as f64
}

#[tokio::test]
async fn a_scorer_written_outside_the_project_runs_with_the_control() {
    let dir = tempfile::tempdir().unwrap();
    write_cache(dir.path());
    let phases = AtomicUsize::new(0);
    let progress = |e: Event<'_>| {
        if let Event::PhaseStarted { .. } = e {
            phases.fetch_add(1, Ordering::SeqCst);
        }
    };
    let summary = Run::new(config(dir.path()))
        .unwrap()
        .cache_dir(dir.path())
        .with_scorer(Box::new(Mentions))
        .execute(&progress)
        .await
        .unwrap();
    assert_eq!((summary.main.done, summary.main.failed), (4, 0));
    assert_eq!(summary.control.as_ref().map(|c| c.done), Some(4));
    assert_eq!(phases.load(Ordering::SeqCst), 2);
    for i in 0..4 {
        let real = summary.layout.score_file(
            "mentions",
            &format!("layers.0_latent{i}").parse().unwrap(),
            false,
        );
        let random = summary.layout.score_file(
            "mentions",
            &format!("layers.0_latent{i}").parse().unwrap(),
            true,
        );
        // The token explainer names the latent's word: every example is classified right; another
        // latent's word is never in this latent's examples but is in some silent ones.
        assert_eq!(mean_similarity(&real), 1.0, "latent {i}");
        assert!(mean_similarity(&random) < 1.0, "latent {i}");
    }
}

/// Answers every prompt after a pause, counting them.
struct Slow(Arc<AtomicUsize>);

impl Client for Slow {
    async fn chat(&self, _: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok(ChatResponse {
            text: "[EXPLANATION]: the word river".into(),
            ..ChatResponse::default()
        })
    }
}

#[tokio::test]
async fn a_cancelled_run_stops_and_the_next_one_finishes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write_cache(dir.path());
    let cfg = RunConfig {
        explainer: ExplainerKind::Default,
        explainer_model: "scripted".into(),
        random_control: false,
        max_concurrency: 1,
        ..config(dir.path())
    };
    let asked = Arc::new(AtomicUsize::new(0));
    let run = Run::new(cfg.clone())
        .unwrap()
        .cache_dir(dir.path())
        .with_client(Arc::new(Slow(Arc::clone(&asked))));
    let cancel = run.cancel_token();
    // Stop as soon as the first latent is done.
    let progress = move |e: Event<'_>| {
        if let Event::LatentFinished { .. } = e {
            cancel.stop();
        }
    };
    let first = run.execute(&progress).await.unwrap();
    assert!(first.cancelled);
    assert!(
        first.main.done >= 1 && first.main.done < 4,
        "{:?}",
        first.main
    );
    let second = Run::new(cfg)
        .unwrap()
        .cache_dir(dir.path())
        .with_client(Arc::new(Slow(Arc::clone(&asked))))
        .execute(&())
        .await
        .unwrap();
    assert!(!second.cancelled);
    assert_eq!(second.already_done, first.main.done);
    assert_eq!(first.main.done + second.main.done, 4);
    // Each latent was explained exactly once over both runs.
    assert_eq!(asked.load(Ordering::SeqCst), 4);
}
