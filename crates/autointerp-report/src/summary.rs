//! Per-scorer summary statistics, and the tables that show them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use autointerp_core::LatentId;
use autointerp_score::metrics::roc_auc;
use autointerp_score::{Bootstrap, ConfidenceInterval};
use serde::Serialize;

use crate::results::{Problem, ProblemKind, Results, ScorerKey};
use crate::scores::ScoreKind;

/// Classifier metrics (detection, fuzzing) averaged over latents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifierMeans {
    /// Mean balanced accuracy over latents with at least one scored example.
    pub balanced_accuracy: Option<f64>,
    /// Mean F1 over the same latents.
    pub f1: Option<f64>,
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
    /// Mean score over latents with a defined score.
    pub mean: Option<f64>,
    /// Bootstrap interval of the mean (latents resampled).
    pub ci: Option<ConfidenceInterval>,
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
}

fn mean(x: &[f64]) -> Option<f64> {
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

fn mean_ci(values: &[f64], bootstrap: &Bootstrap) -> Option<ConfidenceInterval> {
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
    let classifier = (kind == Some(ScoreKind::Classifier)).then(|| {
        let sums: Vec<_> = scores
            .iter()
            .filter_map(|s| s.classifier.as_ref())
            .filter(|c| c.confusion.scored() > 0)
            .collect();
        let ba: Vec<f64> = sums.iter().map(|c| c.metrics.balanced_accuracy).collect();
        let f1: Vec<f64> = sums.iter().map(|c| c.metrics.f1).collect();
        let auc: Vec<f64> = sums
            .iter()
            .filter_map(|c| c.auc)
            .filter(|a| a.is_finite())
            .collect();
        let (labels, probs): (Vec<bool>, Vec<f64>) = scores
            .iter()
            .flat_map(|s| s.probabilities.iter().copied())
            .unzip();
        ClassifierMeans {
            balanced_accuracy: mean(&ba),
            f1: mean(&f1),
            auc: mean(&auc),
            n_auc: auc.len(),
            pooled_auc: roc_auc(&labels, &probs),
            n_pooled: labels.len(),
        }
    });
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
        n_failed: scores.iter().map(|s| s.n_failed).sum(),
        n_items: scores.iter().map(|s| s.n_items).sum(),
        n_unreadable,
        classifier,
        vs_control: None,
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
    /// The header and rows of the per-scorer table, as plain strings.
    pub fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let pct = (self.confidence * 100.0).round();
        let header = [
            "scorer".to_string(),
            "latents".into(),
            "defined".into(),
            "mean".into(),
            format!("{pct}% CI"),
            "failed".into(),
            "unreadable".into(),
            "bal. acc".into(),
            "F1".into(),
            "AUC".into(),
            "pooled AUC".into(),
            "random mean".into(),
            "Δ vs random (paired)".into(),
        ]
        .to_vec();
        let rows = self
            .scorers
            .iter()
            .map(|s| {
                let c = s.classifier.as_ref();
                let v = s.vs_control.as_ref();
                vec![
                    s.scorer.to_string(),
                    s.n_latents.to_string(),
                    s.n_defined.to_string(),
                    num(s.mean),
                    interval(s.ci.as_ref()),
                    format!("{}/{}", s.n_failed, s.n_items),
                    s.n_unreadable.to_string(),
                    num(c.and_then(|c| c.balanced_accuracy)),
                    num(c.and_then(|c| c.f1)),
                    num(c.and_then(|c| c.auc)),
                    num(c.and_then(|c| c.pooled_auc)),
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
            .collect()
    }

    /// The summary as a plain-text table, for a terminal: one line of latent counts, the
    /// control comparisons, the per-scorer table, and the problems counted by kind with the
    /// first few of each.
    pub fn to_text(&self) -> String {
        let (header, rows) = self.table();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
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
        let mut out = format!("{}\n\n", self.latent_line());
        let sentences = self.control_sentences();
        for sentence in &sentences {
            out.push_str(sentence);
            out.push('\n');
        }
        if !sentences.is_empty() {
            out.push('\n');
        }
        out.push_str(&line(&header));
        out.push('\n');
        let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        if rows.is_empty() {
            out.push_str("(no scores found)\n");
        }
        self.push_problems(&mut out, false);
        out
    }

    /// The summary as Markdown: latent counts, the per-scorer table, problems.
    pub fn to_markdown(&self) -> String {
        let (header, rows) = self.table();
        let mut out = format!(
            "# autointerp report\n\nResults: `{}`\n\n{}\n\n",
            md_escape(&self.results_dir.display().to_string()).replace('`', "'"),
            self.latent_line()
        );
        let row = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| md_escape(c)).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        out.push_str(&row(&header));
        out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        for r in &rows {
            out.push_str(&row(r));
        }
        out.push_str(
            "\n`failed` counts examples (trials, sequences) whose answer could not be parsed, \
             out of all in the score files; `mean` is over latents with a defined score.\n",
        );
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
    fn markdown_escapes_table_breakers_and_html() {
        assert_eq!(md_escape("a|b<c>&_d"), "a\\|b&lt;c&gt;&amp;\\_d");
    }
}
