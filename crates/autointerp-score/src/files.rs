//! Score files in delphi's layout.
//!
//! delphi writes one file per latent and scorer, `scores/<scorer>/<latent>.txt`, holding
//! `orjson.dumps(result.score)` — compact JSON — with `/` in the latent's name replaced by `--`.
//! For detection and fuzzing the score is the list of per-example `ClassifierOutput`s (see
//! [`ExampleOutcome`]); for intruder a list of `IntruderResult`s (see
//! [`IntruderOutcome`](crate::IntruderOutcome)); for simulation a list of `ScoredSimulation`s
//! (see [`ScoredSimulation`](crate::ScoredSimulation)). delphi's `log/result_analysis.py` reads
//! the classifier files back by these field names.

use std::path::{Path, PathBuf};

use autointerp_core::LatentId;
use serde::Serialize;

use crate::{Error, ExampleOutcome, Result};

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
