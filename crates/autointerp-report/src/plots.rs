//! Plots of a report, each written as PNG and SVG: score histograms, score against firing rate,
//! and pooled ROC curves of the classifier scorers.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use crate::results::{Problem, ProblemKind, Results, ScorerKey};
use crate::scores::ScoreKind;

/// Size of every plot, in pixels.
const SIZE: (u32, u32) = (800, 500);
const REAL: RGBColor = RGBColor(31, 119, 180);
const CONTROL: RGBColor = RGBColor(214, 39, 40);
const FONT: &str = "sans-serif";

/// What a plot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlotKind {
    /// Histogram of the latents' scores (the control's overlaid when present).
    Histogram,
    /// Each latent's score against its firing rate, log scale.
    FiringRate,
    /// ROC curve of all examples with a probability, pooled over latents (classifier scorers).
    Roc,
}

/// One plot, as two files relative to the report folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlotFile {
    /// The scorer plotted.
    pub scorer: ScorerKey,
    /// What it shows.
    pub kind: PlotKind,
    /// The PNG, relative to the report folder, e.g. `plots/detection_histogram.png`.
    pub png: String,
    /// The SVG, relative to the report folder.
    pub svg: String,
}

/// Registers DejaVu Sans (embedded) as `sans-serif` for the bitmap backend, once.
fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font could not be loaded".to_string())
        })
        .clone()
}

trait Plot {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Draws `plot` into `<dir>/<stem>.png` and `.svg`, each written whole or not at all: a reader
/// never finds half a plot, and a failed draw leaves the previous report's file.
fn write_both(plot: &impl Plot, dir: &Path, stem: &str) -> Result<(), String> {
    let png = dir.join(format!("{stem}.png"));
    // The bitmap backend writes a file named by its format: draw beside the final name, rename.
    let tmp = dir.join(format!(".{stem}.tmp.png"));
    let drawn = (|| {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        plot.draw(&root)?;
        root.present().map_err(err)
    })();
    if let Err(e) = drawn.and_then(|()| std::fs::rename(&tmp, &png).map_err(err)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        plot.draw(&root)?;
        root.present().map_err(err)?;
    }
    autointerp_core::fs::write_atomic(&dir.join(format!("{stem}.svg")), svg.as_bytes()).map_err(err)
}

/// A value range that contains `values` and `[lo, hi]`, never empty.
fn span(values: impl Iterator<Item = f64>, lo: f64, hi: f64) -> (f64, f64) {
    let (mut a, mut b) = (lo, hi);
    for v in values.filter(|v| v.is_finite()) {
        a = a.min(v);
        b = b.max(v);
    }
    if b - a < 1e-9 {
        b = a + 1.0;
    }
    (a, b)
}

/// A named, coloured set of data drawn as one series.
struct Series<T> {
    name: String,
    color: RGBColor,
    data: Vec<T>,
}

struct Histogram {
    title: String,
    series: Vec<Series<f64>>,
}

impl Plot for Histogram {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        const BINS: usize = 20;
        root.fill(&WHITE).map_err(err)?;
        let (lo, hi) = span(
            self.series.iter().flat_map(|s| s.data.iter().copied()),
            0.0,
            1.0,
        );
        let width = (hi - lo) / BINS as f64;
        let counts: Vec<Vec<usize>> = self
            .series
            .iter()
            .map(|s| {
                let mut c = vec![0usize; BINS];
                for v in s.data.iter().filter(|v| v.is_finite()) {
                    let i = (((v - lo) / width).floor() as usize).min(BINS - 1);
                    c[i] += 1;
                }
                c
            })
            .collect();
        let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi, 0.0..top * 1.1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("score")
            .y_desc("latents")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 14))
            .draw()
            .map_err(err)?;
        for (s, c) in self.series.iter().zip(&counts) {
            let (name, color) = (&s.name, s.color);
            chart
                .draw_series(c.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| {
                    let x0 = lo + i as f64 * width;
                    Rectangle::new(
                        [(x0, 0.0), (x0 + width, *n as f64)],
                        color.mix(0.55).filled(),
                    )
                }))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.55).filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

struct FiringScatter {
    title: String,
    points: Vec<(f64, f64)>,
}

impl Plot for FiringScatter {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let (xlo, xhi) = self
            .points
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), p| {
                (a.min(p.0), b.max(p.0))
            });
        let (xlo, xhi) = if xlo.is_finite() && xlo > 0.0 {
            (xlo / 2.0, xhi * 2.0)
        } else {
            (1e-6, 1.0)
        };
        let (ylo, yhi) = span(self.points.iter().map(|p| p.1), 0.0, 1.0);
        let pad = 0.04 * (yhi - ylo);
        let (ylo, yhi) = (ylo - pad, yhi + pad);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((xlo..xhi).log_scale(), ylo..yhi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("firing rate (fraction of tokens, log scale)")
            .y_desc("score")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .label_style((FONT, 14))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                self.points
                    .iter()
                    .map(|&p| Circle::new(p, 3, REAL.mix(0.7).filled())),
            )
            .map_err(err)?;
        Ok(())
    }
}

struct Roc {
    title: String,
    curves: Vec<Series<(f64, f64)>>,
}

impl Plot for Roc {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .label_style((FONT, 14))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                RGBColor(160, 160, 160),
            ))
            .map_err(err)?;
        for Series {
            name,
            color,
            data: points,
        } in &self.curves
        {
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// The ROC curve of `(label, score)` pairs, from (0, 0) to (1, 1), one point per distinct
/// score; `None` without both classes.
pub(crate) fn roc_points(pairs: &[(bool, f64)]) -> Option<Vec<(f64, f64)>> {
    let pos = pairs.iter().filter(|p| p.0).count() as f64;
    let neg = pairs.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let mut sorted: Vec<(bool, f64)> = pairs.to_vec();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let s = sorted[i].1;
        while i < sorted.len() && sorted[i].1 == s {
            if sorted[i].0 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        points.push((fp / neg, tp / pos));
    }
    Some(points)
}

fn defined_scores(results: &Results, key: &ScorerKey) -> Vec<f64> {
    results
        .latents
        .values()
        .filter_map(|l| l.scores.get(key))
        .filter(|s| s.is_defined())
        .map(|s| s.value)
        .collect()
}

fn pooled(results: &Results, key: &ScorerKey) -> Vec<(bool, f64)> {
    results
        .latents
        .values()
        .filter_map(|l| l.scores.get(key))
        .flat_map(|s| s.probabilities.iter().copied())
        .collect()
}

/// Draws every plot that has data into `<report_dir>/plots/`. A plot that cannot be drawn is
/// a problem, not an error.
pub(crate) fn write_plots(results: &Results, report_dir: &Path) -> (Vec<PlotFile>, Vec<Problem>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let dir = report_dir.join("plots");
    let fail = |key: Option<&ScorerKey>, msg: String| {
        let p = Problem::new(ProblemKind::PlotFailed, msg).at(&dir);
        match key {
            Some(k) => p.scorer(k),
            None => p,
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        problems.push(fail(None, format!("cannot create the plots folder: {e}")));
        return (files, problems);
    }
    if let Err(e) = ensure_font() {
        problems.push(fail(None, e));
        return (files, problems);
    }
    // Real scorers, and controls that have no real counterpart.
    let keys: Vec<&ScorerKey> = results
        .scorers
        .iter()
        .filter(|k| !k.control || !results.scorers.contains(&ScorerKey::real(k.name.clone())))
        .collect();
    for key in keys {
        let ctl = ScorerKey::control(key.name.clone());
        let has_ctl = !key.control && results.scorers.contains(&ctl);
        let mut emit =
            |kind: PlotKind, suffix: &str, plot: &dyn Fn(&Path, &str) -> Result<(), String>| {
                let stem = format!("{}_{suffix}", key.slug());
                match plot(&dir, &stem) {
                    Ok(()) => files.push(PlotFile {
                        scorer: key.clone(),
                        kind,
                        png: format!("plots/{stem}.png"),
                        svg: format!("plots/{stem}.svg"),
                    }),
                    Err(e) => problems.push(fail(Some(key), format!("{suffix} plot: {e}"))),
                }
            };

        let values = defined_scores(results, key);
        if values.is_empty() {
            continue;
        }
        let mut series = vec![Series {
            name: format!("{key} (n={})", values.len()),
            color: if key.control { CONTROL } else { REAL },
            data: values,
        }];
        if has_ctl {
            let c = defined_scores(results, &ctl);
            if !c.is_empty() {
                series.push(Series {
                    name: format!("{ctl} (n={})", c.len()),
                    color: CONTROL,
                    data: c,
                });
            }
        }
        let hist = Histogram {
            title: format!("{key}: scores of latents"),
            series,
        };
        emit(PlotKind::Histogram, "histogram", &|d, s| {
            write_both(&hist, d, s)
        });

        let points: Vec<(f64, f64)> = results
            .latents
            .values()
            .filter_map(|l| {
                let s = l.scores.get(key).filter(|s| s.is_defined())?;
                let rate = l.firing_rate().filter(|r| *r > 0.0 && r.is_finite())?;
                Some((rate, s.value))
            })
            .collect();
        if !points.is_empty() {
            let scatter = FiringScatter {
                title: format!("{key}: score vs firing rate (n={})", points.len()),
                points,
            };
            emit(PlotKind::FiringRate, "firing_rate", &|d, s| {
                write_both(&scatter, d, s)
            });
        }

        let is_classifier = results
            .latents
            .values()
            .filter_map(|l| l.scores.get(key))
            .any(|s| s.kind == ScoreKind::Classifier);
        if is_classifier {
            let mut curves = Vec::new();
            let mut add = |k: &ScorerKey, color: RGBColor| {
                let pairs = pooled(results, k);
                if let Some(points) = roc_points(&pairs) {
                    let (labels, scores): (Vec<bool>, Vec<f64>) = pairs.iter().copied().unzip();
                    let auc = autointerp_score::metrics::roc_auc(&labels, &scores)
                        .map_or_else(|| "-".into(), |a| format!("{a:.3}"));
                    curves.push(Series {
                        name: format!("{k}: AUC {auc} (n={})", pairs.len()),
                        color,
                        data: points,
                    });
                }
            };
            add(key, if key.control { CONTROL } else { REAL });
            if has_ctl {
                add(&ctl, CONTROL);
            }
            if !curves.is_empty() {
                let roc = Roc {
                    title: format!("{key}: ROC, examples pooled over latents"),
                    curves,
                };
                emit(PlotKind::Roc, "roc", &|d, s| write_both(&roc, d, s));
            }
        }
    }
    (files, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_points_by_hand() {
        // Scores 0.9(+) 0.6(-) 0.6(+) 0.1(-): thresholds give (0,½), (½,1), (1,1).
        let pts = roc_points(&[(true, 0.9), (false, 0.6), (true, 0.6), (false, 0.1)]).unwrap();
        assert_eq!(pts, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert_eq!(roc_points(&[(true, 0.5)]), None);
    }
}
