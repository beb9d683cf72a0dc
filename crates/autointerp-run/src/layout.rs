//! The failure log of a run, and the explanations already written. The folder layout itself
//! is `autointerp_core::layout::Layout`, shared with the report.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use autointerp_core::layout::Layout;
use autointerp_core::{Explanation, LatentId};

use crate::error::Context;
use crate::Result;

/// The usable explanations in `layout`'s `explanations/` (or `random_explanations/`), by latent;
/// none when the folder does not exist.
pub fn load_explanations(
    layout: &Layout,
    control: bool,
) -> Result<BTreeMap<LatentId, Explanation>> {
    let dir = layout.explanations(control);
    if !dir.is_dir() {
        return Ok(BTreeMap::new());
    }
    let loaded = autointerp_explain::load_explanations(&dir)?;
    Ok(loaded
        .explanations
        .into_iter()
        .map(|e| (e.latent, e))
        .collect())
}

/// One line of `failures.jsonl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// The latent, e.g. `layers.6_latent12`; absent when the failure concerns no single latent
    /// (an unreadable split file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<String>,
    /// `record`, `explain`, `score/<scorer>` or `random/<scorer>`.
    pub stage: String,
    /// What went wrong: for a score with failed items, the first of this attempt's errors.
    pub error: String,
    /// The explainer's answer, when it held no explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// For a score file written (or kept) with failed items: how many (examples, trials,
    /// sequences). The same run started again asks for exactly those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
}

/// `failures.jsonl`: failures of the latents this command did not finish. Lines are appended
/// whole, one `write` each.
#[derive(Debug)]
pub struct FailureLog {
    path: PathBuf,
    file: std::fs::File,
    written: usize,
}

impl FailureLog {
    /// Opens the log, dropping the lines of `retried` latents (they are attempted again) and lines
    /// without a latent; other lines stay. The kept lines are rewritten atomically.
    pub fn open(path: &Path, retried: &HashSet<LatentId>) -> Result<Self> {
        let mut kept = Vec::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                let Ok(f) = serde_json::from_str::<Failure>(line) else {
                    continue;
                };
                let keep = f
                    .latent
                    .as_deref()
                    .and_then(|l| l.parse::<LatentId>().ok())
                    .is_some_and(|id| !retried.contains(&id));
                if keep {
                    kept.push(line.to_string());
                }
            }
        }
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        autointerp_core::fs::write_atomic(path, body.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written: 0,
        })
    }

    /// Appends one failure.
    pub fn record(&mut self, failure: &Failure) -> Result<()> {
        let mut line = serde_json::to_string(failure)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.written += 1;
        Ok(())
    }

    /// Failures recorded by this command.
    pub fn written(&self) -> usize {
        self.written
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_core::HookPoint;

    #[test]
    fn the_log_keeps_only_latents_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failures.jsonl");
        let a = LatentId::new(HookPoint::Residual(0), 1);
        let b = LatentId::new(HookPoint::Residual(0), 2);
        let f = |id: &LatentId| Failure {
            latent: Some(id.to_string()),
            stage: "explain".into(),
            error: "x".into(),
            answer: None,
            items: None,
        };
        {
            let mut log = FailureLog::open(&path, &HashSet::new()).unwrap();
            log.record(&f(&a)).unwrap();
            log.record(&f(&b)).unwrap();
            log.record(&Failure {
                latent: None,
                stage: "record".into(),
                error: "bad split".into(),
                answer: None,
                items: None,
            })
            .unwrap();
        }
        let log = FailureLog::open(&path, &HashSet::from([a])).unwrap();
        assert_eq!(log.written(), 0);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("latent2"));
    }
}
