//! Reading one score file back into one latent's headline score.

use autointerp_score::metrics::roc_auc;
use autointerp_score::{
    ClassifierSummary, EmbeddingOutcome, ExampleOutcome, IntruderOutcome, ScoredSimulation,
    SurprisalOutcome,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}

impl ScoreKind {
    /// The kind delphi's scorer of this name writes, for files that are empty lists.
    pub fn from_scorer_name(name: &str) -> Option<Self> {
        match name {
            "detection" | "fuzz" | "fuzzing" => Some(Self::Classifier),
            "intruder" => Some(Self::Intruder),
            "simulation" => Some(Self::Simulation),
            "embedding" => Some(Self::Embedding),
            "surprisal" => Some(Self::Surprisal),
            _ => None,
        }
    }

    /// The kind of a list of records, told by the fields of its first record.
    fn sniff(first: &Value) -> Option<Self> {
        let has = |k: &str| first.get(k).is_some();
        if has("scored_sequence_simulations") {
            Some(Self::Simulation)
        } else if has("correct_index") || has("sample") {
            Some(Self::Intruder)
        } else if has("similarity") {
            Some(Self::Embedding)
        } else if has("loss_reduction") || has("no_explanation") {
            Some(Self::Surprisal)
        } else if has("activating") && has("str_tokens") {
            Some(Self::Classifier)
        } else {
            None
        }
    }
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
    /// The headline score; NaN when undefined.
    #[serde(serialize_with = "nan_as_null")]
    pub value: f64,
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

/// Reads a score file's JSON. `scorer` (the folder's name) decides the kind of an empty list.
pub(crate) fn parse_score(scorer: &str, bytes: &[u8]) -> Result<LatentScore, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("expected a JSON list of per-example records".into());
    };
    let kind = match items.first() {
        Some(first) => ScoreKind::sniff(first).ok_or_else(|| {
            "records are not those of a known scorer (detection, fuzz, intruder, simulation, \
             embedding, surprisal)"
                .to_string()
        })?,
        None => ScoreKind::from_scorer_name(scorer).ok_or_else(|| {
            format!("empty list, and {scorer:?} is not a known scorer name to tell its kind")
        })?,
    };
    let list = Value::Array(items);
    let bad = |e: serde_json::Error| format!("malformed {kind:?} records: {e}");
    Ok(match kind {
        ScoreKind::Classifier => {
            classifier(&serde_json::from_value::<Vec<ExampleOutcome>>(list).map_err(bad)?)
        }
        ScoreKind::Intruder => {
            intruder(&serde_json::from_value::<Vec<IntruderOutcome>>(list).map_err(bad)?)
        }
        ScoreKind::Simulation => {
            simulation(&serde_json::from_value::<Vec<ScoredSimulation>>(list).map_err(bad)?)
        }
        ScoreKind::Embedding => {
            let o: Vec<EmbeddingOutcome> = serde_json::from_value(list).map_err(bad)?;
            auc_score(
                ScoreKind::Embedding,
                o.iter()
                    .map(|o| (o.activating, o.similarity.map(f64::from))),
            )
        }
        ScoreKind::Surprisal => {
            let o: Vec<SurprisalOutcome> = serde_json::from_value(list).map_err(bad)?;
            auc_score(
                ScoreKind::Surprisal,
                o.iter().map(|o| (o.activating, o.loss_reduction)),
            )
        }
    })
}

fn classifier(outcomes: &[ExampleOutcome]) -> LatentScore {
    let summary = ClassifierSummary::from_outcomes(outcomes);
    let scored = summary.confusion.scored();
    LatentScore {
        kind: ScoreKind::Classifier,
        value: if scored == 0 {
            f64::NAN
        } else {
            summary.metrics.balanced_accuracy
        },
        n_failed: summary.confusion.failed,
        n_items: outcomes.len(),
        classifier: Some(summary),
        probabilities: outcomes
            .iter()
            .filter(|o| !o.failed())
            .filter_map(|o| o.probability.map(|p| (o.activating, f64::from(p))))
            .filter(|(_, p)| p.is_finite())
            .collect(),
    }
}

fn intruder(outcomes: &[IntruderOutcome]) -> LatentScore {
    let scored = outcomes.iter().filter(|o| o.correct.is_some()).count();
    let right = outcomes.iter().filter(|o| o.correct == Some(true)).count();
    LatentScore {
        kind: ScoreKind::Intruder,
        value: if scored == 0 {
            f64::NAN
        } else {
            right as f64 / scored as f64
        },
        n_failed: outcomes.len() - scored,
        n_items: outcomes.len(),
        classifier: None,
        probabilities: Vec::new(),
    }
}

fn simulation(groups: &[ScoredSimulation]) -> LatentScore {
    let all = groups.iter().find(|g| g.distance == 0).or(groups.first());
    let (value, n_failed, n_items) = match all {
        Some(g) => (
            g.ev_correlation_score.0.unwrap_or(f64::NAN),
            g.n_failed,
            g.scored_sequence_simulations.len() + g.n_failed,
        ),
        None => (f64::NAN, 0, 0),
    };
    LatentScore {
        kind: ScoreKind::Simulation,
        value,
        n_failed,
        n_items,
        classifier: None,
        probabilities: Vec::new(),
    }
}

fn auc_score(kind: ScoreKind, items: impl Iterator<Item = (bool, Option<f64>)>) -> LatentScore {
    let mut n_items = 0;
    let (mut labels, mut scores) = (Vec::new(), Vec::new());
    for (activating, x) in items {
        n_items += 1;
        if let Some(x) = x.filter(|x| x.is_finite()) {
            labels.push(activating);
            scores.push(x);
        }
    }
    LatentScore {
        kind,
        value: roc_auc(&labels, &scores).unwrap_or(f64::NAN),
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
        let s = parse_score("detection", delphi).unwrap();
        assert_eq!(s.kind, ScoreKind::Classifier);
        assert_eq!((s.value, s.n_failed, s.n_items), (1.0, 1, 3));
        assert_eq!(
            s.probabilities,
            vec![(true, 0.8999999761581421), (false, 0.20000000298023224)]
        );
    }

    #[test]
    fn empty_lists_and_garbage() {
        let s = parse_score("fuzz", b"[]").unwrap();
        assert!(s.value.is_nan());
        assert_eq!(s.kind, ScoreKind::Classifier);
        assert!(parse_score("mystery", b"[]")
            .unwrap_err()
            .contains("mystery"));
        assert!(parse_score("detection", b"{\"a\":1}").is_err());
        assert!(parse_score("detection", b"[{\"a\":1}]").is_err());
        assert!(parse_score("detection", b"not json").is_err());
        assert!(parse_score("detection", br#"[{"str_tokens":3,"activating":true}]"#).is_err());
    }
}
