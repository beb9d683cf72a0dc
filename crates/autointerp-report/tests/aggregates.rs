//! The report's aggregates on a results folder small enough to compute by hand: classifier
//! metrics averaged over latents (macro) and pooled over examples (micro, delphi's), delphi's
//! frequency-weighted F1, and every scorer's mean with failures excluded and counted.

use std::path::Path;

use anyhow::{Context, Result};
use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_report::{generate_report, ReportConfig, ScorerKey, ScorerSummary, Summary};
use autointerp_score::{
    score_simulation, simulation_targets, write_score_file, EmbeddingOutcome, ExampleOutcome,
    IntruderOutcome, IntruderTrial, SimulatedSequence,
};

fn id(layer: usize, i: u32) -> LatentId {
    LatentId::new(HookPoint::Residual(layer), i)
}

fn example(tokens: &[&str], normalized: &[u8], quantile: Option<u8>) -> Example {
    Example {
        tokens: (0..tokens.len() as u32).collect(),
        str_tokens: tokens.iter().map(|t| t.to_string()).collect(),
        activations: normalized.iter().map(|&n| f32::from(n) / 10.0).collect(),
        normalized: normalized.to_vec(),
        quantile,
        distance: None,
    }
}

/// A record firing on `n_activations` tokens; its examples are those simulated for latent A.
fn record(id: LatentId, n_activations: u64) -> LatentRecord {
    LatentRecord {
        id,
        train: vec![],
        test: vec![
            example(&["a", "b"], &[0, 10], Some(1)),
            example(&["c", "d"], &[0, 5], Some(1)),
        ],
        non_activating: vec![example(&["e", "f"], &[0, 0], None)],
        stats: LatentStats {
            n_activations,
            n_tokens: 1000,
            max_activation: 1.0,
        },
        logits: None,
    }
}

/// A classifier outcome: the right answer and the prediction (`None`: failed).
fn o(activating: bool, prediction: Option<bool>) -> ExampleOutcome {
    let mut o = ExampleOutcome {
        str_tokens: vec!["x".into()],
        activations: vec![0.0],
        quantile: None,
        distance: None,
        activating,
        prediction: None,
        probability: None,
        correct: None,
        text: Some("x".into()),
    };
    o.set_prediction(prediction, None);
    o
}

fn trial(correct: Option<bool>) -> IntruderOutcome {
    let trial = IntruderTrial {
        examples: vec!["a".into(), "b".into()],
        intruder_index: 1,
        chosen_quantile: 1,
        activations: vec![vec![1.0], vec![0.0]],
        tokens: vec![vec!["a".into()], vec!["b".into()]],
        intruder_distance: -1.0,
    };
    match correct {
        None => trial.fail(),
        Some(true) => trial.resolve("[INTRUDER]: 2").0,
        Some(false) => trial.resolve("[INTRUDER]: 1").0,
    }
}

fn similarity(activating: bool, similarity: Option<f32>) -> EmbeddingOutcome {
    EmbeddingOutcome {
        text: "x".into(),
        activating,
        quantile: None,
        distance: None,
        similarity,
    }
}

/// Six latents over two hook points:
///
/// | latent | record (firing) | detection: tp fn tn fp, failed | intruder | other |
/// |---|---|---|---|---|
/// | A layers.0/0 | 30 | 3 1 1 0, one activating | right, failed, wrong | simulation, one of three sequences failed |
/// | B layers.0/1 | 10 | 0 1 1 2, one silent | failed, failed | |
/// | C layers.1/0 | 5 | 1 0 1 0 | right, right | embedding, one of each class failed |
/// | D layers.1/1 | none | 1 0 0 1 | | simulation, one failed (truth unknown) |
/// | E layers.1/2 | 100 | no score (its explanation failed) | | |
/// | F layers.1/3 | none | every answer failed | | |
fn build(root: &Path) -> Result<()> {
    let (a, b, c, d, e, f) = (id(0, 0), id(0, 1), id(1, 0), id(1, 1), id(1, 2), id(1, 3));
    let latents = root.join("latents");
    std::fs::create_dir_all(&latents)?;
    for (l, n) in [(a, 30), (b, 10), (c, 5), (e, 100)] {
        std::fs::write(
            latents.join(format!("{l}.json")),
            serde_json::to_vec(&record(l, n))?,
        )?;
    }
    let scores = root.join("scores");
    let (t, n) = (true, false);
    let detection = [
        (
            a,
            vec![
                o(t, Some(t)),
                o(t, Some(t)),
                o(t, Some(t)),
                o(t, Some(n)),
                o(n, Some(n)),
                o(t, None),
            ],
        ),
        (
            b,
            vec![
                o(t, Some(n)),
                o(n, Some(n)),
                o(n, Some(t)),
                o(n, Some(t)),
                o(n, None),
            ],
        ),
        (c, vec![o(t, Some(t)), o(n, Some(n))]),
        (d, vec![o(t, Some(t)), o(n, Some(t))]),
        (f, vec![o(t, None), o(n, None)]),
    ];
    for (l, outcomes) in detection {
        write_score_file(&scores, "detection", &l, &outcomes)?;
    }
    for (l, trials) in [
        (a, vec![trial(Some(true)), trial(None), trial(Some(false))]),
        (b, vec![trial(None), trial(None)]),
        (c, vec![trial(Some(true)), trial(Some(true))]),
    ] {
        write_score_file(&scores, "intruder", &l, &trials)?;
    }
    // A: the record's three sequences (truth 0 10, 0 5, 0 0), the second failed.
    let mut sequences = simulation_targets(&record(a, 30));
    sequences[0].predicted = Some(vec![0.0, 10.0]);
    sequences[2].predicted = Some(vec![0.0, 0.0]);
    write_score_file(&scores, "simulation", &a, &score_simulation(&sequences))?;
    // D: the same, without a record to tell the failed sequence's truth.
    let seq = |truth: [f32; 2], predicted: Option<[f32; 2]>, activating: bool| SimulatedSequence {
        tokens: vec!["x".into(), "y".into()],
        true_activations: truth.to_vec(),
        predicted: predicted.map(|p| p.to_vec()),
        quantile: activating.then_some(1),
        activating,
    };
    let d_sequences = [
        seq([0.0, 10.0], Some([0.0, 10.0]), true),
        seq([0.0, 4.0], None, true),
        seq([0.0, 0.0], Some([0.0, 0.0]), false),
    ];
    write_score_file(&scores, "simulation", &d, &score_simulation(&d_sequences))?;
    write_score_file(
        &scores,
        "embedding",
        &c,
        &[
            similarity(true, Some(0.9)),
            similarity(true, None),
            similarity(false, Some(0.5)),
            similarity(false, None),
            similarity(false, Some(0.1)),
        ][..],
    )?;
    Ok(())
}

fn close(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() < 1e-12)
}

fn row<'a>(s: &'a Summary, name: &str) -> &'a ScorerSummary {
    s.scorers
        .iter()
        .find(|r| r.scorer == ScorerKey::real(name))
        .unwrap_or_else(|| panic!("no row for {name}"))
}

#[test]
fn macro_micro_weighted_and_failures_both_ways() -> Result<()> {
    let dir = tempfile::tempdir()?;
    build(dir.path())?;
    let report = generate_report(dir.path(), &ReportConfig::default().with_plots(false))?;
    let s = &report.summary;
    assert_eq!(s.n_latents, 6);

    let det = row(s, "detection");
    // Failures excluded: A 7/8, B 1/6, C 1, D 1/2 (F has no scored example).
    assert_eq!((det.n_latents, det.n_defined), (5, 4));
    assert!(close(det.mean, 61.0 / 96.0), "{:?}", det.mean);
    // Failures counted: a failed example is a wrong answer (A 0.8, B 0.125, F 0), and E, with
    // no file, is 0; over all six latents.
    assert!(
        close(det.mean_counted, 2.425 / 6.0),
        "{:?}",
        det.mean_counted
    );
    assert_eq!(
        (det.n_expected, det.n_missing, det.n_with_failures),
        (6, 1, 3)
    );
    assert_eq!((det.n_failed, det.n_items), (4, 17));

    let c = det.classifier.as_ref().context("classifier metrics")?;
    // Macro: each latent's metric, averaged over A, B, C, D.
    assert!(close(c.accuracy, (0.8 + 0.25 + 1.0 + 0.5) / 4.0));
    assert!(close(c.balanced_accuracy, 61.0 / 96.0));
    assert!(close(c.precision, (1.0 + 0.0 + 1.0 + 0.5) / 4.0));
    assert!(close(c.recall, (0.75 + 0.0 + 1.0 + 1.0) / 4.0));
    assert!(close(c.f1, 53.0 / 84.0));
    // Micro: tp 5, fn 2, tn 3, fp 3 pooled.
    let m = c.micro.context("micro metrics")?;
    assert!(close(Some(m.accuracy), 8.0 / 13.0));
    assert!(close(Some(m.balanced_accuracy), 17.0 / 28.0));
    assert!(close(Some(m.precision), 5.0 / 8.0));
    assert!(close(Some(m.recall), 5.0 / 7.0));
    assert!(close(Some(m.f1), 2.0 / 3.0));
    assert_eq!((m.positives, m.negatives, m.failed), (7, 6, 2));
    // Frequency-weighted F1: layers.0 (30·6/7 + 10·0) / 40 = 9/14; layers.1 only C (D has no
    // record): 1; mean 23/28.
    assert!(close(c.frequency_weighted_f1, 23.0 / 28.0));
    assert_eq!(c.n_weighted, 3);

    let intr = row(s, "intruder");
    assert!(close(intr.mean, 0.75));
    assert!(close(intr.mean_counted, (1.0 / 3.0 + 0.0 + 1.0) / 6.0));
    assert_eq!(
        (intr.n_defined, intr.n_missing, intr.n_with_failures),
        (2, 3, 2)
    );

    let sim = row(s, "simulation");
    assert!(close(sim.mean, 1.0));
    // A with its failed sequence predicted 0: truth 0 10 0 5 0 0, prediction 0 10 0 0 0 0,
    // correlation 75 / √(87.5 · 250/3) = 3·√(3/35). D's failed truth is unknown: 0.
    let a_counted = 3.0 * (3.0f64 / 35.0).sqrt();
    assert!(
        close(sim.mean_counted, a_counted / 6.0),
        "{:?}",
        sim.mean_counted
    );

    let emb = row(s, "embedding");
    assert!(close(emb.mean, 1.0));
    // Failed ones ranked last: 0.9 beats 0.5 and 0.1, the failed activating beats nothing.
    assert!(close(emb.mean_counted, (2.0 / 6.0) / 6.0));

    // The written forms label both ways and both averages.
    let text = s.to_text();
    let det_line = text
        .lines()
        .find(|l| l.starts_with("detection "))
        .context("detection line")?;
    assert!(
        det_line.contains("0.635")
            && det_line.contains("4/17 in 3 latents")
            && det_line.contains("0.404 of 6 (1 missing)"),
        "{det_line}"
    );
    assert!(text.contains("mean, failures counted"), "{text}");
    assert!(text.contains("Classifier metrics:"), "{text}");
    let det_metrics = text
        .lines()
        .filter(|l| l.starts_with("detection "))
        .nth(1)
        .context("detection classifier line")?;
    for want in ["0.635", "0.615", "0.667", "0.821 n=3"] {
        assert!(det_metrics.contains(want), "{want} not in {det_metrics}");
    }
    let md = std::fs::read_to_string(report.out_dir.join("summary.md"))?;
    assert!(
        md.contains("## Classifier metrics") && md.contains("micro F1"),
        "{md}"
    );
    let html = std::fs::read_to_string(report.out_dir.join("index.html"))?;
    assert!(html.contains("Classifier metrics") && html.contains("freq-weighted F1"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.out_dir.join("summary.json"))?)?;
    let det_json = &json["scorers"][0];
    assert_eq!(det_json["scorer"]["name"], "detection");
    assert_eq!(det_json["n_missing"], 1);
    assert_eq!(det_json["classifier"]["n_weighted"], 3);
    assert!(det_json["classifier"]["micro"]["f1"].is_number());
    Ok(())
}
