//! The folders and files of a results directory: the one definition that the run engine writes
//! and the report reads.
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
//!   run.log                          what each command did (appended)
//!   log/hookpoint_firing_counts.pt   per-latent firing counts, for delphi's `log_results`
//! ```

use std::path::{Path, PathBuf};

use crate::fs::write_atomic;
use crate::{Error, LatentId, LatentRecord, Result};

/// The folder under `scores/` that holds the random-explanation control's scores.
pub const CONTROL_DIR: &str = "random";

/// `<scores_dir>/<scorer>/<latent>.txt`, with `/` in the latent's name replaced by `--`.
pub fn score_file_path(scores_dir: &Path, scorer: &str, latent: &LatentId) -> PathBuf {
    scores_dir
        .join(scorer)
        .join(format!("{}.txt", latent.to_string().replace('/', "--")))
}

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

    /// `latents/`: the cache's hook-point folders and each latent's record.
    pub fn latents(&self) -> PathBuf {
        self.root.join("latents")
    }

    /// `latents/<latent>.json`.
    pub fn record(&self, id: &LatentId) -> PathBuf {
        self.latents().join(format!("{id}.json"))
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
            dir.join(CONTROL_DIR)
        } else {
            dir
        }
    }

    /// `run.log`: each command's line, log events and summary, appended.
    pub fn run_log(&self) -> PathBuf {
        self.root.join("run.log")
    }

    /// `failures.jsonl`.
    pub fn failures(&self) -> PathBuf {
        self.root.join("failures.jsonl")
    }

    /// `log/hookpoint_firing_counts.pt`: each hook point's per-latent firing counts as a torch
    /// dict, where delphi's `log_results` reads them.
    pub fn firing_counts(&self) -> PathBuf {
        self.root.join("log").join("hookpoint_firing_counts.pt")
    }

    /// `scores/<scorer>/<latent>.txt` (or under `scores/random/`), delphi's name: `/` in the
    /// latent's name becomes `--`.
    pub fn score_file(&self, scorer: &str, id: &LatentId, control: bool) -> PathBuf {
        score_file_path(&self.scores(control), scorer, id)
    }

    /// Whether `scorer`'s file for `id` exists, finished or not: a file may record failed items,
    /// which only the score crate can read (the run's planning retries those).
    pub fn has_score(&self, scorer: &str, id: &LatentId, control: bool) -> bool {
        self.score_file(scorer, id, control).is_file()
    }

    /// Writes a record as `latents/<latent>.json`, atomically.
    pub fn write_record(&self, record: &LatentRecord) -> Result<()> {
        let json = serde_json::to_vec(record).map_err(|e| Error::Io {
            path: self.record(&record.id),
            source: e.into(),
        })?;
        write_atomic(&self.record(&record.id), &json)
    }

    /// Removes the temporary files an interrupted atomic write leaves (`.<name>.tmp<pid>`) from
    /// the folders this command writes. Returns how many were removed.
    pub fn remove_temp_files(&self) -> Result<usize> {
        let mut dirs = vec![
            self.root.clone(),
            self.latents(),
            self.explanations(false),
            self.explanations(true),
            self.root.join("log"),
            self.root.join("samples"),
        ];
        let score_dirs = [
            self.scores(false),
            self.scores(true),
            self.root.join("samples").join("first"),
        ];
        for parent in score_dirs {
            if let Ok(entries) = std::fs::read_dir(parent) {
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
            removed += crate::fs::remove_temp_files(&dir)?;
        }
        Ok(removed)
    }
}
