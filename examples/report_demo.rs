//! Run with: cargo run --release -p autointerp-report --example report_demo -- RESULTS_DIR
//!
//! Writes the report of a results directory (explanations/, scores/, latents/, run_config.json)
//! to RESULTS_DIR/report/ and prints its summary table. Without RESULTS_DIR, it first writes a
//! small synthetic results directory (40 latents, detection with a random-explanation control,
//! intruder and simulation scores) into a temporary folder that is kept, and reports on that.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use autointerp_core::{Example, Explanation, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_report::{generate_report, ReportConfig};
use autointerp_score::{
    score_simulation, write_score_file, ExampleOutcome, IntruderTrial, SimulatedSequence,
};

/// A tiny deterministic generator (64-bit LCG), so the demo needs no extra dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

const WORDS: [&str; 12] = [
    " the",
    " river",
    " Thames",
    " flows",
    " past",
    " London",
    " <b>",
    " &",
    " 42",
    " \"quoted\"",
    " <<tag>>",
    "\n",
];

fn example(rng: &mut Lcg, active: bool, quantile: Option<u8>) -> Example {
    let n = 12;
    let str_tokens: Vec<String> = (0..n)
        .map(|_| WORDS[(rng.next() * WORDS.len() as f64) as usize].to_string())
        .collect();
    let activations: Vec<f32> = (0..n)
        .map(|_| {
            if active && rng.next() < 0.3 {
                (rng.next() * 5.0) as f32
            } else {
                0.0
            }
        })
        .collect();
    let max = activations.iter().copied().fold(0.0f32, f32::max);
    Example {
        tokens: (0..n as u32).collect(),
        normalized: activations
            .iter()
            .map(|a| if max > 0.0 { (a / max * 10.0) as u8 } else { 0 })
            .collect(),
        str_tokens,
        activations,
        quantile,
        distance: None,
    }
}

fn classifier(rng: &mut Lcg, skill: f64, n: usize) -> Vec<ExampleOutcome> {
    (0..n)
        .map(|i| {
            let activating = i % 2 == 0;
            let p = if activating {
                0.5 + skill * rng.next()
            } else {
                0.5 - skill * rng.next()
            };
            let p = (p + 0.3 * (rng.next() - 0.5)).clamp(0.0, 1.0) as f32;
            let mut o = ExampleOutcome {
                str_tokens: vec!["x".into()],
                activations: vec![f32::from(u8::from(activating))],
                quantile: activating.then_some(1),
                distance: None,
                activating,
                prediction: None,
                probability: None,
                correct: None,
                text: None,
            };
            let failed = rng.next() < 0.03;
            o.set_prediction((!failed).then_some(p > 0.5), Some(p));
            o
        })
        .collect()
}

fn synthetic(root: &Path) -> Result<()> {
    let mut rng = Lcg(7);
    std::fs::write(
        root.join("run_config.json"),
        r#"{"model": "demo", "scorers": ["detection", "intruder", "simulation"]}"#,
    )?;
    for dir in ["explanations", "latents"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    let scores = root.join("scores");
    for i in 0..40u32 {
        let id = LatentId::new(HookPoint::Residual(6), i);
        let skill = rng.next() * 0.5;
        if i % 13 != 5 {
            autointerp_explain::write_explanation(
                &root.join("explanations"),
                &Explanation {
                    latent: id,
                    text: format!("Demo latent {i}: mentions of <rivers> & \"places\""),
                },
            )?;
        }
        if i % 11 != 3 {
            let record = LatentRecord {
                id,
                train: (0..6)
                    .map(|q| example(&mut rng, true, Some(q % 3 + 1)))
                    .collect(),
                test: (0..3).map(|_| example(&mut rng, true, Some(1))).collect(),
                non_activating: (0..3).map(|_| example(&mut rng, false, None)).collect(),
                stats: LatentStats {
                    n_activations: (10f64.powf(1.0 + 4.0 * rng.next())) as u64,
                    n_tokens: 1_000_000,
                    max_activation: 5.0,
                },
                logits: None,
            };
            std::fs::write(
                root.join("latents").join(format!("{id}.json")),
                serde_json::to_vec(&record)?,
            )?;
        }
        write_score_file(&scores, "detection", &id, &classifier(&mut rng, skill, 20))?;
        write_score_file(
            &scores.join("random"),
            "detection",
            &id,
            &classifier(&mut rng, 0.05, 20),
        )?;
        let trials: Vec<_> = (0..5)
            .map(|_| {
                let trial = IntruderTrial {
                    examples: vec!["a".into(), "b".into()],
                    intruder_index: 1,
                    chosen_quantile: 1,
                    activations: vec![vec![1.0], vec![0.0]],
                    tokens: vec![vec!["a".into()], vec!["b".into()]],
                    intruder_distance: -1.0,
                };
                let answer = if rng.next() < 0.4 + skill {
                    "[INTRUDER]: 2"
                } else {
                    "[INTRUDER]: 1"
                };
                trial.resolve(answer).0
            })
            .collect();
        write_score_file(&scores, "intruder", &id, &trials)?;
        let seqs: Vec<SimulatedSequence> = (0..4)
            .map(|k| {
                let truth: Vec<f32> = (0..8).map(|_| (rng.next() * 10.0).round() as f32).collect();
                let pred = truth
                    .iter()
                    .map(|t| (t * skill as f32 + 5.0 * rng.next() as f32).min(10.0))
                    .collect();
                SimulatedSequence {
                    tokens: vec!["t".into(); 8],
                    true_activations: truth,
                    predicted: Some(pred),
                    quantile: Some(k % 2 + 1),
                    activating: true,
                }
            })
            .collect();
        write_score_file(&scores, "simulation", &id, &score_simulation(&seqs))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber_init();
    let dir: PathBuf = match std::env::args_os().nth(1) {
        Some(d) => d.into(),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("autointerp-report-demo-")
                .tempdir()?
                .keep();
            synthetic(&dir).context("writing the synthetic results")?;
            eprintln!(
                "no RESULTS_DIR given: wrote a synthetic one to {}",
                dir.display()
            );
            dir
        }
    };
    let report = generate_report(&dir, &ReportConfig::default())?;
    print!("{}", report.summary.to_text());
    println!(
        "\n{} plots; open {}",
        report.plots.len(),
        report.out_dir.join("index.html").display()
    );
    Ok(())
}

/// Logs nothing unless asked: the report's own warnings go through `tracing`, which this
/// example leaves without a subscriber to keep its dependencies small.
fn tracing_subscriber_init() {}
