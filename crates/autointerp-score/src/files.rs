//! Score files in delphi's layout.
//!
//! delphi writes one file per latent and scorer, `scores/<scorer>/<latent>.txt`, holding
//! `orjson.dumps(result.score)` — compact JSON — with `/` in the latent's name replaced by `--`.
//! For detection and fuzzing the score is the list of per-example `ClassifierOutput`s (see
//! [`ExampleOutcome`]); for intruder a list of `IntruderResult`s (see
//! [`IntruderOutcome`](crate::IntruderOutcome)); for simulation a list of `ScoredSimulation`s
//! (see [`ScoredSimulation`](crate::ScoredSimulation)). delphi's `log/result_analysis.py` reads
//! the classifier files back by these field names.
//!
//! [`read_score_file`] reads any of them back into [`ScoreDetails`], telling the kind by the
//! records' fields, so that a rerun can retry the failed items of a file and a report can
//! summarise files of any scorer.

use std::path::{Path, PathBuf};

use autointerp_core::LatentId;
use serde::de::Error as _;
use serde::Serialize;
use serde_json::Value;

use crate::{ClassifierSummary, Error, ExampleOutcome, Result, ScoreDetails};

pub use autointerp_core::layout::score_file_path;

/// Writes `score` as compact JSON to [`score_file_path`], atomically, creating the folders.
pub fn write_score_file<T: Serialize + ?Sized>(
    scores_dir: &Path,
    scorer: &str,
    latent: &LatentId,
    score: &T,
) -> Result<PathBuf> {
    let path = score_file_path(scores_dir, scorer, latent);
    let json = serde_json::to_vec(score).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    autointerp_core::fs::write_atomic(&path, &json)?;
    Ok(path)
}

/// Reads a detection or fuzzing score file (ours or delphi's).
pub fn read_classifier_file(path: &Path) -> Result<Vec<ExampleOutcome>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads any score file (ours or delphi's) back into its per-example outcomes; see
/// [`parse_score_details`]. `scorer` is the file's folder name.
pub fn read_score_file(path: &Path, scorer: &str) -> Result<ScoreDetails> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_score_details(scorer, &bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The kinds of [`ScoreDetails`], to tell a file's apart.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Classifier,
    Intruder,
    Simulation,
    Embedding,
    Surprisal,
    Intervention,
    SurprisalIntervention,
}

impl Kind {
    /// The kind delphi's scorer of this name writes, for files that are empty lists.
    fn of_scorer(name: &str) -> Option<Self> {
        match name {
            "detection" | "fuzz" | "fuzzing" => Some(Self::Classifier),
            "intruder" => Some(Self::Intruder),
            "simulation" => Some(Self::Simulation),
            "embedding" => Some(Self::Embedding),
            "surprisal" => Some(Self::Surprisal),
            crate::INTERVENTION => Some(Self::Intervention),
            crate::SURPRISAL_INTERVENTION => Some(Self::SurprisalIntervention),
            _ => None,
        }
    }

    /// The kind of a list of records, told by the fields of its first record. Embedding is
    /// tried before surprisal and classifier because its records share their other fields.
    fn sniff(first: &Value) -> Option<Self> {
        let has = |k: &str| first.get(k).is_some();
        if has("scored_sequence_simulations") {
            Some(Self::Simulation)
        } else if has("steered_first") {
            Some(Self::Intervention)
        } else if has("steered_logprob") {
            Some(Self::SurprisalIntervention)
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

/// The per-example outcomes in a score file's JSON: classifier outcomes (detection, fuzzing),
/// intruder trials, simulation groups, embedding or surprisal outcomes, told by the fields of
/// the first record. An empty list takes the kind of the scorer named `scorer` (the file's
/// folder: `detection`, `fuzz`, `intruder`, …); a classifier file's summary is recomputed from
/// its outcomes.
///
/// # Errors
/// Not JSON, not a list, records of no known scorer, an empty list under an unknown scorer
/// name, or records missing their fields.
///
/// ```
/// use autointerp_score::{files::parse_score_details, ScoreDetails};
/// let json = br#"[{"str_tokens":["x"],"activations":[0.0],"distance":-1,"activating":false,
///                  "prediction":null,"probability":null,"correct":null}]"#;
/// let details = parse_score_details("detection", json)?;
/// assert!(matches!(details, ScoreDetails::Classifier { .. }));
/// assert_eq!((details.n_failed(), details.n_items()), (1, 1));
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn parse_score_details(
    scorer: &str,
    bytes: &[u8],
) -> std::result::Result<ScoreDetails, serde_json::Error> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| serde_json::Error::custom(format!("not JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(serde_json::Error::custom(
            "expected a JSON list of per-example records",
        ));
    };
    let kind = match items.first() {
        Some(first) => Kind::sniff(first).ok_or_else(|| {
            serde_json::Error::custom(
                "records are not those of a known scorer (detection, fuzz, intruder, \
                 simulation, embedding, surprisal, intervention, surprisal-intervention)",
            )
        })?,
        None => Kind::of_scorer(scorer).ok_or_else(|| {
            serde_json::Error::custom(format!(
                "empty list, and {scorer:?} is not a known scorer name to tell its kind"
            ))
        })?,
    };
    let list = Value::Array(items);
    let bad = |e: serde_json::Error| {
        serde_json::Error::custom(format!("malformed {kind:?} records: {e}"))
    };
    Ok(match kind {
        Kind::Classifier => {
            let outcomes: Vec<ExampleOutcome> = serde_json::from_value(list).map_err(bad)?;
            let summary = ClassifierSummary::from_outcomes(&outcomes);
            ScoreDetails::Classifier { outcomes, summary }
        }
        Kind::Intruder => ScoreDetails::Intruder {
            outcomes: serde_json::from_value(list).map_err(bad)?,
        },
        Kind::Simulation => ScoreDetails::Simulation {
            groups: serde_json::from_value(list).map_err(bad)?,
        },
        Kind::Embedding => ScoreDetails::Embedding {
            outcomes: serde_json::from_value(list).map_err(bad)?,
        },
        Kind::Surprisal => ScoreDetails::Surprisal {
            outcomes: serde_json::from_value(list).map_err(bad)?,
        },
        Kind::Intervention => ScoreDetails::Intervention {
            trials: serde_json::from_value(list).map_err(bad)?,
        },
        Kind::SurprisalIntervention => ScoreDetails::SurprisalIntervention {
            outcomes: serde_json::from_value(list).map_err(bad)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_core::HookPoint;

    #[test]
    fn writes_where_delphi_does_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let latent = LatentId::new(HookPoint::Mlp(3), 17);
        let o = ExampleOutcome {
            str_tokens: vec!["a".into(), " b".into()],
            activations: vec![0.0, 2.5],
            quantile: Some(2),
            distance: None,
            activating: true,
            prediction: Some(false),
            probability: None,
            correct: Some(false),
            text: Some("a b".into()),
        };
        let path =
            write_score_file(dir.path(), "detection", &latent, std::slice::from_ref(&o)).unwrap();
        assert_eq!(
            path,
            dir.path()
                .join("detection")
                .join("layers.3.mlp_latent17.txt")
        );
        assert_eq!(read_classifier_file(&path).unwrap(), vec![o]);
        assert!(matches!(
            read_classifier_file(&dir.path().join("nope.txt")),
            Err(Error::Io { .. })
        ));
    }
}
