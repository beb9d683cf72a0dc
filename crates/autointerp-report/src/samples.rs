//! Best-of-K against the first sample: a run with `--explainer-samples K` writes, beside each
//! latent's kept explanation, the first sample's score on the same test examples by the
//! scorer that chose (`samples/first/<scorer>/<latent>.txt`). The gain is the mean over latents
//! of (kept − first), with its bootstrap interval; latents where the first sample was kept
//! count as a gain of 0, as they should.

use std::ffi::OsString;
use std::path::Path;

use autointerp_score::score_file_path;
use serde::Serialize;

use crate::results::{Results, ScorerKey};
use crate::scores::parse_score;
use crate::summary::{mean, mean_ci};
use crate::{Bootstrap, ConfidenceInterval};

/// The gain of best-of-K over the first sample on one scorer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleGain {
    /// The scorer that chose (and measures the gain).
    pub scorer: String,
    /// Latents with a defined score for both the kept and the first sample.
    pub n_paired: usize,
    /// Mean score of the kept explanations over those latents.
    pub kept_mean: Option<f64>,
    /// Mean score of the first samples over those latents.
    pub first_mean: Option<f64>,
    /// Mean of (kept − first), with its bootstrap interval.
    pub paired_difference: Option<ConfidenceInterval>,
}

fn read(path: &Path, scorer: &str) -> Option<f64> {
    let bytes = std::fs::read(path).ok()?;
    match parse_score(scorer, &bytes, None) {
        Ok(s) if s.is_defined() => Some(s.value),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable score file");
            None
        }
    }
}

/// The gains of the best-of-K run of `results`, one per scorer under `samples/first/`; empty
/// for a run without samples. The kept explanations' scores are those `results` loaded from
/// `scores/<scorer>/`; only the first samples' files are read here.
pub(crate) fn sample_gains(results: &Results, bootstrap: &Bootstrap) -> Vec<SampleGain> {
    let first_root = results.root.join("samples").join("first");
    let Ok(dirs) = std::fs::read_dir(&first_root) else {
        return Vec::new();
    };
    let mut scorers: Vec<String> = dirs
        .filter_map(|d| d.ok())
        .filter(|d| d.path().is_dir())
        .filter_map(|d| d.file_name().to_str().map(str::to_owned))
        .collect();
    scorers.sort();
    scorers
        .into_iter()
        .map(|scorer| {
            let key = ScorerKey::real(&scorer);
            // In file-name order, as the files list (the bootstrap resamples in this order).
            let mut pairs: Vec<(OsString, f64, f64)> = results
                .latents
                .values()
                .filter_map(|l| {
                    let kept = l.scores.get(&key).filter(|s| s.is_defined())?.value;
                    let path = score_file_path(&first_root, &scorer, &l.id);
                    let first = read(&path, &scorer)?;
                    Some((path.file_name()?.to_owned(), kept, first))
                })
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let kept: Vec<f64> = pairs.iter().map(|p| p.1).collect();
            let first: Vec<f64> = pairs.iter().map(|p| p.2).collect();
            let diffs: Vec<f64> = pairs.iter().map(|p| p.1 - p.2).collect();
            SampleGain {
                scorer,
                n_paired: diffs.len(),
                kept_mean: mean(&kept),
                first_mean: mean(&first),
                paired_difference: mean_ci(&diffs, bootstrap),
            }
        })
        .collect()
}
