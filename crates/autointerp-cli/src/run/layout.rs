//! Where a run's files go, what already exists, and the failure log.
//!
//! ```text
//! <results>/<name>/
//!   run_config.json                  the effective settings
//!   latents/<hookpoint>/...          the latent cache (split files + config.json)
//!   latents/<latent>.json            each latent's record: train, test, non-activating examples
//!   explanations/<latent>.txt        delphi's format: the explanation as a JSON string
//!   random_explanations/<latent>.txt the other latent's explanation its random control used
//!   scores/<scorer>/<latent>.txt     delphi's format
//!   scores/random/<scorer>/<latent>.txt
//!   failures.jsonl                   one line per failed stage of a latent
//! ```

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use autointerp_core::{Explanation, LatentId, LatentRecord};
use autointerp_score::score_file_path;

/// The folders and files of one results directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The results directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `run_config.json`.
    pub fn run_config(&self) -> PathBuf {
        self.root.join("run_config.json")
    }

    /// `latents/<latent>.json`.
    pub fn record(&self, id: &LatentId) -> PathBuf {
        self.root.join("latents").join(format!("{id}.json"))
    }

    /// `explanations/`, or `random_explanations/` for the random control (outside
    /// `explanations/`, which holds only each latent's own).
    pub fn explanations(&self, control: bool) -> PathBuf {
        self.root.join(if control {
            "random_explanations"
        } else {
            "explanations"
        })
    }

    /// `scores/`, or `scores/random/` for the random control.
    pub fn scores(&self, control: bool) -> PathBuf {
        let dir = self.root.join("scores");
        if control {
            dir.join("random")
        } else {
            dir
        }
    }

    /// `failures.jsonl`.
    pub fn failures(&self) -> PathBuf {
        self.root.join("failures.jsonl")
    }

    /// Whether `scorer`'s file for `id` exists.
    pub fn has_score(&self, scorer: &str, id: &LatentId, control: bool) -> bool {
        score_file_path(&self.scores(control), scorer, id).is_file()
    }

    /// The usable explanations in `explanations/` (or `random_explanations/`), by latent; none
    /// when the folder does not exist.
    pub fn load_explanations(&self, control: bool) -> Result<BTreeMap<LatentId, Explanation>> {
        let dir = self.explanations(control);
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

    /// Writes a record as `latents/<latent>.json`, atomically.
    pub fn write_record(&self, record: &LatentRecord) -> Result<()> {
        let json = serde_json::to_vec(record)?;
        autointerp_core::fs::write_atomic(&self.record(&record.id), &json)?;
        Ok(())
    }

    /// Removes the temporary files an interrupted atomic write leaves (`.<name>.tmp<pid>`) from
    /// the folders this command writes. Returns how many were removed.
    pub fn remove_temp_files(&self) -> Result<usize> {
        let mut dirs = vec![
            self.root.clone(),
            self.root.join("latents"),
            self.explanations(false),
            self.explanations(true),
        ];
        for control in [false, true] {
            if let Ok(entries) = std::fs::read_dir(self.scores(control)) {
                dirs.extend(
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.is_dir()),
                );
            }
        }
        let mut removed = 0;
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name();
                if entry.path().is_file() && name.to_str().is_some_and(is_temp_name) {
                    std::fs::remove_file(entry.path())
                        .with_context(|| format!("removing {}", entry.path().display()))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// `.<name>.tmp<digits>`: what `write_atomic` writes before its rename.
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".tmp")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
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
    /// What went wrong.
    pub error: String,
    /// The explainer's answer, when it held no explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
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
    fn temp_names() {
        assert!(is_temp_name(".layers.0_latent3.txt.tmp1234"));
        assert!(!is_temp_name("layers.0_latent3.txt"));
        assert!(!is_temp_name(".hidden.tmp"));
        assert!(!is_temp_name(".x.tmpabc"));
    }

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
