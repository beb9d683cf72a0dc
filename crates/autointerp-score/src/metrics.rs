//! Metrics: classification metrics from 0/1 predictions, ROC AUC from probabilities, correlation
//! and explained variance for simulations, frequency-weighted F1 across latents, and bootstrap
//! confidence intervals.
//!
//! Conventions follow scikit-learn with `zero_division=0`: a ratio with a zero denominator is 0.
//! Failed examples (no prediction) never enter a metric; they are counted in
//! [`Confusion::failed`].

use std::collections::BTreeMap;

use autointerp_core::{HookPoint, LatentId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::ExampleOutcome;

/// Counts of right and wrong 0/1 predictions, and of failed examples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Activating, predicted 1.
    pub true_positives: usize,
    /// Not activating, predicted 0.
    pub true_negatives: usize,
    /// Not activating, predicted 1.
    pub false_positives: usize,
    /// Activating, predicted 0.
    pub false_negatives: usize,
    /// Examples whose answer could not be parsed; in no other count.
    pub failed: usize,
}

impl Confusion {
    /// Counts `outcomes`.
    pub fn from_outcomes<'a>(outcomes: impl IntoIterator<Item = &'a ExampleOutcome>) -> Self {
        let mut c = Self::default();
        for o in outcomes {
            c.add(o.activating, o.prediction);
        }
        c
    }

    /// Counts pairs of truth and prediction (`None` = failed).
    pub fn from_labels(truth: &[bool], predicted: &[Option<bool>]) -> Self {
        let mut c = Self::default();
        for (&t, &p) in truth.iter().zip(predicted) {
            c.add(t, p);
        }
        c
    }

    fn add(&mut self, truth: bool, predicted: Option<bool>) {
        match (truth, predicted) {
            (_, None) => self.failed += 1,
            (true, Some(true)) => self.true_positives += 1,
            (false, Some(false)) => self.true_negatives += 1,
            (false, Some(true)) => self.false_positives += 1,
            (true, Some(false)) => self.false_negatives += 1,
        }
    }

    /// Scored activating examples.
    pub fn positives(&self) -> usize {
        self.true_positives + self.false_negatives
    }

    /// Scored non-activating examples.
    pub fn negatives(&self) -> usize {
        self.true_negatives + self.false_positives
    }

    /// Scored examples (failed ones excluded).
    pub fn scored(&self) -> usize {
        self.positives() + self.negatives()
    }

    /// The metrics of these counts.
    pub fn metrics(&self) -> ClassificationMetrics {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let (tp, tn, fp, fn_) = (
            self.true_positives,
            self.true_negatives,
            self.false_positives,
            self.false_negatives,
        );
        let (pos, neg) = (self.positives(), self.negatives());
        let recall = ratio(tp, pos);
        let specificity = ratio(tn, neg);
        // sklearn: the mean recall over the classes present in the truth.
        let present: Vec<f64> = [
            (pos > 0).then_some(recall),
            (neg > 0).then_some(specificity),
        ]
        .into_iter()
        .flatten()
        .collect();
        let balanced_accuracy = if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        };
        ClassificationMetrics {
            accuracy: ratio(tp + tn, self.scored()),
            balanced_accuracy,
            precision: ratio(tp, tp + fp),
            recall,
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
            true_positive_rate: recall,
            true_negative_rate: specificity,
            false_positive_rate: ratio(fp, neg),
            false_negative_rate: ratio(fn_, pos),
            positives: pos,
            negatives: neg,
            failed: self.failed,
        }
    }
}

/// Classification metrics over the scored (non-failed) examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Mean of the recalls of the classes present (sklearn's `balanced_accuracy_score`). With
    /// both classes present this is delphi's "accuracy"; with one class, delphi averages its
    /// recall with a 0 for the absent class instead.
    pub balanced_accuracy: f64,
    /// `tp / (tp + fp)`.
    pub precision: f64,
    /// `tp / (tp + fn)`.
    pub recall: f64,
    /// `2tp / (2tp + fp + fn)`, the harmonic mean of precision and recall.
    pub f1: f64,
    /// Same as `recall`.
    pub true_positive_rate: f64,
    /// `tn / (tn + fp)`.
    pub true_negative_rate: f64,
    /// `fp / (tn + fp)`.
    pub false_positive_rate: f64,
    /// `fn / (tp + fn)`.
    pub false_negative_rate: f64,
    /// Scored activating examples.
    pub positives: usize,
    /// Scored non-activating examples.
    pub negatives: usize,
    /// Failed examples, excluded from every number above.
    pub failed: usize,
}

/// Area under the ROC curve of `scores` for the binary `labels`, exactly as scikit-learn's
/// `roc_auc_score` computes it: tied scores count one half (the trapezoid through a tied
/// group), which equals the Mann–Whitney statistic with average ranks. `None` when either class
/// is missing (sklearn raises), lengths differ, or a score is NaN.
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> Option<f64> {
    if labels.len() != scores.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let n_pos = labels.iter().filter(|l| **l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        rank_sum += avg * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// ROC AUC of the examples that have a probability (failed examples and those without logprobs
/// are left out), as delphi's `compute_auc`.
pub fn outcomes_auc<'a>(outcomes: impl IntoIterator<Item = &'a ExampleOutcome>) -> Option<f64> {
    let (labels, scores): (Vec<bool>, Vec<f64>) = outcomes
        .into_iter()
        .filter_map(|o| o.probability.map(|p| (o.activating, f64::from(p))))
        .unzip();
    roc_auc(&labels, &scores)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Pearson correlation (numpy's `corrcoef(x, y)[0, 1]`); `None` for fewer than two points,
/// different lengths, or a constant input (numpy gives NaN).
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// The coefficient of determination, as scikit-learn's `r2_score`: `1 − SS_res / SS_tot`
/// around the mean of `truth`; for a constant `truth`, 1 when the prediction is perfect and 0
/// otherwise. `None` for empty or mismatched inputs.
pub fn r2_score(truth: &[f64], pred: &[f64]) -> Option<f64> {
    if truth.len() != pred.len() || truth.is_empty() {
        return None;
    }
    let m = mean(truth);
    let ss_res: f64 = truth.iter().zip(pred).map(|(t, p)| (t - p).powi(2)).sum();
    let ss_tot: f64 = truth.iter().map(|t| (t - m).powi(2)).sum();
    Some(if ss_tot == 0.0 {
        if ss_res == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        1.0 - ss_res / ss_tot
    })
}

/// OpenAI's simulator R² (`rsquared_score_from_sequences`): `1 − mean((t − p)²) / mean(t²)`,
/// measured against predicting 0 everywhere rather than the mean. `None` when `truth` is all
/// zero, empty or mismatched.
pub fn rsquared_score(truth: &[f64], pred: &[f64]) -> Option<f64> {
    if truth.len() != pred.len() || truth.is_empty() {
        return None;
    }
    let denom = mean(&truth.iter().map(|t| t * t).collect::<Vec<_>>());
    let num = mean(
        &truth
            .iter()
            .zip(pred)
            .map(|(t, p)| (t - p).powi(2))
            .collect::<Vec<_>>(),
    );
    (denom > 0.0).then(|| 1.0 - num / denom)
}

/// OpenAI's absolute deviation explained (`absolute_dev_explained_score_from_sequences`):
/// `1 − mean(|t − p|) / mean(|t|)`. `None` when `truth` is all zero, empty or mismatched.
pub fn absolute_dev_explained_score(truth: &[f64], pred: &[f64]) -> Option<f64> {
    if truth.len() != pred.len() || truth.is_empty() {
        return None;
    }
    let denom = mean(&truth.iter().map(|t| t.abs()).collect::<Vec<_>>());
    let num = mean(
        &truth
            .iter()
            .zip(pred)
            .map(|(t, p)| (t - p).abs())
            .collect::<Vec<_>>(),
    );
    (denom > 0.0).then(|| 1.0 - num / denom)
}

/// One latent's F1 and how often it fires, for [`frequency_weighted_f1`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatentF1 {
    /// The latent.
    pub latent: LatentId,
    /// Its F1 (e.g. `Confusion::from_outcomes(..).metrics().f1`).
    pub f1: f64,
    /// Number of tokens on which it fires.
    pub firing_count: u64,
}

/// delphi's frequency-weighted F1: within each hook point, the mean of the latents' F1 weighted by
/// their firing counts; then the plain mean over hook points (hook points whose latents never fire
/// are skipped). `None` when no hook point has weight.
pub fn frequency_weighted_f1(latents: &[LatentF1]) -> Option<f64> {
    let mut per_hook: BTreeMap<HookPoint, (f64, f64)> = BTreeMap::new();
    for l in latents {
        let e = per_hook.entry(l.latent.hookpoint).or_default();
        e.0 += l.f1 * l.firing_count as f64;
        e.1 += l.firing_count as f64;
    }
    let means: Vec<f64> = per_hook
        .values()
        .filter(|(_, w)| *w > 0.0)
        .map(|(s, w)| s / w)
        .collect();
    (!means.is_empty()).then(|| mean(&means))
}

/// numpy's default (`linear`) percentile of `values`, `q` in 0..=100; `None` when `values` is
/// empty or holds NaN.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * (q.clamp(0.0, 100.0) / 100.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

/// Percentile-bootstrap confidence intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bootstrap {
    /// Number of resamples.
    pub n_resamples: usize,
    /// Coverage of the interval, e.g. 0.95.
    pub confidence: f64,
    /// Seeds the resampling.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            n_resamples: 1000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

/// A statistic with its bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceInterval {
    /// The statistic on the full sample.
    pub estimate: f64,
    /// Lower bound: the `(1 − confidence) / 2` percentile of the resampled statistics.
    pub low: f64,
    /// Upper bound: the `(1 + confidence) / 2` percentile.
    pub high: f64,
    /// Resamples on which the statistic was defined (the others are skipped).
    pub n_used: usize,
}

impl Bootstrap {
    /// The interval of `statistic` over `items`: `n_resamples` times, draw `items.len()` items
    /// with replacement (seeded), evaluate the statistic; the bounds are percentiles of those
    /// values (the percentile method). Resamples where the statistic is `None` or NaN (e.g. AUC
    /// on a resample with one class) are skipped. `None` when the statistic is undefined on the
    /// full sample or on every resample.
    ///
    /// ```
    /// use autointerp_score::Bootstrap;
    /// let x: Vec<f64> = (0..100).map(f64::from).collect();
    /// let mean = |s: &[&f64]| Some(s.iter().copied().sum::<f64>() / s.len() as f64);
    /// let ci = Bootstrap::default().interval(&x, mean).unwrap();
    /// assert_eq!(ci.estimate, 49.5);
    /// assert!(ci.low < 49.5 && 49.5 < ci.high);
    /// ```
    pub fn interval<T>(
        &self,
        items: &[T],
        mut statistic: impl FnMut(&[&T]) -> Option<f64>,
    ) -> Option<ConfidenceInterval> {
        if items.is_empty() {
            return None;
        }
        let all: Vec<&T> = items.iter().collect();
        let estimate = statistic(&all).filter(|x| !x.is_nan())?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut sample: Vec<&T> = Vec::with_capacity(items.len());
        let mut values = Vec::with_capacity(self.n_resamples);
        for _ in 0..self.n_resamples {
            sample.clear();
            sample.extend((0..items.len()).map(|_| &items[rng.random_range(0..items.len())]));
            if let Some(x) = statistic(&sample).filter(|x| !x.is_nan()) {
                values.push(x);
            }
        }
        let alpha = (1.0 - self.confidence.clamp(0.0, 1.0)) / 2.0;
        Some(ConfidenceInterval {
            estimate,
            low: percentile(&values, 100.0 * alpha)?,
            high: percentile(&values, 100.0 * (1.0 - alpha))?,
            n_used: values.len(),
        })
    }
}

/// Metrics of one latent's (or a whole run's) classifier outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSummary {
    /// The confusion counts.
    pub confusion: Confusion,
    /// The metrics of those counts.
    pub metrics: ClassificationMetrics,
    /// ROC AUC from probabilities, when logprobs were available for both classes.
    pub auc: Option<f64>,
}

impl ClassifierSummary {
    /// Summarises `outcomes`.
    pub fn from_outcomes(outcomes: &[ExampleOutcome]) -> Self {
        let confusion = Confusion::from_outcomes(outcomes);
        Self {
            confusion,
            metrics: confusion.metrics(),
            auc: outcomes_auc(outcomes),
        }
    }

    /// The shared [`Score`](autointerp_core::Score): balanced accuracy, with the failed count.
    pub fn score(&self, latent: LatentId, scorer: &str) -> autointerp_core::Score {
        autointerp_core::Score {
            latent,
            scorer: scorer.to_string(),
            value: self.metrics.balanced_accuracy,
            n_failed: self.confusion.failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_classification() {
        // truth   1 1 1 0 0 0 0 1
        // pred    1 0 1 1 0 0 - 1   (- = failed)
        let truth = [true, true, true, false, false, false, false, true];
        let pred = [
            Some(true),
            Some(false),
            Some(true),
            Some(true),
            Some(false),
            Some(false),
            None,
            Some(true),
        ];
        let c = Confusion::from_labels(&truth, &pred);
        assert_eq!(
            (
                c.true_positives,
                c.false_negatives,
                c.false_positives,
                c.true_negatives,
                c.failed
            ),
            (3, 1, 1, 2, 1)
        );
        let m = c.metrics();
        assert!(close(m.accuracy, 5.0 / 7.0));
        assert!(close(m.precision, 0.75));
        assert!(close(m.recall, 0.75));
        assert!(close(m.f1, 0.75));
        assert!(close(m.balanced_accuracy, (0.75 + 2.0 / 3.0) / 2.0));
        assert!(close(m.false_positive_rate, 1.0 / 3.0));
        assert_eq!(m.failed, 1);
    }

    #[test]
    fn zero_division_is_zero() {
        let m = Confusion::default().metrics();
        assert_eq!(
            (m.accuracy, m.precision, m.recall, m.f1, m.balanced_accuracy),
            (0.0, 0.0, 0.0, 0.0, 0.0)
        );
        // Only positives, all predicted 0.
        let m = Confusion::from_labels(&[true, true], &[Some(false), Some(false)]).metrics();
        assert_eq!((m.precision, m.f1, m.balanced_accuracy), (0.0, 0.0, 0.0));
    }

    #[test]
    fn hand_computed_auc_with_ties() {
        // Scores 0.1(0) 0.4(1) 0.4(0) 0.8(1): pairs (pos, neg): (0.4,0.1)=1, (0.4,0.4)=½,
        // (0.8,0.1)=1, (0.8,0.4)=1 → 3.5 / 4.
        let auc = roc_auc(&[false, true, false, true], &[0.1, 0.4, 0.4, 0.8]).unwrap();
        assert!(close(auc, 0.875));
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
        assert!(close(roc_auc(&[true, false], &[0.5, 0.5]).unwrap(), 0.5));
    }

    #[test]
    fn hand_computed_regression() {
        assert!(close(
            pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap(),
            1.0
        ));
        assert!(close(
            pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(),
            -1.0
        ));
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
        // truth 0 10, pred 2 8: mean sq err 4, mean sq truth 50 → 1 − 4/50.
        assert!(close(
            rsquared_score(&[0.0, 10.0], &[2.0, 8.0]).unwrap(),
            0.92
        ));
        // mean abs err 2, mean abs truth 5 → 0.6.
        assert!(close(
            absolute_dev_explained_score(&[0.0, 10.0], &[2.0, 8.0]).unwrap(),
            0.6
        ));
        // SS_res 8, SS_tot 50 → 0.84.
        assert!(close(r2_score(&[0.0, 10.0], &[2.0, 8.0]).unwrap(), 0.84));
        assert_eq!(rsquared_score(&[0.0, 0.0], &[1.0, 0.0]), None);
        assert_eq!(r2_score(&[3.0, 3.0], &[3.0, 3.0]), Some(1.0));
        assert_eq!(r2_score(&[3.0, 3.0], &[3.0, 2.0]), Some(0.0));
    }

    #[test]
    fn frequency_weighting_is_per_hookpoint_then_averaged() {
        let l = |h: HookPoint, i: u32, f1: f64, firing_count: u64| LatentF1 {
            latent: LatentId::new(h, i),
            f1,
            firing_count,
        };
        let latents = [
            l(HookPoint::Residual(1), 0, 1.0, 30),
            l(HookPoint::Residual(1), 1, 0.0, 10),
            l(HookPoint::Residual(2), 0, 0.5, 5),
            l(HookPoint::Residual(3), 0, 0.9, 0), // never fires: its hook point is skipped
        ];
        // Layer 1: (30·1 + 10·0) / 40 = 0.75; layer 2: 0.5 → mean 0.625.
        assert!(close(frequency_weighted_f1(&latents).unwrap(), 0.625));
        assert_eq!(frequency_weighted_f1(&latents[3..]), None);
    }

    #[test]
    fn bootstrap_is_seeded_and_sensible() {
        let x: Vec<f64> = (0..200).map(|i| f64::from(i % 10)).collect();
        let mean = |s: &[&f64]| Some(s.iter().copied().sum::<f64>() / s.len() as f64);
        let b = Bootstrap {
            n_resamples: 2000,
            confidence: 0.95,
            seed: 7,
        };
        let ci = b.interval(&x, mean).unwrap();
        assert_eq!(ci, b.interval(&x, mean).unwrap());
        assert_ne!(
            ci,
            Bootstrap {
                seed: 8,
                ..b.clone()
            }
            .interval(&x, mean)
            .unwrap()
        );
        // Normal approximation: 1.96 · sd / √n = 1.96 · 2.872 / 14.14 ≈ 0.398.
        assert!(ci.low < 4.5 && ci.high > 4.5);
        let half_width = (ci.high - ci.low) / 2.0;
        assert!((half_width - 0.398).abs() < 0.05, "{ci:?}");
        assert_eq!(ci.n_used, 2000);
        // AUC is undefined on one-class resamples; those are skipped.
        let pairs = [(true, 0.9), (false, 0.1), (true, 0.6), (false, 0.7)];
        let auc = |s: &[&(bool, f64)]| {
            let (l, sc): (Vec<bool>, Vec<f64>) = s.iter().map(|p| (p.0, p.1)).unzip();
            roc_auc(&l, &sc)
        };
        let ci = Bootstrap {
            n_resamples: 500,
            ..Bootstrap::default()
        }
        .interval(&pairs, auc)
        .unwrap();
        assert!(ci.n_used < 500 && ci.n_used > 300 && close(ci.estimate, 0.75));
    }
}
