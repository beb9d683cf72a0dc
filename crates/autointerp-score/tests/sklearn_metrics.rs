//! Metrics against values computed once with scikit-learn and numpy
//! (`tests/fixtures/make_metric_fixtures.py` wrote `metric_fixtures.json`; no Python runs here).

use autointerp_score::metrics::{
    absolute_dev_explained_score, pearson, percentile, r2_score, roc_auc, rsquared_score,
};
use autointerp_score::Confusion;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    classification: Vec<Classification>,
    auc: Vec<Auc>,
    regression: Vec<Regression>,
    percentile: Vec<Percentile>,
}

#[derive(Deserialize)]
struct Classification {
    y_true: Vec<bool>,
    y_pred: Vec<bool>,
    accuracy: f64,
    balanced_accuracy: f64,
    precision: f64,
    recall: f64,
    f1: f64,
}

#[derive(Deserialize)]
struct Auc {
    y_true: Vec<bool>,
    scores: Vec<f64>,
    auc: f64,
}

#[derive(Deserialize)]
struct Regression {
    y_true: Vec<f64>,
    y_pred: Vec<f64>,
    pearson: Option<f64>,
    r2: f64,
    rsquared_openai: Option<f64>,
    absolute_dev_explained: Option<f64>,
}

#[derive(Deserialize)]
struct Percentile {
    values: Vec<f64>,
    q: Vec<f64>,
    expected: Vec<f64>,
}

fn fixtures() -> Fixtures {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metric_fixtures.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture file"))
        .expect("fixture JSON")
}

fn assert_close(got: f64, want: f64, what: &str, case: usize) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "case {case} {what}: got {got}, sklearn {want}"
    );
}

fn assert_close_opt(got: Option<f64>, want: Option<f64>, what: &str, case: usize) {
    match (got, want) {
        (Some(g), Some(w)) => assert!(
            (g - w).abs() <= 1e-9 * w.abs().max(1.0),
            "case {case} {what}: {g} vs {w}"
        ),
        (None, None) => {}
        _ => panic!("case {case} {what}: got {got:?}, numpy {want:?}"),
    }
}

#[test]
fn classification_matches_sklearn() {
    let f = fixtures();
    assert_eq!(f.classification.len(), 40);
    for (i, c) in f.classification.iter().enumerate() {
        let pred: Vec<Option<bool>> = c.y_pred.iter().map(|&p| Some(p)).collect();
        let m = Confusion::from_labels(&c.y_true, &pred).metrics();
        assert_close(m.accuracy, c.accuracy, "accuracy", i);
        assert_close(
            m.balanced_accuracy,
            c.balanced_accuracy,
            "balanced accuracy",
            i,
        );
        assert_close(m.precision, c.precision, "precision", i);
        assert_close(m.recall, c.recall, "recall", i);
        assert_close(m.f1, c.f1, "f1", i);
    }
}

#[test]
fn failed_examples_are_excluded_not_counted_wrong() {
    let f = fixtures();
    let c = &f.classification[7];
    // Add failed examples of both classes: the metrics must not move.
    let mut truth = c.y_true.clone();
    let mut pred: Vec<Option<bool>> = c.y_pred.iter().map(|&p| Some(p)).collect();
    truth.extend([true, false, true]);
    pred.extend([None, None, None]);
    let conf = Confusion::from_labels(&truth, &pred);
    let m = conf.metrics();
    assert_eq!(conf.failed, 3);
    assert_close(
        m.balanced_accuracy,
        c.balanced_accuracy,
        "balanced accuracy",
        7,
    );
    assert_close(m.f1, c.f1, "f1", 7);
}

#[test]
fn auc_matches_sklearn_with_ties() {
    for (i, c) in fixtures().auc.iter().enumerate() {
        let got = roc_auc(&c.y_true, &c.scores).expect("both classes present");
        assert!((got - c.auc).abs() < 1e-12, "case {i}: {got} vs {}", c.auc);
    }
}

#[test]
fn regression_matches_numpy_and_sklearn() {
    for (i, c) in fixtures().regression.iter().enumerate() {
        assert_close_opt(pearson(&c.y_true, &c.y_pred), c.pearson, "pearson", i);
        assert_close_opt(r2_score(&c.y_true, &c.y_pred), Some(c.r2), "r2", i);
        assert_close_opt(
            rsquared_score(&c.y_true, &c.y_pred),
            c.rsquared_openai,
            "OpenAI rsquared",
            i,
        );
        assert_close_opt(
            absolute_dev_explained_score(&c.y_true, &c.y_pred),
            c.absolute_dev_explained,
            "absolute deviation explained",
            i,
        );
    }
}

#[test]
fn percentile_matches_numpy() {
    for (i, c) in fixtures().percentile.iter().enumerate() {
        for (q, want) in c.q.iter().zip(&c.expected) {
            assert_close(
                percentile(&c.values, *q).unwrap(),
                *want,
                &format!("p{q}"),
                i,
            );
        }
    }
}
