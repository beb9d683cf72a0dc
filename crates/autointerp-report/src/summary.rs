//! Per-scorer summary statistics, and the tables that show them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use autointerp_core::LatentId;
use autointerp_score::metrics::{frequency_weighted_f1, roc_auc, LatentF1};
use autointerp_score::{Bootstrap, ClassificationMetrics, ConfidenceInterval, Confusion};
use serde::Serialize;

use crate::results::{Problem, ProblemKind, Results, ScorerKey};
use crate::scores::ScoreKind;

/// Classifier metrics (detection, fuzzing) over latents, two ways: **macro**, each latent's
/// metric averaged over latents (this report's headline), and **micro**, every example pooled
/// over latents (delphi's `log/result_analysis.py`). Failed examples are in neither.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifierMeans {
    /// Macro: mean balanced accuracy over latents with at least one scored example.
    pub balanced_accuracy: Option<f64>,
    /// Macro: mean accuracy over the same latents.
    pub accuracy: Option<f64>,
    /// Macro: mean precision over the same latents.
    pub precision: Option<f64>,
    /// Macro: mean recall over the same latents.
    pub recall: Option<f64>,
    /// Macro: mean F1 over the same latents.
    pub f1: Option<f64>,
    /// Micro: the metrics of the confusion counts summed over latents (delphi's accuracy is
    /// this balanced accuracy); `None` without a scored example.
    pub micro: Option<ClassificationMetrics>,
    /// delphi's frequency-weighted F1: within each hook point, the latents' F1 weighted by how
    /// many tokens they fire on, then the mean over hook points (see
    /// [`frequency_weighted_f1`]). Over latents with a record (for the firing count) and at
    /// least one scored example.
    pub frequency_weighted_f1: Option<f64>,
    /// Latents in the frequency-weighted F1.
    pub n_weighted: usize,
    /// Mean per-latent ROC AUC over latents whose answers came with probabilities for both
    /// classes.
    pub auc: Option<f64>,
    /// Latents that have an AUC.
    pub n_auc: usize,
    /// ROC AUC of all examples with a probability, pooled over latents.
    pub pooled_auc: Option<f64>,
    /// Examples in the pooled AUC.
    pub n_pooled: usize,
}

/// How the real explanations compare with the random-explanation control, on one scorer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlComparison {
    /// Mean control score over its latents with a defined score.
    pub control_mean: Option<f64>,
    /// `mean − control_mean`.
    pub difference: Option<f64>,
    /// Latents with a defined score under both.
    pub n_paired: usize,
    /// Mean over those latents of (real score − control score), with its bootstrap interval.
    pub paired_difference: Option<ConfidenceInterval>,
}

/// The summary of one scorer folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScorerSummary {
    /// The scorer, and whether it scored the random-explanation control.
    pub scorer: ScorerKey,
    /// What its files hold; `None` when no file could be read.
    pub kind: Option<ScoreKind>,
    /// Latents whose score file was read.
    pub n_latents: usize,
    /// Of those, latents whose score is defined (not NaN).
    pub n_defined: usize,
    /// Mean score over latents with a defined score, failures excluded: failed examples
    /// (trials, sequences) leave the latent's score, and latents without a defined score or
    /// without a file leave the mean.
    pub mean: Option<f64>,
    /// Bootstrap interval of the mean (latents resampled).
    pub ci: Option<ConfidenceInterval>,
    /// Mean score over every latent of the results ([`ScorerSummary::n_expected`]), failures
    /// counted: each latent's score with its failed items scored as failures
    /// ([`LatentScore::value_counted`](crate::LatentScore::value_counted)), and 0 for a latent
    /// without a readable file (its explanation or every request failed) or a defined score.
    /// So silence never raises it.
    pub mean_counted: Option<f64>,
    /// Latents in [`ScorerSummary::mean_counted`]: every latent named by any file.
    pub n_expected: usize,
    /// Of those, latents without a readable file of this scorer, counted 0.
    pub n_missing: usize,
    /// Latents whose file has failed examples (trials, sequences).
    pub n_with_failures: usize,
    /// Examples (trials, sequences) whose answer could not be parsed, summed over latents.
    pub n_failed: usize,
    /// Examples (trials, sequences) in the files, summed over latents.
    pub n_items: usize,
    /// Score files of this scorer that could not be read.
    pub n_unreadable: usize,
    /// Classifier metrics, for detection and fuzzing.
    pub classifier: Option<ClassifierMeans>,
    /// Comparison with the control, on a real scorer that has one.
    pub vs_control: Option<ControlComparison>,
}

/// The report's numbers: counts of latents, one summary per scorer, and every problem found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The results directory.
    pub results_dir: PathBuf,
    /// Latents named by any file.
    pub n_latents: usize,
    /// Latents with a usable explanation.
    pub n_explained: usize,
    /// Latents whose explanation file holds a failure placeholder or nothing.
    pub n_explanation_failed: usize,
    /// Latents with a record.
    pub n_with_record: usize,
    /// Latents with at least one score.
    pub n_scored: usize,
    /// Coverage of the bootstrap intervals, e.g. 0.95.
    pub confidence: f64,
    /// One per scorer folder, sorted by name, real before control.
    pub scorers: Vec<ScorerSummary>,
    /// `run_config.json`, as read.
    pub run_config: Option<serde_json::Value>,
    /// Everything missing or unreadable, in the order found.
    pub problems: Vec<Problem>,
    /// Best-of-K (`--explainer-samples`): the kept explanations against the first samples,
    /// per choosing scorer; empty without samples.
    pub best_of_k: Vec<crate::SampleGain>,
}

pub(crate) fn mean(x: &[f64]) -> Option<f64> {
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

pub(crate) fn mean_ci(values: &[f64], bootstrap: &Bootstrap) -> Option<ConfidenceInterval> {
    bootstrap.interval(values, |s| {
        Some(s.iter().copied().sum::<f64>() / s.len() as f64)
    })
}

/// Summarises `results`: per scorer folder, the mean score over latents with a defined score,
/// its bootstrap interval (`bootstrap` resamples latents), failures, classifier metrics, and,
/// for a scorer with a control, the comparison with it.
pub fn summarize(results: &Results, bootstrap: &Bootstrap) -> Summary {
    let mut scorers: Vec<ScorerSummary> = results
        .scorers
        .iter()
        .map(|key| scorer_summary(results, key, bootstrap))
        .collect();
    // Paired values per scorer, to compare each real scorer with its control.
    let values = |key: &ScorerKey| -> BTreeMap<LatentId, f64> {
        results
            .latents
            .values()
            .filter_map(|l| {
                l.scores
                    .get(key)
                    .filter(|s| s.is_defined())
                    .map(|s| (l.id, s.value))
            })
            .collect()
    };
    let control_means: BTreeMap<ScorerKey, Option<f64>> = scorers
        .iter()
        .filter(|s| s.scorer.control)
        .map(|s| (s.scorer.clone(), s.mean))
        .collect();
    for s in scorers.iter_mut().filter(|s| !s.scorer.control) {
        let ctl_key = ScorerKey::control(s.scorer.name.clone());
        let Some(control_mean) = control_means.get(&ctl_key) else {
            continue;
        };
        let (real, ctl) = (values(&s.scorer), values(&ctl_key));
        let diffs: Vec<f64> = real
            .iter()
            .filter_map(|(id, v)| ctl.get(id).map(|c| v - c))
            .collect();
        s.vs_control = Some(ControlComparison {
            control_mean: *control_mean,
            difference: s.mean.zip(*control_mean).map(|(a, b)| a - b),
            n_paired: diffs.len(),
            paired_difference: mean_ci(&diffs, bootstrap),
        });
    }
    let latents = results.latents.values();
    Summary {
        results_dir: results.root.clone(),
        n_latents: results.latents.len(),
        n_explained: latents.clone().filter(|l| l.explanation.is_some()).count(),
        n_explanation_failed: latents.clone().filter(|l| l.explanation_failed).count(),
        n_with_record: latents.clone().filter(|l| l.record.is_some()).count(),
        n_scored: latents.filter(|l| !l.scores.is_empty()).count(),
        confidence: bootstrap.confidence,
        scorers,
        run_config: results.run_config.clone(),
        problems: results.problems.clone(),
        best_of_k: crate::samples::sample_gains(results, bootstrap),
    }
}

fn scorer_summary(results: &Results, key: &ScorerKey, bootstrap: &Bootstrap) -> ScorerSummary {
    let scores: Vec<_> = results
        .latents
        .values()
        .filter_map(|l| l.scores.get(key))
        .collect();
    let defined: Vec<f64> = scores
        .iter()
        .filter(|s| s.is_defined())
        .map(|s| s.value)
        .collect();
    let kind = scores.first().map(|s| s.kind);
    let classifier = (kind == Some(ScoreKind::Classifier)).then(|| classifier_means(results, key));
    // Failures counted: every latent of the results, 0 where this scorer has nothing.
    let counted: Vec<f64> = results
        .latents
        .values()
        .map(|l| l.scores.get(key).map_or(0.0, |s| s.value_counted))
        .collect();
    let n_unreadable = results
        .problems
        .iter()
        .filter(|p| {
            p.scorer.as_ref() == Some(key)
                && matches!(p.kind, ProblemKind::Unreadable | ProblemKind::Malformed)
        })
        .count();
    ScorerSummary {
        scorer: key.clone(),
        kind,
        n_latents: scores.len(),
        n_defined: defined.len(),
        mean: mean(&defined),
        ci: mean_ci(&defined, bootstrap),
        mean_counted: mean(&counted),
        n_expected: counted.len(),
        n_missing: counted.len() - scores.len(),
        n_with_failures: scores.iter().filter(|s| s.n_failed > 0).count(),
        n_failed: scores.iter().map(|s| s.n_failed).sum(),
        n_items: scores.iter().map(|s| s.n_items).sum(),
        n_unreadable,
        classifier,
        vs_control: None,
    }
}

/// Macro and micro classifier metrics of `key`'s latents, with delphi's frequency-weighted F1.
fn classifier_means(results: &Results, key: &ScorerKey) -> ClassifierMeans {
    // Each latent with at least one scored example, with its firing count when its record is
    // known.
    let latents: Vec<(LatentId, &autointerp_score::ClassifierSummary, Option<u64>)> = results
        .latents
        .values()
        .filter_map(|l| {
            let c = l.scores.get(key)?.classifier.as_ref()?;
            let fires = l.record.as_ref().map(|r| r.stats.n_activations);
            (c.confusion.scored() > 0).then_some((l.id, c, fires))
        })
        .collect();
    let macro_mean = |f: fn(&ClassificationMetrics) -> f64| {
        mean(
            &latents
                .iter()
                .map(|(_, c, _)| f(&c.metrics))
                .collect::<Vec<_>>(),
        )
    };
    let pooled = latents
        .iter()
        .fold(Confusion::default(), |mut sum, (_, c, _)| {
            let c = &c.confusion;
            sum.true_positives += c.true_positives;
            sum.true_negatives += c.true_negatives;
            sum.false_positives += c.false_positives;
            sum.false_negatives += c.false_negatives;
            sum.failed += c.failed;
            sum
        });
    let weighted: Vec<LatentF1> = latents
        .iter()
        .filter_map(|(id, c, fires)| {
            Some(LatentF1 {
                latent: *id,
                f1: c.metrics.f1,
                firing_count: (*fires)?,
            })
        })
        .collect();
    let auc: Vec<f64> = latents
        .iter()
        .filter_map(|(_, c, _)| c.auc)
        .filter(|a| a.is_finite())
        .collect();
    let (labels, probs): (Vec<bool>, Vec<f64>) = results
        .latents
        .values()
        .filter_map(|l| l.scores.get(key))
        .flat_map(|s| s.probabilities.iter().copied())
        .unzip();
    ClassifierMeans {
        balanced_accuracy: macro_mean(|m| m.balanced_accuracy),
        accuracy: macro_mean(|m| m.accuracy),
        precision: macro_mean(|m| m.precision),
        recall: macro_mean(|m| m.recall),
        f1: macro_mean(|m| m.f1),
        micro: (pooled.scored() > 0).then(|| pooled.metrics()),
        frequency_weighted_f1: frequency_weighted_f1(&weighted),
        n_weighted: weighted.len(),
        auc: mean(&auc),
        n_auc: auc.len(),
        pooled_auc: roc_auc(&labels, &probs),
        n_pooled: labels.len(),
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.3}"))
}

fn signed(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:+.3}"))
}

fn interval(ci: Option<&ConfidenceInterval>) -> String {
    ci.map_or_else(|| "-".into(), |c| format!("[{:.3}, {:.3}]", c.low, c.high))
}

impl Summary {
    /// The header and rows of the per-scorer table, as plain strings: latents, the mean with
    /// failures excluded and its interval, failed items, the mean with failures counted, and
    /// the random-explanation control.
    pub fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let pct = (self.confidence * 100.0).round();
        let header = [
            "scorer".to_string(),
            "latents".into(),
            "defined".into(),
            "mean, failures excluded".into(),
            format!("{pct}% CI"),
            "failed items".into(),
            "unreadable".into(),
            "mean, failures counted".into(),
            "random mean".into(),
            "Δ vs random (paired)".into(),
        ]
        .to_vec();
        let rows = self
            .scorers
            .iter()
            .map(|s| {
                let v = s.vs_control.as_ref();
                vec![
                    s.scorer.to_string(),
                    s.n_latents.to_string(),
                    s.n_defined.to_string(),
                    num(s.mean),
                    interval(s.ci.as_ref()),
                    format!(
                        "{}/{} in {} latents",
                        s.n_failed, s.n_items, s.n_with_failures
                    ),
                    s.n_unreadable.to_string(),
                    format!(
                        "{} of {} ({} missing)",
                        num(s.mean_counted),
                        s.n_expected,
                        s.n_missing
                    ),
                    num(v.and_then(|v| v.control_mean)),
                    match v.and_then(|v| v.paired_difference.as_ref()) {
                        Some(d) => format!(
                            "{} {} n={}",
                            signed(Some(d.estimate)),
                            interval(Some(d)),
                            v.map_or(0, |v| v.n_paired)
                        ),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        (header, rows)
    }

    /// The header and rows of the classifier table (detection, fuzzing): accuracy, balanced
    /// accuracy, precision, recall and F1 averaged over latents (macro) and pooled over every
    /// example (micro, delphi's), the frequency-weighted F1, and the AUCs. Empty rows when no
    /// scorer is a classifier.
    pub fn classifier_table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let header = [
            "scorer",
            "macro acc",
            "macro bal. acc",
            "macro P",
            "macro R",
            "macro F1",
            "micro acc",
            "micro bal. acc",
            "micro P",
            "micro R",
            "micro F1",
            "freq-weighted F1",
            "AUC",
            "pooled AUC",
        ]
        .map(String::from)
        .to_vec();
        let rows = self
            .scorers
            .iter()
            .filter_map(|s| {
                let c = s.classifier.as_ref()?;
                let m = c.micro.as_ref();
                Some(vec![
                    s.scorer.to_string(),
                    num(c.accuracy),
                    num(c.balanced_accuracy),
                    num(c.precision),
                    num(c.recall),
                    num(c.f1),
                    num(m.map(|m| m.accuracy)),
                    num(m.map(|m| m.balanced_accuracy)),
                    num(m.map(|m| m.precision)),
                    num(m.map(|m| m.recall)),
                    num(m.map(|m| m.f1)),
                    match c.frequency_weighted_f1 {
                        Some(f) => format!("{f:.3} n={}", c.n_weighted),
                        None => "-".into(),
                    },
                    num(c.auc),
                    num(c.pooled_auc),
                ])
            })
            .collect();
        (header, rows)
    }

    /// Problems counted by kind.
    pub fn problem_counts(&self) -> BTreeMap<ProblemKind, usize> {
        let mut counts = BTreeMap::new();
        for p in &self.problems {
            *counts.entry(p.kind).or_insert(0) += 1;
        }
        counts
    }

    fn latent_line(&self) -> String {
        format!(
            "{} latents: {} explained, {} failed explanations, {} with records, {} scored",
            self.n_latents,
            self.n_explained,
            self.n_explanation_failed,
            self.n_with_record,
            self.n_scored
        )
    }

    /// One sentence per scorer with a random-explanation control: whether the real explanations
    /// beat it, by how much, with the paired interval. A difference whose interval holds 0
    /// is said to be indistinguishable from the control, however large its mean.
    pub fn control_sentences(&self) -> Vec<String> {
        let pct = (self.confidence * 100.0).round();
        self.scorers
            .iter()
            .filter(|s| !s.scorer.control)
            .filter_map(|s| {
                let vs = s.vs_control.as_ref()?;
                let name = &s.scorer.name;
                let Some(ci) = &vs.paired_difference else {
                    return Some(format!(
                        "{name}: no latent has a defined score under both the real and the random \
                         explanations, so there is no comparison."
                    ));
                };
                let verdict = if ci.low > 0.0 {
                    "real explanations beat the random-explanation control"
                } else if ci.high < 0.0 {
                    "real explanations score BELOW the random-explanation control"
                } else {
                    "real explanations cannot be told from the random-explanation control"
                };
                Some(format!(
                    "{name}: {verdict} (paired difference {:+.3}, {pct:.0}% CI [{:+.3}, {:+.3}], \
                     {} latents).",
                    ci.estimate, ci.low, ci.high, vs.n_paired
                ))
            })
            .chain(self.best_of_k.iter().map(|g| {
                let name = &g.scorer;
                let Some(ci) = &g.paired_difference else {
                    return format!(
                        "{name}, best of the sampled explanations: no latent has a defined score \
                         for both the kept and the first sample."
                    );
                };
                let verdict = if ci.low > 0.0 {
                    "the kept explanations beat the first samples"
                } else if ci.high < 0.0 {
                    "the kept explanations score BELOW the first samples"
                } else {
                    "the kept explanations cannot be told from the first samples"
                };
                format!(
                    "{name}, best of the sampled explanations: {verdict} on the test examples \
                     (paired difference {:+.3}, {pct:.0}% CI [{:+.3}, {:+.3}], {} latents).",
                    ci.estimate, ci.low, ci.high, g.n_paired
                )
            }))
            .collect()
    }

    /// The summary as plain text, for a terminal: one line of latent counts, the control
    /// comparisons, the per-scorer table, the classifier table, and the problems counted by
    /// kind with the first few of each.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n\n", self.latent_line());
        let sentences = self.control_sentences();
        for sentence in &sentences {
            out.push_str(sentence);
            out.push('\n');
        }
        if !sentences.is_empty() {
            out.push('\n');
        }
        let (header, rows) = self.table();
        out.push_str(&text_table(&header, &rows));
        if rows.is_empty() {
            out.push_str("(no scores found)\n");
        } else {
            out.push_str(&format!("\n{}\n", wrap(TABLE_NOTE, NOTE_WIDTH)));
        }
        let (header, rows) = self.classifier_table();
        if !rows.is_empty() {
            out.push_str("\nClassifier metrics:\n");
            out.push_str(&text_table(&header, &rows));
            out.push_str(&format!("\n{}\n", wrap(CLASSIFIER_NOTE, NOTE_WIDTH)));
        }
        self.push_problems(&mut out, false);
        out
    }

    /// The summary as Markdown: latent counts, the per-scorer and classifier tables, problems.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# autointerp report\n\nResults: `{}`\n\n{}\n\n",
            md_escape(&self.results_dir.display().to_string()).replace('`', "'"),
            self.latent_line()
        );
        let (header, rows) = self.table();
        out.push_str(&md_table(&header, &rows));
        out.push_str(&format!("\n{}\n", md_escape(TABLE_NOTE)));
        let (header, rows) = self.classifier_table();
        if !rows.is_empty() {
            out.push_str("\n## Classifier metrics\n\n");
            out.push_str(&md_table(&header, &rows));
            out.push_str(&format!("\n{}\n", md_escape(CLASSIFIER_NOTE)));
        }
        self.push_problems(&mut out, true);
        out
    }

    fn push_problems(&self, out: &mut String, markdown: bool) {
        const SHOWN: usize = 5;
        let counts = self.problem_counts();
        if counts.is_empty() {
            out.push_str(if markdown {
                "\n## Problems\n\nNone.\n"
            } else {
                "\nNo problems.\n"
            });
            return;
        }
        out.push_str(if markdown {
            "\n## Problems\n\n"
        } else {
            "\nProblems:\n"
        });
        for (kind, n) in counts {
            let _ = if markdown {
                writeln!(out, "- **{kind:?}**: {n}")
            } else {
                writeln!(out, "  {kind:?}: {n}")
            };
            for p in self.problems.iter().filter(|p| p.kind == kind).take(SHOWN) {
                let text = p.to_string();
                if markdown {
                    let _ = writeln!(out, "  - {}", md_escape(&text));
                } else {
                    let _ = writeln!(out, "      {text}");
                }
            }
            if n > SHOWN {
                let _ = writeln!(
                    out,
                    "{}… and {} more (all in summary.json)",
                    if markdown { "  - " } else { "      " },
                    n - SHOWN
                );
            }
        }
    }
}

/// What the per-scorer table's columns mean.
pub(crate) const TABLE_NOTE: &str =
    "mean, failures excluded: over latents with a defined score, failed items and \
latents without a score excluded. failed items: examples (trials, sequences) whose request or \
answer failed, of all in the score files. mean, failures counted: over every latent of the \
results, each failed item scored as a failure (a wrong answer; for simulation an all-zero \
prediction) and a latent without a score file or a defined score as 0, as delphi scores them. \
Δ vs random: mean over latents scored under both of (score − random-explanation score).";

/// What the classifier table's columns mean.
pub(crate) const CLASSIFIER_NOTE: &str = "macro: each latent's metric averaged over latents; \
micro: every example pooled over latents, as delphi reports them (delphi's accuracy is the \
micro balanced accuracy). freq-weighted F1: per hook point, latent F1 weighted by firing count, \
then averaged over hook points (delphi's; n = latents with a record). Failed examples are in \
none of these.";

/// Columns of the notes under the terminal's tables.
const NOTE_WIDTH: usize = 100;

/// `text` broken into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in text.split_whitespace() {
        let n = word.chars().count();
        if line_len > 0 && line_len + 1 + n > width {
            out.push('\n');
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += n;
    }
    out
}

/// A plain-text table: columns padded to their widest cell, the first left-aligned.
fn text_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = " ".repeat(w - c.chars().count());
                if i == 0 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(header);
    out.push('\n');
    let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// A Markdown table, cells escaped.
fn md_table(header: &[String], rows: &[Vec<String>]) -> String {
    let row = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| md_escape(c)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = row(header);
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for r in rows {
        out.push_str(&row(r));
    }
    out
}

/// Escapes text for a Markdown table cell or list item: `|`, `\`, `*`, `_`, backticks and HTML.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '*' | '_' | '`' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_wrap_at_spaces() {
        assert_eq!(wrap("aa bb cc  dd", 5), "aa bb\ncc dd");
        assert_eq!(wrap("toolongword x", 4), "toolongword\nx");
    }

    #[test]
    fn markdown_escapes_table_breakers_and_html() {
        assert_eq!(md_escape("a|b<c>&_d"), "a\\|b&lt;c&gt;&amp;\\_d");
    }
}
