//! Run with: cargo run --release -p autointerp-score --example score_metrics
//!
//! Scores made-up detection answers for two latents, the way the pipeline will once the LLM
//! client is wired in: builds the batches and prompts, resolves answers (one unparseable),
//! prints per-latent metrics with bootstrap intervals, the frequency-weighted F1, and writes the
//! score files in delphi's layout to a temporary folder.

use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_score::metrics::{frequency_weighted_f1, LatentF1};
use autointerp_score::{
    detection_batches, detection_prompt, write_score_file, Bootstrap, ClassifierConfig,
    ClassifierSummary, Confusion, ExampleOutcome, DETECTION,
};

fn example(text: &str, activation: f32, quantile: Option<u8>) -> Example {
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
    let n = words.len();
    let mut activations = vec![0.0; n];
    activations[n - 1] = activation;
    Example {
        tokens: (0..n as u32).collect(),
        normalized: activations
            .iter()
            .map(|&a| if a > 0.0 { 10 } else { 0 })
            .collect(),
        str_tokens: words,
        activations,
        quantile,
        distance: None,
    }
}

fn record(index: u32, n_test: usize, n_silent: usize) -> LatentRecord {
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(6), index),
        train: vec![],
        test: (0..n_test)
            .map(|i| {
                example(
                    &format!("we sailed down river {i}"),
                    1.0 + i as f32,
                    Some(1 + (i % 3) as u8),
                )
            })
            .collect(),
        non_activating: (0..n_silent)
            .map(|i| example(&format!("the bank raised rate {i}"), 0.0, None))
            .collect(),
        stats: LatentStats {
            n_activations: 100 * (u64::from(index) + 1),
            n_tokens: 100_000,
            max_activation: 3.0,
        },
        logits: None,
    }
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = ClassifierConfig::default();
    let mut f1s = Vec::new();
    for (r, accuracy) in [(record(1, 12, 12), 0.7), (record(2, 8, 12), 0.6)] {
        let batches = detection_batches(&r, &cfg)?;
        println!(
            "latent {}: {} batches; first prompt ends with:\n{}\n",
            r.id,
            batches.len(),
            detection_prompt("Names of rivers.", &batches[0])
                .last()
                .map_or("", |m| m.content.as_str())
        );
        let mut outcomes: Vec<ExampleOutcome> = Vec::new();
        for (b, batch) in batches.into_iter().enumerate() {
            // A simulated scorer: right on a fixed share of the examples; the third answer is prose.
            let answer = if b == 2 {
                "I am not sure about these.".to_string()
            } else {
                let labels: Vec<&str> = batch
                    .items
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        if (i as f64 / batch.len() as f64) < accuracy {
                            o.activating
                        } else {
                            !o.activating
                        }
                    })
                    .map(|l| if l { "1" } else { "0" })
                    .collect();
                format!("Here you go:\n[{}]", labels.join(", "))
            };
            let result = batch.resolve(&answer, None);
            if let Some(e) = &result.failure {
                println!("  batch {b} failed: {e}");
            }
            outcomes.extend(result.outcomes);
        }
        let summary = ClassifierSummary::from_outcomes(&outcomes);
        let m = summary.metrics;
        let ci = Bootstrap::default().interval(&outcomes, |s| {
            Some(
                Confusion::from_outcomes(s.iter().copied())
                    .metrics()
                    .balanced_accuracy,
            )
        });
        println!(
            "  balanced accuracy {:.3} (95% CI {}), accuracy {:.3}, precision {:.3}, recall {:.3}, F1 {:.3}, failed {}",
            m.balanced_accuracy,
            ci.map_or("n/a".into(), |c| format!("{:.3}–{:.3}", c.low, c.high)),
            m.accuracy,
            m.precision,
            m.recall,
            m.f1,
            m.failed,
        );
        let path = write_score_file(dir.path(), DETECTION, &r.id, &outcomes)?;
        println!("  wrote {}", path.display());
        f1s.push(LatentF1 {
            latent: r.id,
            f1: m.f1,
            firing_count: r.stats.n_activations,
        });
    }
    println!("frequency-weighted F1: {:?}", frequency_weighted_f1(&f1s));
    Ok(())
}
