//! Builds a small results directory with the score crate's own writers and core types, writes
//! its report, and checks the numbers against hand-computed values, the plot files, the HTML's
//! escaping, and (in headless Chromium) that the page's script renders the latents.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use autointerp_core::{
    Example, HookPoint, LatentId, LatentLogits, LatentRecord, LatentStats, TokenLogit,
};
use autointerp_explain::write_explanation;
use autointerp_report::{generate_report, ProblemKind, Report, ReportConfig, ScorerKey};
use autointerp_score::{
    score_simulation, write_score_file, Bootstrap, EmbeddingOutcome, ExampleOutcome,
    IntruderOutcome, IntruderTrial, SimulatedSequence, SurprisalOutcome,
};

const INJECTED: &str = "<script>alert('pwned')</script>";

fn id(i: u32) -> LatentId {
    LatentId::new(HookPoint::Residual(6), i)
}

fn example(tokens: &[&str], acts: &[f32], quantile: Option<u8>) -> Example {
    let max = acts.iter().copied().fold(0.0f32, f32::max);
    Example {
        tokens: (0..tokens.len() as u32).collect(),
        str_tokens: tokens.iter().map(|t| t.to_string()).collect(),
        activations: acts.to_vec(),
        normalized: acts
            .iter()
            .map(|a| if max > 0.0 { (a / max * 10.0) as u8 } else { 0 })
            .collect(),
        quantile,
        distance: None,
    }
}

fn record(i: u32, n_activations: u64) -> LatentRecord {
    LatentRecord {
        id: id(i),
        train: vec![
            example(&["The", " Thames", " flows"], &[0.0, 4.0, 1.0], Some(1)),
            // Text that must be escaped everywhere it is shown.
            example(
                &[INJECTED, " &amp;", " \"q\"", " <<", "x", ">>", "\n", " 'a'"],
                &[0.0, 2.0, 0.0, 1.0, 3.0, 0.5, 0.0, 0.0],
                Some(2),
            ),
        ],
        test: vec![example(&["the", " Rhine"], &[0.0, 3.0], Some(1))],
        non_activating: vec![example(&["a", " loan"], &[0.0, 0.0], None)],
        stats: LatentStats {
            n_activations,
            n_tokens: 1000,
            max_activation: 4.0,
        },
        logits: None,
    }
}

/// A classifier outcome: truth, prediction (None = failed), probability.
/// Latent 1's logit lens: river names up, a token of markup down.
fn logits() -> LatentLogits {
    let token = |token: u32, text: &str, delta: f32| TokenLogit {
        token,
        text: text.into(),
        delta,
    };
    LatentLogits {
        promoted: vec![token(5, " Danube", 2.5), token(6, " Volga", 1.25)],
        suppressed: vec![token(7, INJECTED, -1.5)],
    }
}

fn outcome(activating: bool, prediction: Option<bool>, p: Option<f32>) -> ExampleOutcome {
    let mut o = ExampleOutcome {
        str_tokens: vec!["x".into()],
        activations: vec![if activating { 1.0 } else { 0.0 }],
        quantile: activating.then_some(1),
        distance: None,
        activating,
        prediction: None,
        probability: None,
        correct: None,
        text: Some("x".into()),
    };
    o.set_prediction(prediction, p);
    o
}

fn intruder(correct: Option<bool>) -> IntruderOutcome {
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

fn sequence(truth: &[f32], predicted: Option<&[f32]>, activating: bool) -> SimulatedSequence {
    SimulatedSequence {
        tokens: truth.iter().map(|_| "t".to_string()).collect(),
        true_activations: truth.to_vec(),
        predicted: predicted.map(<[f32]>::to_vec),
        quantile: activating.then_some(1),
        activating,
    }
}

fn embedding(activating: bool, similarity: Option<f32>) -> EmbeddingOutcome {
    EmbeddingOutcome {
        text: "x".into(),
        activating,
        quantile: None,
        distance: None,
        similarity,
    }
}

fn surprisal(activating: bool, reduction: f64) -> SurprisalOutcome {
    SurprisalOutcome {
        text: "x".into(),
        activating,
        quantile: None,
        distance: None,
        activations: vec![0.0],
        no_explanation: vec![1.0],
        explanation: vec![1.0],
        loss_reduction: Some(reduction),
    }
}

/// Latents 1..=5 of `layers.6`:
/// 1: explanation (with injected markup), record (rate 0.01), every scorer;
/// 2: explanation, record (rate 0.1), detection, fuzz, intruder, surprisal;
/// 3: failed explanation, no record, no scores;
/// 4: explanation, record, no scores;
/// 5: no explanation file, no record, detection (all failed), simulation (NaN).
/// Plus a malformed detection file for latent 9 and a stray file.
fn build_results(root: &Path) -> Result<()> {
    std::fs::write(
        root.join("run_config.json"),
        r#"{"model": "<b>tiny</b>", "n": 5}"#,
    )?;
    let expl = root.join("explanations");
    std::fs::create_dir_all(&expl)?;
    let explain = |i: u32, text: &str| {
        write_explanation(
            &expl,
            &autointerp_core::Explanation {
                latent: id(i),
                text: text.into(),
            },
        )
    };
    explain(
        1,
        &format!("Names of rivers {INJECTED} & \"quotes\" <<the>>"),
    )?;
    explain(2, "Numbers")?;
    explain(3, "Explanation could not be parsed.")?;
    explain(4, "Unscored latent")?;

    let latents = root.join("latents");
    std::fs::create_dir_all(&latents)?;
    for (i, n) in [(1, 10), (2, 100), (4, 1)] {
        let mut r = record(i, n);
        if i == 1 {
            r.logits = Some(logits());
        }
        std::fs::write(
            latents.join(format!("{}.json", id(i))),
            serde_json::to_vec(&r)?,
        )?;
    }

    let scores = root.join("scores");
    // Detection. L1: TP, FN, TN, FP + one failed: BA 0.5, F1 0.5, AUC 0.75.
    write_score_file(
        &scores,
        "detection",
        &id(1),
        &[
            outcome(true, Some(true), Some(0.9)),
            outcome(true, Some(false), Some(0.4)),
            outcome(false, Some(false), Some(0.2)),
            outcome(false, Some(true), Some(0.6)),
            outcome(true, None, None),
        ][..],
    )?;
    // L2: all right: BA 1, F1 1, AUC 1.
    write_score_file(
        &scores,
        "detection",
        &id(2),
        &[
            outcome(true, Some(true), Some(0.8)),
            outcome(true, Some(true), Some(0.7)),
            outcome(false, Some(false), Some(0.3)),
            outcome(false, Some(false), Some(0.1)),
        ][..],
    )?;
    // L5: every answer failed: undefined.
    write_score_file(
        &scores,
        "detection",
        &id(5),
        &[outcome(true, None, None), outcome(false, None, None)][..],
    )?;
    std::fs::write(
        scores.join("detection").join(format!("{}.txt", id(9))),
        "{not json",
    )?;
    std::fs::write(scores.join("detection").join("notes.md"), "stray")?;

    // Random control of detection, in the canonical folder: L1 BA 0, L2 BA 0.75.
    let random = scores.join("random");
    write_score_file(
        &random,
        "detection",
        &id(1),
        &[
            outcome(true, Some(false), None),
            outcome(false, Some(true), None),
        ][..],
    )?;
    write_score_file(
        &random,
        "detection",
        &id(2),
        &[
            outcome(true, Some(true), None),
            outcome(false, Some(false), None),
            outcome(true, Some(false), None),
        ][..],
    )?;

    // Fuzz, with its control in the suffix form: real L1 BA 1, control L1 BA 0.5.
    write_score_file(
        &scores,
        "fuzz",
        &id(1),
        &[
            outcome(true, Some(true), None),
            outcome(false, Some(false), None),
        ][..],
    )?;
    write_score_file(
        &scores,
        "fuzz_random",
        &id(1),
        &[
            outcome(true, Some(false), None),
            outcome(false, Some(false), None),
        ][..],
    )?;

    // Intruder. L1: right, wrong, failed → 0.5; L2: 1.0.
    write_score_file(
        &scores,
        "intruder",
        &id(1),
        &[intruder(Some(true)), intruder(Some(false)), intruder(None)][..],
    )?;
    write_score_file(
        &scores,
        "intruder",
        &id(2),
        &[intruder(Some(true)), intruder(Some(true))][..],
    )?;

    // Simulation. L1: prediction = truth / 2 → correlation 1, one failed sequence; L5: truth all
    // zero → correlation undefined, written "nan".
    let l1 = score_simulation(&[
        sequence(&[0.0, 10.0, 5.0], Some(&[0.0, 5.0, 2.5]), true),
        sequence(&[0.0, 0.0, 0.0], Some(&[0.0, 0.0, 0.0]), false),
        sequence(&[0.0, 4.0], None, true),
    ]);
    write_score_file(&scores, "simulation", &id(1), &l1)?;
    let l5 = score_simulation(&[sequence(&[0.0, 0.0], Some(&[1.0, 2.0]), false)]);
    write_score_file(&scores, "simulation", &id(5), &l5)?;

    // Embedding. L1: AUC 3/4, one failed.
    write_score_file(
        &scores,
        "embedding",
        &id(1),
        &[
            embedding(true, Some(0.9)),
            embedding(true, Some(0.5)),
            embedding(false, Some(0.6)),
            embedding(false, Some(0.1)),
            embedding(false, None),
        ][..],
    )?;
    // Surprisal. L2: AUC 1.
    write_score_file(
        &scores,
        "surprisal",
        &id(2),
        &[surprisal(true, 0.3), surprisal(false, -0.1)][..],
    )?;
    Ok(())
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

fn make_report() -> Result<(tempfile::TempDir, Report)> {
    let dir = tempfile::tempdir()?;
    build_results(dir.path())?;
    let report = generate_report(dir.path(), &ReportConfig::default())?;
    Ok((dir, report))
}

fn row<'a>(report: &'a Report, key: &ScorerKey) -> &'a autointerp_report::ScorerSummary {
    report
        .summary
        .scorers
        .iter()
        .find(|s| &s.scorer == key)
        .unwrap_or_else(|| panic!("no summary row for {key}"))
}

#[test]
fn summary_numbers_match_hand_computed_values() -> Result<()> {
    let (dir, report) = make_report()?;
    let s = &report.summary;
    assert_eq!(report.out_dir, dir.path().join("report"));
    assert_eq!(
        (
            s.n_latents,
            s.n_explained,
            s.n_explanation_failed,
            s.n_with_record,
            s.n_scored
        ),
        (5, 3, 1, 3, 3)
    );
    let keys: Vec<String> = s.scorers.iter().map(|r| r.scorer.to_string()).collect();
    assert_eq!(
        keys,
        [
            "detection",
            "detection (random)",
            "embedding",
            "fuzz",
            "fuzz (random)",
            "intruder",
            "simulation",
            "surprisal"
        ]
    );

    let det = row(&report, &ScorerKey::real("detection"));
    assert_eq!((det.n_latents, det.n_defined), (3, 2));
    assert!(close(det.mean, 0.75));
    assert_eq!((det.n_failed, det.n_items, det.n_unreadable), (3, 11, 1));
    let want_ci = Bootstrap::default()
        .interval(&[0.5, 1.0], |x| {
            Some(x.iter().copied().sum::<f64>() / x.len() as f64)
        })
        .context("ci")?;
    assert_eq!(det.ci, Some(want_ci));
    let ci = det.ci.context("ci")?;
    assert!(ci.low <= 0.75 && 0.75 <= ci.high && ci.low >= 0.5 && ci.high <= 1.0);
    let c = det.classifier.as_ref().context("classifier means")?;
    assert!(close(c.balanced_accuracy, 0.75));
    assert!(close(c.f1, 0.75));
    assert!(close(c.auc, 0.875));
    assert_eq!((c.n_auc, c.n_pooled), (2, 8));
    assert!(close(c.pooled_auc, 15.0 / 16.0));
    let v = det.vs_control.as_ref().context("control comparison")?;
    assert!(close(v.control_mean, 0.375));
    assert!(close(v.difference, 0.375));
    assert_eq!(v.n_paired, 2);
    assert!(close(v.paired_difference.map(|d| d.estimate), 0.375));

    // The first screen says in one sentence how each scorer compares with its control; the
    // paired difference of 0.375 over two latents has a bootstrap interval above 0.
    let sentences = report.summary.control_sentences();
    let det_sentence = sentences
        .iter()
        .find(|s| s.starts_with("detection:"))
        .context("detection control sentence")?;
    assert!(
        det_sentence.contains("beat the random-explanation control")
            && det_sentence.contains("+0.375")
            && det_sentence.contains("2 latents"),
        "{det_sentence}"
    );
    assert!(report.summary.to_text().contains(det_sentence.as_str()));

    let ctl = row(&report, &ScorerKey::control("detection"));
    assert!(close(ctl.mean, 0.375));
    assert!(ctl.vs_control.is_none());

    let fuzz = row(&report, &ScorerKey::real("fuzz"));
    assert!(close(fuzz.mean, 1.0));
    let fv = fuzz.vs_control.as_ref().context("fuzz control")?;
    assert!(close(fv.control_mean, 0.5));
    assert!(close(fv.difference, 0.5));
    assert_eq!(fuzz.classifier.as_ref().and_then(|c| c.pooled_auc), None);

    let intr = row(&report, &ScorerKey::real("intruder"));
    assert!(close(intr.mean, 0.75));
    assert_eq!((intr.n_failed, intr.n_items), (1, 5));
    assert!(intr.classifier.is_none());

    let sim = row(&report, &ScorerKey::real("simulation"));
    assert_eq!((sim.n_latents, sim.n_defined), (2, 1));
    assert!(close(sim.mean, 1.0));
    assert_eq!(sim.n_failed, 1);

    let emb = row(&report, &ScorerKey::real("embedding"));
    assert!(close(emb.mean, 0.75));
    assert_eq!(emb.n_failed, 1);
    let sur = row(&report, &ScorerKey::real("surprisal"));
    assert!(close(sur.mean, 1.0));

    // Problems: each expected kind, naming the right latent.
    let has = |kind: ProblemKind, latent: Option<u32>| {
        s.problems
            .iter()
            .any(|p| p.kind == kind && (latent.is_none() || p.latent == latent.map(id)))
    };
    assert!(has(ProblemKind::ExplanationFailed, Some(3)));
    assert!(has(ProblemKind::MissingExplanation, Some(5)));
    assert!(has(ProblemKind::MissingRecord, Some(3)));
    assert!(has(ProblemKind::MissingRecord, Some(5)));
    assert!(has(ProblemKind::MissingScores, Some(3)));
    assert!(has(ProblemKind::MissingScores, Some(4)));
    assert!(has(ProblemKind::NanScore, Some(5)));
    assert!(has(ProblemKind::Malformed, Some(9)));
    assert!(has(ProblemKind::Unrecognised, None));
    assert!(!has(ProblemKind::MissingRecord, Some(1)));
    assert!(!has(ProblemKind::PlotFailed, None));

    // The three written forms.
    let text = s.to_text();
    assert!(text.contains("5 latents: 3 explained"), "{text}");
    let det_line = text
        .lines()
        .find(|l| l.starts_with("detection "))
        .context("detection line")?;
    assert!(
        det_line.contains("0.750") && det_line.contains("3/11"),
        "{det_line}"
    );
    assert!(text.contains("NanScore: 2"), "{text}");
    let md = std::fs::read_to_string(report.out_dir.join("summary.md"))?;
    assert!(md.contains("| detection (random) |"), "{md}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.out_dir.join("summary.json"))?)?;
    assert_eq!(json["n_latents"], 5);
    assert_eq!(json["run_config"]["n"], 5);
    assert_eq!(json["scorers"][0]["mean"], 0.75);
    assert_eq!(json["scorers"][0]["scorer"]["name"], "detection");
    assert!(json["plots"].as_array().is_some_and(|p| !p.is_empty()));
    Ok(())
}

/// A minimal well-formedness check: every tag closes in order, and the root is `<svg>`.
fn check_xmlish(text: &str) -> Result<()> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    let mut root = None;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').context("unclosed tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop().context("closing tag without opening")?;
            ensure!(top == name.trim(), "</{name}> closes <{top}>");
        } else {
            let name: String = tag
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            root.get_or_insert_with(|| name.clone());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
    }
    ensure!(stack.is_empty(), "unclosed tags: {stack:?}");
    ensure!(root.as_deref() == Some("svg"), "root is {root:?}");
    Ok(())
}

#[test]
fn plots_are_valid_png_and_svg() -> Result<()> {
    let (_dir, report) = make_report()?;
    let names: Vec<String> = report.plots.iter().map(|p| p.png.clone()).collect();
    for want in [
        "plots/detection_histogram.png",
        "plots/detection_firing_rate.png",
        "plots/detection_roc.png",
        "plots/fuzz_histogram.png",
        "plots/intruder_histogram.png",
        "plots/simulation_firing_rate.png",
        "plots/surprisal_histogram.png",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // No ROC without probabilities; controls are drawn with their scorer, not apart.
    assert!(!names.iter().any(|n| n.contains("fuzz_roc")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("_random")), "{names:?}");
    for p in &report.plots {
        let png = std::fs::read(report.out_dir.join(&p.png))?;
        assert!(png.len() > 1000, "{} is {} bytes", p.png, png.len());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", p.png);
        let svg = std::fs::read_to_string(report.out_dir.join(&p.svg))?;
        check_xmlish(&svg).with_context(|| p.svg.clone())?;
        assert!(svg.contains("<text"), "{} has no text", p.svg);
    }
    // Every file was written whole, through a temp file renamed into place: none is left.
    for dir in [report.out_dir.clone(), report.out_dir.join("plots")] {
        for e in std::fs::read_dir(&dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with('.') && !name.contains("tmp"),
                "{name} left in {}",
                dir.display()
            );
        }
    }
    Ok(())
}

#[test]
fn html_escapes_injected_markup() -> Result<()> {
    let (_dir, report) = make_report()?;
    let html = std::fs::read_to_string(report.out_dir.join("index.html"))?;
    // Only the page's own two script elements.
    assert_eq!(
        html.matches("<script").count(),
        2,
        "injected <script> in the page"
    );
    assert_eq!(html.matches("</script>").count(), 2);
    assert!(!html.contains("alert('pwned')</"), "raw injected text");
    assert!(html.contains(r"\u003cscript\u003ealert('pwned')\u003c/script\u003e"));
    // Server-rendered parts are escaped too (run_config holds markup).
    assert!(html.contains("&lt;b&gt;tiny&lt;/b&gt;"));
    assert!(!html.contains("<b>tiny</b>"));
    // Latent 1's logit lens is in the page's data; latents without one have none.
    assert!(html.contains(
        r#""logits":{"promoted":[[" Danube",2.5],[" Volga",1.25]],"suppressed":[["\u003cscript"#
    ));
    assert_eq!(html.matches(r#""logits":null"#).count(), 4);
    // Self-contained: no network references.
    assert!(!html.contains("http://") && !html.contains("https://"));
    for p in &report.plots {
        assert!(html.contains(&format!("src=\"{}\"", p.png)));
    }
    Ok(())
}

#[test]
fn partial_results_never_panic() -> Result<()> {
    // Empty folder: a report with problems, not an error.
    let dir = tempfile::tempdir()?;
    let report = generate_report(dir.path(), &ReportConfig::default())?;
    assert_eq!(report.summary.n_latents, 0);
    assert!(report
        .summary
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::MissingFolder));
    assert!(report.out_dir.join("index.html").exists());
    assert!(report.summary.to_text().contains("(no scores found)"));

    // Garbage everywhere.
    let dir = tempfile::tempdir()?;
    let r = dir.path();
    for sub in [
        "explanations",
        "latents",
        "scores/detection",
        "scores/random/x",
    ] {
        std::fs::create_dir_all(r.join(sub))?;
    }
    std::fs::write(r.join("run_config.json"), "{oops")?;
    std::fs::write(
        r.join("explanations/layers.6_latent1.txt"),
        [0xff, 0xfe, 0x00],
    )?;
    std::fs::write(
        r.join("explanations/layers.6_latent2.txt"),
        "\"unterminated",
    )?;
    std::fs::write(r.join("explanations/garbage.txt"), "x")?;
    std::fs::write(r.join("latents/layers.6_latent1.json"), "[]")?;
    std::fs::write(r.join("latents/stats.json"), "{}")?;
    // The run's activation cache lives beside the records; a stray folder does not.
    std::fs::create_dir_all(r.join("latents/layers.6"))?;
    std::fs::create_dir_all(r.join("latents/not-a-hookpoint"))?;
    std::fs::create_dir_all(r.join("scores/detection/layers.6_latent3.txt"))?;
    std::fs::write(r.join("scores/detection/layers.6_latent1.txt"), "[1, 2]")?;
    std::fs::write(r.join("scores/detection/layers.6_latent2.txt"), "[]")?;
    std::fs::write(r.join("scores/random/x/layers.6_latent2.txt"), "\"nan\"")?;
    std::fs::write(r.join("scores/stray.txt"), "x")?;
    let report = generate_report(r, &ReportConfig::default())?;
    let kinds: Vec<ProblemKind> = report.summary.problems.iter().map(|p| p.kind).collect();
    for k in [
        ProblemKind::Malformed,
        ProblemKind::Unreadable,
        ProblemKind::Unrecognised,
        ProblemKind::NanScore,
    ] {
        assert!(kinds.contains(&k), "{k:?} not in {kinds:?}");
    }
    let flagged = |name: &str| {
        report
            .summary
            .problems
            .iter()
            .any(|p| p.path.as_ref().is_some_and(|path| path.ends_with(name)))
    };
    assert!(!flagged("latents/stats.json") && !flagged("latents/layers.6"));
    assert!(flagged("latents/not-a-hookpoint"));
    let det = row(&report, &ScorerKey::real("detection"));
    assert_eq!((det.n_latents, det.n_defined, det.n_unreadable), (1, 0, 1));
    assert_eq!(det.mean, None);
    assert!(report.out_dir.join("index.html").exists());

    // Not a folder: the one error.
    let missing = dir.path().join("nope");
    assert!(generate_report(&missing, &ReportConfig::default()).is_err());
    Ok(())
}

const CHROMIUM: &str = "/usr/bin/chromium";

fn dump_dom(page: &Path) -> Result<String> {
    let profile = tempfile::tempdir()?;
    let url = format!("file://{}", page.display());
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {CHROMIUM}"))?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && !dom.is_empty(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dom)
}

#[test]
fn page_renders_in_headless_chromium() -> Result<()> {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found: this test renders the report page in headless Chromium; \
         install it with `apt-get install chromium`"
    );
    let (_dir, report) = make_report()?;
    let page: PathBuf = report.out_dir.join("index.html").canonicalize()?;
    let dom = dump_dom(&page)?;
    // The script ran: rows built from the JSON data, one per latent.
    assert!(
        dom.contains("data-rendered=\"5\""),
        "script did not run:\n{dom}"
    );
    for i in 1..=5 {
        assert!(
            dom.contains(&format!("<tr data-latent=\"{}\"", id(i))),
            "no row for {}",
            id(i)
        );
    }
    // The first latent is shown, tokens shaded; injected markup stays text.
    assert!(dom.contains("class=\"tok\""), "no tokens rendered");
    assert!(
        dom.contains("background-color: rgba(255, 110, 0"),
        "no shading"
    );
    assert!(dom.contains("&lt;script&gt;alert('pwned')&lt;/script&gt;"));
    // Its logit lens: the promoted tokens with their deltas, the suppressed markup as text.
    assert!(dom.contains("(logit lens)"), "no logit lens:\n{dom}");
    assert!(dom.contains(r#"<span class="logit"> Danube</span><span class="muted"> +2.50</span>"#));
    assert!(dom.contains(r#"<span class="muted"> -1.50</span>"#));
    assert!(
        !dom.contains("<script>alert"),
        "injected script became markup"
    );
    assert_eq!(dom.matches("<script").count(), 2);
    Ok(())
}
