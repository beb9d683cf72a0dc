//! Reading one score file back into one latent's headline score.

use autointerp_core::LatentRecord;
use autointerp_score::files::parse_score_details;
use autointerp_score::metrics::{pearson, roc_auc};
use autointerp_score::{
    simulation_targets, surprisal_intervention_value, ClassifierSummary, Confusion, ExampleOutcome,
    IntruderOutcome, ScoreDetails, ScoredSimulation,
};
use serde::{Deserialize, Serialize};

/// Which kind of score file a scorer writes; decides how the headline score is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// Detection and fuzzing: one outcome per example; the score is the balanced accuracy.
    Classifier,
    /// Intruder: one outcome per trial; the score is the fraction of intruders found.
    Intruder,
    /// Simulation: groups of scored sequences; the score is the all-sequences correlation.
    Simulation,
    /// Embedding: one similarity per example; the score is the ROC AUC of the similarity.
    Embedding,
    /// Surprisal: one loss reduction per example; the score is its ROC AUC.
    Surprisal,
    /// Intervention: one judged pair of continuations per prompt; the score is the fraction
    /// whose steered continuation the judge named.
    Intervention,
    /// Surprisal intervention: the explanation's log-probability gain after steered text per
    /// prompt; the score is the mean gain per nat of KL.
    SurprisalIntervention,
}

/// One latent's score from one scorer, recomputed from its score file.
///
/// The value is the scorer's headline number (see [`ScoreKind`]), computed from the per-example
/// records exactly as the scorer computes it, except that a latent none of whose examples could
/// be scored has an undefined value (NaN) rather than 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatentScore {
    /// How the file was read.
    pub kind: ScoreKind,
    /// The headline score, failed items excluded; NaN when undefined.
    #[serde(serialize_with = "nan_as_null")]
    pub value: f64,
    /// The headline score with every failed item scored as a failure, as delphi scores them:
    /// a classifier example or an intruder trial as a wrong answer, a simulated sequence as an
    /// all-zero prediction (its truth taken from the latent's record), an embedding or
    /// surprisal example ranked last for its class. 0 where that is undefined, or where a
    /// failed sequence's truth is unknown (no record, or a file that does not say which
    /// sequences failed).
    pub value_counted: f64,
    /// Examples (trials, sequences) whose answer could not be parsed.
    pub n_failed: usize,
    /// Examples (trials, sequences) in the file, failed ones included.
    pub n_items: usize,
    /// Confusion counts, metrics and AUC of a classifier file.
    pub classifier: Option<ClassifierSummary>,
    /// `(activating, probability)` of each classifier example that has a probability, for
    /// pooled ROC curves.
    #[serde(skip)]
    pub probabilities: Vec<(bool, f64)>,
}

impl LatentScore {
    /// Whether the value is defined.
    pub fn is_defined(&self) -> bool {
        self.value.is_finite()
    }
}

pub(crate) fn nan_as_null<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if x.is_finite() {
        s.serialize_f64(*x)
    } else {
        s.serialize_none()
    }
}

/// Reads a score file's JSON. `scorer` (the folder's name) decides the kind of an empty list;
/// `record`, the latent's when known, gives the truth of failed simulated sequences.
pub(crate) fn parse_score(
    scorer: &str,
    bytes: &[u8],
    record: Option<&LatentRecord>,
) -> Result<LatentScore, String> {
    let details = parse_score_details(scorer, bytes).map_err(|e| e.to_string())?;
    Ok(match &details {
        ScoreDetails::Classifier { outcomes, summary } => classifier(outcomes, summary),
        ScoreDetails::Intruder { outcomes } => intruder(outcomes),
        ScoreDetails::Simulation { groups } => simulation(groups, record),
        ScoreDetails::Embedding { outcomes } => auc_score(
            ScoreKind::Embedding,
            outcomes
                .iter()
                .map(|o| (o.activating, o.similarity.map(f64::from))),
        ),
        ScoreDetails::Surprisal { outcomes } => auc_score(
            ScoreKind::Surprisal,
            outcomes.iter().map(|o| (o.activating, o.loss_reduction)),
        ),
        ScoreDetails::Intervention { trials } => {
            let mut s = intruder_like(trials.iter().map(|t| t.correct));
            s.kind = ScoreKind::Intervention;
            s
        }
        ScoreDetails::SurprisalIntervention { outcomes } => {
            let value = surprisal_intervention_value(outcomes);
            let n_failed = details.n_failed();
            LatentScore {
                kind: ScoreKind::SurprisalIntervention,
                value,
                // A failed prompt counts as no gain.
                value_counted: or_zero(Some(if outcomes.is_empty() || !value.is_finite() {
                    0.0
                } else {
                    value * (outcomes.len() - n_failed) as f64 / outcomes.len() as f64
                })),
                n_failed,
                n_items: outcomes.len(),
                classifier: None,
                probabilities: Vec::new(),
            }
        }
    })
}

/// `x`, or 0 when undefined.
fn or_zero(x: Option<f64>) -> f64 {
    x.filter(|x| x.is_finite()).unwrap_or(0.0)
}

fn classifier(outcomes: &[ExampleOutcome], summary: &ClassifierSummary) -> LatentScore {
    let scored = summary.confusion.scored();
    // A failed example counted as the wrong answer.
    let counted = Confusion::from_labels(
        &outcomes.iter().map(|o| o.activating).collect::<Vec<_>>(),
        &outcomes
            .iter()
            .map(|o| Some(o.prediction.unwrap_or(!o.activating)))
            .collect::<Vec<_>>(),
    );
    LatentScore {
        kind: ScoreKind::Classifier,
        value: if scored == 0 {
            f64::NAN
        } else {
            summary.metrics.balanced_accuracy
        },
        value_counted: or_zero(Some(counted.metrics().balanced_accuracy)),
        n_failed: summary.confusion.failed,
        n_items: outcomes.len(),
        classifier: Some(*summary),
        probabilities: outcomes
            .iter()
            .filter(|o| !o.failed())
            .filter_map(|o| o.probability.map(|p| (o.activating, f64::from(p))))
            .filter(|(_, p)| p.is_finite())
            .collect(),
    }
}

fn intruder(outcomes: &[IntruderOutcome]) -> LatentScore {
    intruder_like(outcomes.iter().map(|o| o.correct))
}

/// Accuracy over trials answered (a failed trial counted wrong in `value_counted`).
fn intruder_like(correct: impl Iterator<Item = Option<bool>>) -> LatentScore {
    let correct: Vec<Option<bool>> = correct.collect();
    let scored = correct.iter().filter(|c| c.is_some()).count();
    let right = correct.iter().filter(|&&c| c == Some(true)).count();
    let ratio = |n: usize| (n > 0).then(|| right as f64 / n as f64);
    LatentScore {
        kind: ScoreKind::Intruder,
        value: ratio(scored).unwrap_or(f64::NAN),
        value_counted: or_zero(ratio(correct.len())),
        n_failed: correct.len() - scored,
        n_items: correct.len(),
        classifier: None,
        probabilities: Vec::new(),
    }
}

fn simulation(groups: &[ScoredSimulation], record: Option<&LatentRecord>) -> LatentScore {
    let all = groups.iter().find(|g| g.distance == 0).or(groups.first());
    let Some(g) = all else {
        return LatentScore {
            kind: ScoreKind::Simulation,
            value: f64::NAN,
            value_counted: 0.0,
            n_failed: 0,
            n_items: 0,
            classifier: None,
            probabilities: Vec::new(),
        };
    };
    let value = g.ev_correlation_score.0.unwrap_or(f64::NAN);
    let value_counted = if g.n_failed == 0 {
        or_zero(Some(value))
    } else {
        or_zero(record.and_then(|r| zeros_for_failed(g, r)))
    };
    LatentScore {
        kind: ScoreKind::Simulation,
        value,
        value_counted,
        n_failed: g.n_failed,
        n_items: g.scored_sequence_simulations.len() + g.n_failed,
        classifier: None,
        probabilities: Vec::new(),
    }
}

/// The all-sequences correlation with each failed sequence predicted all zero (delphi's
/// placeholder), its truth from `record`; `None` when the group does not say which sequences
/// failed or they are not the record's.
fn zeros_for_failed(all: &ScoredSimulation, record: &LatentRecord) -> Option<f64> {
    let targets = simulation_targets(record);
    if all.failed_sequences.len() != all.n_failed
        || targets.len() != all.n_failed + all.scored_sequence_simulations.len()
    {
        return None;
    }
    let (mut truth, mut pred) = (Vec::new(), Vec::new());
    for s in &all.scored_sequence_simulations {
        truth.extend(s.true_activations.iter().map(|&x| f64::from(x)));
        pred.extend(
            s.simulation
                .expected_activations
                .iter()
                .map(|&x| f64::from(x)),
        );
    }
    for &i in &all.failed_sequences {
        let t = &targets.get(i)?.true_activations;
        truth.extend(t.iter().map(|&x| f64::from(x)));
        pred.extend(std::iter::repeat_n(0.0, t.len()));
    }
    pearson(&truth, &pred)
}

fn auc_score(kind: ScoreKind, items: impl Iterator<Item = (bool, Option<f64>)>) -> LatentScore {
    let mut n_items = 0;
    let (mut labels, mut scores) = (Vec::new(), Vec::new());
    let (mut all_labels, mut all_scores) = (Vec::new(), Vec::new());
    for (activating, x) in items {
        n_items += 1;
        let x = x.filter(|x| x.is_finite());
        if let Some(x) = x {
            labels.push(activating);
            scores.push(x);
        }
        // A failed example ranked last for its class: below every other if activating.
        let worst = if activating {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        all_labels.push(activating);
        all_scores.push(x.unwrap_or(worst));
    }
    LatentScore {
        kind,
        value: roc_auc(&labels, &scores).unwrap_or(f64::NAN),
        value_counted: or_zero(roc_auc(&all_labels, &all_scores)),
        n_failed: n_items - labels.len(),
        n_items,
        classifier: None,
        probabilities: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_delphi_classifier_records() {
        let delphi = br#"[
            {"str_tokens":["x"],"activations":[2.0],"distance":1,"activating":true,"prediction":true,"probability":0.9,"correct":true},
            {"str_tokens":["y"],"activations":[0.0],"distance":-1.0,"activating":false,"prediction":false,"probability":0.2,"correct":true},
            {"str_tokens":["z"],"activations":[0.0],"distance":-1,"activating":false,"prediction":null,"probability":null,"correct":null}
        ]"#;
        let s = parse_score("detection", delphi, None).unwrap();
        assert_eq!(s.kind, ScoreKind::Classifier);
        assert_eq!((s.value, s.n_failed, s.n_items), (1.0, 1, 3));
        assert_eq!(
            s.probabilities,
            vec![(true, 0.8999999761581421), (false, 0.20000000298023224)]
        );
    }

    #[test]
    fn empty_lists_and_garbage() {
        let s = parse_score("fuzz", b"[]", None).unwrap();
        assert!(s.value.is_nan());
        assert_eq!(s.kind, ScoreKind::Classifier);
        assert!(parse_score("mystery", b"[]", None)
            .unwrap_err()
            .contains("mystery"));
        assert!(parse_score("detection", b"{\"a\":1}", None).is_err());
        assert!(parse_score("detection", b"[{\"a\":1}]", None).is_err());
        assert!(parse_score("detection", b"not json", None).is_err());
        assert!(parse_score(
            "detection",
            br#"[{"str_tokens":3,"activating":true}]"#,
            None
        )
        .is_err());
    }
}
