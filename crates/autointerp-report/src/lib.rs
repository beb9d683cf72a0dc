//! Reports on a results directory of autointerp (or delphi): per-scorer summary tables with
//! bootstrap intervals and the random-explanation control, plots as PNG and SVG, and one static
//! HTML page to browse latents, their explanations, scores and examples.
//!
//! ```no_run
//! use autointerp_report::{generate_report, ReportConfig};
//!
//! let report = generate_report("results/my_run".as_ref(), &ReportConfig::default())?;
//! println!("{}", report.summary.to_text());
//! println!("open {}", report.out_dir.join("index.html").display());
//! # Ok::<(), autointerp_report::Error>(())
//! ```
//!
//! # The results directory
//!
//! ```text
//! RESULTS_DIR/
//!   run_config.json                    any JSON; shown in the page and summary.json
//!   explanations/<latent>.txt          a JSON string (delphi) or plain text
//!   latents/<latent>.json              a serialised autointerp_core::LatentRecord (optional)
//!   scores/<scorer>/<latent>.txt       delphi score files, as autointerp-score writes them
//!   scores/random/<scorer>/<latent>.txt   the random-explanation control (see below)
//! ```
//!
//! `<latent>` is a [`LatentId`](autointerp_core::LatentId) as displayed, e.g.
//! `layers.6_latent12`. The kind of a score file is told by its records' fields (classifier
//! outcomes of detection and fuzzing, intruder trials, simulation groups, embedding and
//! surprisal outcomes; an empty list by the folder's name), so scorer folders may have any name.
//!
//! **Random-explanation control.** Scores of the control (each latent scored with another
//! latent's explanation, e.g. from `autointerp_explain::random_control`) go in
//! `scores/random/<scorer>/` — the convention this crate defines and the one to write.
//! `scores/control/<scorer>/` and `scores/<scorer>_random/` are read the same way. A scorer
//! with a control gets a comparison in its summary row: the control's mean, and the paired
//! difference (real − control, over latents scored under both) with its bootstrap interval.
//!
//! # The report
//!
//! Written to `RESULTS_DIR/report/` (or [`ReportConfig::out_dir`]):
//!
//! - `summary.json` ([`Summary`]), `summary.md`, and [`Summary::to_text`] for a terminal: per
//!   scorer, latents scored, mean score with its bootstrap interval (latents resampled with
//!   autointerp-score's [`Bootstrap`]), failed examples summed from the score files, and the
//!   headline both ways: failures excluded (our convention) and counted as failures (delphi's:
//!   a failed item is a wrong answer, a latent without a score 0), with the counts of each. For
//!   classifier scorers, accuracy, balanced accuracy, precision, recall and F1 both averaged
//!   over latents (macro) and pooled over examples (micro, delphi's), delphi's
//!   frequency-weighted F1, per-latent AUC and pooled AUC ([`ClassifierMeans`]).
//! - `plots/<scorer>_{histogram,firing_rate,roc}.{png,svg}`: score histograms (control
//!   overlaid), score against firing rate (log scale; latents with a record), and ROC curves of
//!   the classifier scorers' probabilities pooled over latents. PNG text is drawn with DejaVu Sans,
//!   embedded (the `dejavu` crate), so no system font library is needed.
//! - `index.html`: self-contained (inline CSS, JS and data; plots referenced relatively; no
//!   network), works opened from disk. A sortable, filterable list of latents with explanation and
//!   scores; selecting one shows its examples with tokens shaded by activation.
//!
//! Partial results are expected: latents without scores or records, undefined (`"nan"`) scores,
//! unreadable or malformed files are listed in [`Summary::problems`] and skipped, never a panic.
//! Only a missing results directory and failures to write the report are errors.
//!
//! # Exports
//!
//! [`export_neuronpedia`] writes the explanations, and their scores, in Neuronpedia's dataset
//! format (`<modelId>/<sourceId>/explanations/batch-<n>.jsonl.gz`, the files its importer
//! reads), naming each hook point's source from a template such as `{layer}-res-16k`.
//! [`saebench_summary`] summarises the scores in SAEBench's terms (`autointerp_score`,
//! `autointerp_std_dev` per scorer, with bootstrap intervals and the random-explanation
//! control). What each carries, and where it differs from the original, is in the
//! [`export` module's documentation](export).
//!
//! Example: `cargo run --release -p autointerp-report --example report_demo`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod export;
mod html;
mod plots;
mod results;
mod samples;
mod scores;
mod summary;

use std::path::{Path, PathBuf};

pub use autointerp_score::{Bootstrap, ConfidenceInterval};
use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use export::{
    default_neuronpedia_score_type, export_neuronpedia, neuronpedia_rows, saebench_metrics,
    saebench_summary, NeuronpediaExplanation, NeuronpediaExplanationScore, NeuronpediaExport,
    NeuronpediaOptions, NeuronpediaRows, SaeBenchMetrics, SaeBenchSummary, NEURONPEDIA_BATCH_SIZE,
    NEURONPEDIA_DEFAULT_AUTHOR_ID,
};
pub use html::{escape_html, script_safe_json};
pub use plots::{PlotFile, PlotKind};
pub use results::{
    load_results, LatentResults, Problem, ProblemKind, Results, ScorerKey, CONTROL_DIRS,
    CONTROL_SUFFIX,
};
pub use samples::SampleGain;
pub use scores::{LatentScore, ScoreKind};
pub use summary::{summarize, ClassifierMeans, ControlComparison, ScorerSummary, Summary};

/// Options of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Where to write the report; `<results dir>/report` when `None`.
    pub out_dir: Option<PathBuf>,
    /// The bootstrap of the confidence intervals (default: 1000 resamples, 95%, seed 0).
    pub bootstrap: Bootstrap,
    /// Whether to draw the plots.
    pub plots: bool,
    /// Examples shown per group (train, test, non-activating) of each latent in the page. The
    /// page embeds them all, so it grows with latents × examples × tokens: lower this for runs
    /// of many thousands of latents.
    pub max_examples: usize,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            out_dir: None,
            bootstrap: Bootstrap::default(),
            plots: true,
            max_examples: 10,
        }
    }
}

impl ReportConfig {
    /// Writes the report to `dir` instead of `<results dir>/report`.
    #[must_use]
    pub fn with_out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Sets the bootstrap of the confidence intervals.
    #[must_use]
    pub fn with_bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// Turns the plots on or off.
    #[must_use]
    pub fn with_plots(mut self, plots: bool) -> Self {
        self.plots = plots;
        self
    }

    /// Caps the examples shown per group and latent in the page.
    #[must_use]
    pub fn with_max_examples(mut self, n: usize) -> Self {
        self.max_examples = n;
        self
    }
}

/// A written report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The folder it was written to.
    pub out_dir: PathBuf,
    /// The numbers, with every problem found (plot failures included).
    pub summary: Summary,
    /// The plots drawn.
    pub plots: Vec<PlotFile>,
    /// Every file written, `index.html` last.
    pub files: Vec<PathBuf>,
}

#[derive(Serialize)]
struct SummaryFile<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    plots: &'a [PlotFile],
}

/// Writes a report file whole or not at all (temp file, fsync, rename), as every other file.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    autointerp_core::fs::write_atomic(path, bytes).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Reads `results_dir` and writes its report: `summary.json`, `summary.md`, the plots and
/// `index.html` (see the [crate documentation](crate)).
///
/// # Errors
/// [`Error::NotADirectory`] when `results_dir` is not a folder; [`Error::Io`] when the report
/// folder or one of its files cannot be written. Problems with the results are not errors.
#[tracing::instrument(skip(config), fields(results = %results_dir.display()))]
pub fn generate_report(results_dir: &Path, config: &ReportConfig) -> Result<Report> {
    let results = load_results(results_dir)?;
    let out_dir = config
        .out_dir
        .clone()
        .unwrap_or_else(|| results_dir.join("report"));
    std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
        path: out_dir.clone(),
        source,
    })?;
    let mut summary = summarize(&results, &config.bootstrap);
    let (plots, plot_problems) = if config.plots {
        plots::write_plots(&results, &out_dir)
    } else {
        (Vec::new(), Vec::new())
    };
    for p in &plot_problems {
        tracing::warn!(problem = %p, "plot not drawn");
    }
    summary.problems.extend(plot_problems);
    tracing::info!(
        latents = summary.n_latents,
        scorers = summary.scorers.len(),
        problems = summary.problems.len(),
        "report summarised"
    );

    let mut files = Vec::new();
    let json_path = out_dir.join("summary.json");
    let json = serde_json::to_vec_pretty(&SummaryFile {
        summary: &summary,
        plots: &plots,
    })
    .map_err(|source| Error::Json {
        path: json_path.clone(),
        source,
    })?;
    write_file(&json_path, &json)?;
    files.push(json_path);

    let md_path = out_dir.join("summary.md");
    write_file(&md_path, summary.to_markdown().as_bytes())?;
    files.push(md_path);

    for p in &plots {
        files.push(out_dir.join(&p.png));
        files.push(out_dir.join(&p.svg));
    }

    let html_path = out_dir.join("index.html");
    let html =
        html::render_page(&results, &summary, &plots, config.max_examples).map_err(|source| {
            Error::Json {
                path: html_path.clone(),
                source,
            }
        })?;
    write_file(&html_path, html.as_bytes())?;
    files.push(html_path);

    Ok(Report {
        out_dir,
        summary,
        plots,
        files,
    })
}
