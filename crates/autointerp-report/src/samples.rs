//! Best-of-K against the first sample: a run with `--explainer-samples K` writes, beside each
//! latent's kept explanation, the first sample's score on the same test examples by the
//! scorer that chose (`samples/first/<scorer>/<latent>.txt`). The gain is the mean over latents
//! of (kept − first), with its bootstrap interval; latents where the first sample was kept
//! count as a gain of 0, as they should.

use std::path::Path;

use serde::Serialize;

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

/// The gains of the best-of-K run in `root`, one per scorer under `samples/first/`; empty for
/// a run without samples.
pub(crate) fn sample_gains(root: &Path, bootstrap: &Bootstrap) -> Vec<SampleGain> {
    let Ok(dirs) = std::fs::read_dir(root.join("samples").join("first")) else {
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
            let first_dir = root.join("samples").join("first").join(&scorer);
            let kept_dir = root.join("scores").join(&scorer);
            let mut names: Vec<_> = std::fs::read_dir(&first_dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            let (mut kept, mut first) = (Vec::new(), Vec::new());
            for name in names {
                let pair =
                    read(&kept_dir.join(&name), &scorer).zip(read(&first_dir.join(&name), &scorer));
                if let Some((k, f)) = pair {
                    kept.push(k);
                    first.push(f);
                }
            }
            let diffs: Vec<f64> = kept.iter().zip(&first).map(|(k, f)| k - f).collect();
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
