//! Reading a results directory, collecting every problem on the way instead of failing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use autointerp_core::layout::Layout;
use autointerp_core::{HookPoint, LatentId, LatentRecord};
use serde::Serialize;

use crate::scores::{parse_score, LatentScore};
use crate::{Error, Result};

/// Folders under `scores/` that hold the random-explanation control, one subfolder per scorer.
pub const CONTROL_DIRS: [&str; 2] = [autointerp_core::layout::CONTROL_DIR, "control"];

/// Suffix of a scorer folder under `scores/` that holds the random-explanation control.
pub const CONTROL_SUFFIX: &str = "_random";

/// A scorer's folder of results: its name and whether it scored the random-explanation control.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ScorerKey {
    /// The scorer's name, e.g. `detection`.
    pub name: String,
    /// Whether these are scores of the random-explanation control (each latent scored with
    /// another latent's explanation).
    pub control: bool,
}

impl ScorerKey {
    /// The scores of `name` on the real explanations.
    pub fn real(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            control: false,
        }
    }

    /// The scores of `name` on the random-explanation control.
    pub fn control(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            control: true,
        }
    }

    /// A name safe for file names: `detection`, `detection_random`; characters other than
    /// ASCII letters, digits, `-` and `_` become `_`.
    pub fn slug(&self) -> String {
        let mut s: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if self.control {
            s.push_str(CONTROL_SUFFIX);
        }
        s
    }
}

/// `detection`, or `detection (random)` for the control.
impl fmt::Display for ScorerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.control {
            write!(f, "{} (random)", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// What kind of problem a results directory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// One of `explanations/`, `scores/`, `latents/` is absent.
    MissingFolder,
    /// A file or folder could not be read.
    Unreadable,
    /// A file's contents are not in the expected format.
    Malformed,
    /// A file or folder whose name the report does not understand; it is ignored.
    Unrecognised,
    /// Two files give the same thing (e.g. `scores/random/x/` and `scores/x_random/` both
    /// scoring one latent); the first read is kept.
    Duplicate,
    /// A latent's explanation file holds a failure placeholder or nothing.
    ExplanationFailed,
    /// A latent has scores or a record but no explanation file.
    MissingExplanation,
    /// A latent has no `latents/<id>.json` record (no examples, no firing rate).
    MissingRecord,
    /// A latent has no score from any scorer.
    MissingScores,
    /// A latent's score is undefined (written `"nan"`, or no example could be scored).
    NanScore,
    /// A plot could not be drawn.
    PlotFailed,
}

/// Something wrong or missing in the results; the report goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The latent concerned, if one is.
    pub latent: Option<LatentId>,
    /// The scorer concerned, if one is.
    pub scorer: Option<ScorerKey>,
    /// The file or folder concerned, if one is.
    pub path: Option<PathBuf>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            latent: None,
            scorer: None,
            path: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }

    pub(crate) fn latent(mut self, latent: LatentId) -> Self {
        self.latent = Some(latent);
        self
    }

    pub(crate) fn scorer(mut self, scorer: &ScorerKey) -> Self {
        self.scorer = Some(scorer.clone());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if let Some(l) = &self.latent {
            write!(f, " [{l}]")?;
        }
        if let Some(s) = &self.scorer {
            write!(f, " [{s}]")?;
        }
        if let Some(p) = &self.path {
            write!(f, " {}", p.display())?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything known about one latent.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentResults {
    /// The latent.
    pub id: LatentId,
    /// Its explanation, when its file holds a usable one.
    pub explanation: Option<String>,
    /// Whether its explanation file holds a failure placeholder or nothing.
    pub explanation_failed: bool,
    /// Its record (examples and firing statistics), when `latents/<id>.json` was read.
    pub record: Option<LatentRecord>,
    /// Its score from each scorer whose file was read.
    pub scores: BTreeMap<ScorerKey, LatentScore>,
}

impl LatentResults {
    fn new(id: LatentId) -> Self {
        Self {
            id,
            explanation: None,
            explanation_failed: false,
            record: None,
            scores: BTreeMap::new(),
        }
    }

    /// The fraction of tokens on which the latent fires, when its record is known.
    pub fn firing_rate(&self) -> Option<f64> {
        self.record.as_ref().map(|r| r.stats.firing_rate())
    }
}

/// A results directory as read: whatever could be read, and a problem for whatever could not.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// The results directory.
    pub root: PathBuf,
    /// `run_config.json`, when present and valid JSON.
    pub run_config: Option<serde_json::Value>,
    /// Every latent named by any file, sorted.
    pub latents: BTreeMap<LatentId, LatentResults>,
    /// Every scorer folder found, sorted (real before control for each name).
    pub scorers: Vec<ScorerKey>,
    /// What could not be read, or is missing.
    pub problems: Vec<Problem>,
}

/// Reads a results directory (layout in the [crate documentation](crate)). Only a missing
/// `results_dir` is an error; every other problem is recorded in [`Results::problems`].
pub fn load_results(results_dir: &Path) -> Result<Results> {
    if !results_dir.is_dir() {
        return Err(Error::NotADirectory {
            path: results_dir.to_path_buf(),
        });
    }
    let mut r = Results {
        root: results_dir.to_path_buf(),
        run_config: None,
        latents: BTreeMap::new(),
        scorers: Vec::new(),
        problems: Vec::new(),
    };
    read_run_config(&mut r);
    let with_file = read_explanations(&mut r);
    read_records(&mut r);
    read_scores(&mut r);
    check_latents(&mut r, &with_file);
    Ok(r)
}

fn read_run_config(r: &mut Results) {
    let path = Layout::new(&r.root).run_config();
    if !path.exists() {
        return;
    }
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => r.run_config = Some(v),
            Err(e) => r
                .problems
                .push(Problem::new(ProblemKind::Malformed, format!("not JSON: {e}")).at(&path)),
        },
        Err(e) => r
            .problems
            .push(Problem::new(ProblemKind::Unreadable, e.to_string()).at(&path)),
    }
}

/// The entries of a folder, sorted; `None` (with a problem) when it cannot be listed.
fn list_dir(dir: &Path, problems: &mut Vec<Problem>, required: bool) -> Option<Vec<PathBuf>> {
    if !dir.exists() {
        if required {
            problems.push(
                Problem::new(
                    ProblemKind::MissingFolder,
                    "folder not found; nothing read from it",
                )
                .at(dir),
            );
        }
        return None;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::new(ProblemKind::Unreadable, e.to_string()).at(dir));
            return None;
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => paths.push(e.path()),
            Err(e) => problems.push(Problem::new(ProblemKind::Unreadable, e.to_string()).at(dir)),
        }
    }
    paths.sort();
    Some(paths)
}

/// The latent a file `<latent id>.<ext>` names; `None` (with a problem) for other names.
fn latent_of(path: &Path, ext: &str, problems: &mut Vec<Problem>) -> Option<LatentId> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let parsed = name
        .strip_suffix(ext)
        .filter(|_| path.is_file())
        .and_then(|stem| stem.parse::<LatentId>().ok());
    if parsed.is_none() {
        problems.push(
            Problem::new(
                ProblemKind::Unrecognised,
                format!("ignored: not a `<hookpoint>_latent<index>{ext}` file"),
            )
            .at(path),
        );
    }
    parsed
}

/// Reads `explanations/`; returns the latents that have an explanation file, readable or not.
fn read_explanations(r: &mut Results) -> BTreeSet<LatentId> {
    let mut with_file = BTreeSet::new();
    let dir = Layout::new(&r.root).explanations(false);
    let Some(paths) = list_dir(&dir, &mut r.problems, true) else {
        return with_file;
    };
    for path in paths {
        let Some(id) = latent_of(&path, ".txt", &mut r.problems) else {
            continue;
        };
        if r.latents.contains_key(&id) {
            r.problems.push(
                Problem::new(
                    ProblemKind::Duplicate,
                    "a second explanation file for this latent (e.g. `model.layers.6_…` and \
                     `layers.6_…`); ignored",
                )
                .at(&path)
                .latent(id),
            );
            continue;
        }
        with_file.insert(id);
        let entry = r
            .latents
            .entry(id)
            .or_insert_with(|| LatentResults::new(id));
        match autointerp_explain::read_explanation_file(&path) {
            Ok(Some(e)) => entry.explanation = Some(e.text),
            Ok(None) => {
                entry.explanation_failed = true;
                r.problems.push(
                    Problem::new(
                        ProblemKind::ExplanationFailed,
                        "explanation file is empty or holds a failure placeholder",
                    )
                    .at(&path)
                    .latent(id),
                );
            }
            Err(e) => {
                let kind = match e {
                    autointerp_explain::Error::Io { .. } => ProblemKind::Unreadable,
                    _ => ProblemKind::Malformed,
                };
                r.problems
                    .push(Problem::new(kind, e.to_string()).at(&path).latent(id));
            }
        }
    }
    with_file
}

/// What `autointerp run` keeps beside the records in `latents/`: the activation cache of each
/// hook point (`latents/<hookpoint>/`, delphi's layout) and its statistics (`stats.json`). Not
/// records, but not strays either.
fn is_run_cache_entry(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if path.is_dir() {
        name.parse::<HookPoint>().is_ok()
    } else {
        name == "stats.json"
    }
}

fn read_records(r: &mut Results) {
    let dir = Layout::new(&r.root).latents();
    let Some(paths) = list_dir(&dir, &mut r.problems, true) else {
        return;
    };
    for path in paths {
        if is_run_cache_entry(&path) {
            continue;
        }
        let Some(id) = latent_of(&path, ".json", &mut r.problems) else {
            continue;
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                r.problems.push(
                    Problem::new(ProblemKind::Unreadable, e.to_string())
                        .at(&path)
                        .latent(id),
                );
                continue;
            }
        };
        let record: LatentRecord = match serde_json::from_slice(&bytes) {
            Ok(rec) => rec,
            Err(e) => {
                r.problems.push(
                    Problem::new(ProblemKind::Malformed, format!("not a latent record: {e}"))
                        .at(&path)
                        .latent(id),
                );
                continue;
            }
        };
        if record.id != id {
            r.problems.push(
                Problem::new(
                    ProblemKind::Malformed,
                    format!(
                        "the record inside is for {}; filed under the file's name",
                        record.id
                    ),
                )
                .at(&path)
                .latent(id),
            );
        }
        let entry = r
            .latents
            .entry(id)
            .or_insert_with(|| LatentResults::new(id));
        if entry.record.is_some() {
            r.problems.push(
                Problem::new(
                    ProblemKind::Duplicate,
                    "a second record for this latent; ignored",
                )
                .at(&path)
                .latent(id),
            );
            continue;
        }
        entry.record = Some(record);
    }
}

/// The scorer folders under `scores/`, with their keys (see the crate docs for the convention).
fn scorer_dirs(scores: &Path, problems: &mut Vec<Problem>) -> Vec<(ScorerKey, PathBuf)> {
    let mut out = Vec::new();
    let Some(paths) = list_dir(scores, problems, true) else {
        return out;
    };
    for path in paths {
        let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        let Some(name) = name.filter(|_| path.is_dir()) else {
            problems.push(
                Problem::new(ProblemKind::Unrecognised, "ignored: not a scorer folder").at(&path),
            );
            continue;
        };
        // `scores/random/` is the control's folder unless it holds score files itself (a
        // scorer named `random`).
        let holds_scores = std::fs::read_dir(&path)
            .map(|it| {
                it.flatten()
                    .any(|e| e.path().is_file() && e.path().extension().is_some_and(|x| x == "txt"))
            })
            .unwrap_or(false);
        if CONTROL_DIRS.contains(&name.as_str()) && !holds_scores {
            let Some(subs) = list_dir(&path, problems, true) else {
                continue;
            };
            for sub in subs {
                match sub.file_name().and_then(|n| n.to_str()) {
                    Some(s) if sub.is_dir() => out.push((ScorerKey::control(s), sub.clone())),
                    _ => problems.push(
                        Problem::new(
                            ProblemKind::Unrecognised,
                            "ignored: not a scorer folder of the control",
                        )
                        .at(&sub),
                    ),
                }
            }
        } else if let Some(base) = name.strip_suffix(CONTROL_SUFFIX).filter(|b| !b.is_empty()) {
            out.push((ScorerKey::control(base), path));
        } else {
            out.push((ScorerKey::real(name), path));
        }
    }
    out
}

fn read_scores(r: &mut Results) {
    let dirs = scorer_dirs(&Layout::new(&r.root).scores(false), &mut r.problems);
    for (key, dir) in dirs {
        if !r.scorers.contains(&key) {
            r.scorers.push(key.clone());
        }
        let Some(paths) = list_dir(&dir, &mut r.problems, true) else {
            continue;
        };
        for path in paths {
            let Some(id) = latent_of(&path, ".txt", &mut r.problems) else {
                continue;
            };
            let problem = |kind, msg: String| Problem::new(kind, msg).at(&path).latent(id);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    r.problems
                        .push(problem(ProblemKind::Unreadable, e.to_string()).scorer(&key));
                    continue;
                }
            };
            let record = r.latents.get(&id).and_then(|l| l.record.as_ref());
            let score = match parse_score(&key.name, &bytes, record) {
                Ok(s) => s,
                Err(e) => {
                    r.problems
                        .push(problem(ProblemKind::Malformed, e).scorer(&key));
                    continue;
                }
            };
            if !score.is_defined() {
                r.problems.push(
                    problem(
                        ProblemKind::NanScore,
                        format!(
                            "score undefined ({} of {} examples failed)",
                            score.n_failed, score.n_items
                        ),
                    )
                    .scorer(&key),
                );
            }
            let entry = r
                .latents
                .entry(id)
                .or_insert_with(|| LatentResults::new(id));
            if entry.scores.contains_key(&key) {
                r.problems.push(
                    problem(
                        ProblemKind::Duplicate,
                        "a second score file for this latent and scorer; ignored".into(),
                    )
                    .scorer(&key),
                );
                continue;
            }
            entry.scores.insert(key.clone(), score);
        }
    }
    r.scorers.sort();
}

/// Problems of latents as a whole: no explanation, no record, no scores.
fn check_latents(r: &mut Results, with_explanation_file: &BTreeSet<LatentId>) {
    let layout = Layout::new(&r.root);
    let have_records = layout.latents().is_dir();
    let have_explanations = layout.explanations(false).is_dir();
    for l in r.latents.values() {
        if have_explanations && !with_explanation_file.contains(&l.id) {
            r.problems.push(
                Problem::new(ProblemKind::MissingExplanation, "no explanation file").latent(l.id),
            );
        }
        if have_records && l.record.is_none() {
            r.problems.push(
                Problem::new(
                    ProblemKind::MissingRecord,
                    "no readable latents/<id>.json: no examples or firing rate",
                )
                .latent(l.id),
            );
        }
        if l.scores.is_empty() {
            r.problems.push(
                Problem::new(ProblemKind::MissingScores, "no score from any scorer").latent(l.id),
            );
        }
    }
}
