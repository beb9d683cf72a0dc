//! Surprisal: how much does reading the explanation lower a base model's loss on the latent's
//! activating examples, compared with its non-activating ones?
//!
//! As in delphi's surprisal scorer (after Paulo et al., 2024): every example is scored twice by
//! a base language model, each time after a few-shot prompt of descriptions followed by
//! excerpts, once ending with the explanation and once with an uninformative baseline
//! description. A good explanation makes the model expect the activating examples, so their loss
//! drops more than that of non-activating examples.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use autointerp_client::{TokenScorer, Usage};
use autointerp_core::{Explanation, LatentRecord, Score};
use autointerp_explain::prompts::{PromptError, PromptKind, PromptSet, SurprisalContext};
use serde::{Deserialize, Serialize};

use crate::embedding::labelled_examples;
use crate::metrics::roc_auc;
use crate::scorer::{or_nan, unless_all_failed};
use crate::{Error, Result, ScoreDetails, Scorer, ScorerResult};

/// Name of the surprisal scorer, as in delphi (`scores/surprisal/`).
pub const SURPRISAL: &str = "surprisal";

/// Options of the surprisal scorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurprisalConfig {
    /// The description the baseline prefix ends with, in place of the explanation.
    pub baseline: String,
}

impl Default for SurprisalConfig {
    fn default() -> Self {
        Self {
            baseline: "Unrelated sentences on various topics.".into(),
        }
    }
}

/// The prefix an example is scored after: an introduction, three worked descriptions with their
/// excerpts, then `description` and the `Excerpts:` line that the example continues, from the
/// built-in `surprisal.jinja`.
///
/// ```
/// let p = autointerp_score::surprisal_prefix("Names of rivers.");
/// assert!(p.ends_with("Description: Names of rivers.\nExcerpts:\n"));
/// ```
pub fn surprisal_prefix(description: &str) -> String {
    crate::detection::built_in(surprisal_prefix_with(&PromptSet::embedded(), description))
}

/// [`surprisal_prefix`] from `prompts`' `surprisal.jinja`.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this description.
pub fn surprisal_prefix_with(
    prompts: &PromptSet,
    description: &str,
) -> std::result::Result<String, PromptError> {
    let context = SurprisalContext {
        description: description.trim().to_string(),
    };
    prompts.render_text(PromptKind::Surprisal, &context)
}

/// One example's losses, in the layout of delphi's `SurprisalOutput` plus `activating`,
/// `quantile` and `loss_reduction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurprisalOutcome {
    /// The example's text, as scored.
    pub text: String,
    /// Whether the latent fires on it (a test example) or not (a non-activating one).
    pub activating: bool,
    /// The quantile of an activating example.
    pub quantile: Option<u8>,
    /// The distance of a non-activating example found by similarity.
    pub distance: Option<f32>,
    /// The latent's activation on each token.
    pub activations: Vec<f32>,
    /// Loss (−log p, nats) of each token after the baseline prefix.
    pub no_explanation: Vec<f32>,
    /// Loss of each token after the explanation's prefix.
    pub explanation: Vec<f32>,
    /// Mean loss after the baseline minus mean loss after the explanation; `None` when either
    /// scoring failed or gave no finite loss (a failed example).
    pub loss_reduction: Option<f64>,
}

fn mean_loss(losses: &[f32]) -> Option<f64> {
    if losses.is_empty() {
        return None;
    }
    let m = losses.iter().map(|&l| f64::from(l)).sum::<f64>() / losses.len() as f64;
    m.is_finite().then_some(m)
}

/// Bytes of baseline log-probabilities a [`SurprisalScorer`] keeps (about 250,000 excerpts of 32 tokens).
pub const BASELINE_MEMO_BYTES: usize = 64 << 20;

/// Log-probabilities after the baseline prefix, by excerpt text, oldest dropped first beyond a
/// byte budget.
///
/// The baseline prefix does not depend on the explanation, so an excerpt's losses after it are
/// the same for every explanation scored on it: the random-explanation control and best-of-K
/// samples score the same excerpts again, and would otherwise pay a quarter of the scorer's
/// forward passes (half of the control's) for numbers already known.
#[derive(Debug, Default)]
struct BaselineMemo {
    losses: HashMap<Arc<str>, Arc<[f32]>>,
    order: VecDeque<Arc<str>>,
    bytes: usize,
    budget: usize,
}

impl BaselineMemo {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    fn cost(text: &str, losses: &[f32]) -> usize {
        // The text is held twice (key and queue share one allocation) plus map overhead.
        text.len() + std::mem::size_of_val(losses) + 64
    }

    fn get(&self, text: &str) -> Option<Arc<[f32]>> {
        self.losses.get(text).cloned()
    }

    fn insert(&mut self, text: &str, losses: Arc<[f32]>) {
        let cost = Self::cost(text, &losses);
        if cost > self.budget || self.losses.contains_key(text) {
            return;
        }
        while self.bytes + cost > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(l) = self.losses.remove(&old) {
                self.bytes -= Self::cost(&old, &l);
            }
        }
        let key: Arc<str> = Arc::from(text);
        self.order.push_back(Arc::clone(&key));
        self.losses.insert(key, losses);
        self.bytes += cost;
    }
}

/// The surprisal scorer: each test and non-activating example is scored by a [`TokenScorer`]
/// after [`surprisal_prefix`] of the explanation and of [`SurprisalConfig::baseline`].
///
/// The score is the ROC AUC of the loss reduction (mean per-token loss without the explanation
/// minus with it) separating activating (positive) from non-activating examples; NaN when the
/// examples scored lack one of the two classes.
///
/// Log-probabilities after the baseline are remembered per excerpt (up to [`BASELINE_MEMO_BYTES`], shared
/// by clones), so scoring a second explanation on the same excerpts (the random control,
/// best-of-K) asks the model only for the explanation's side.
#[derive(Debug, Clone)]
pub struct SurprisalScorer<T> {
    model: T,
    config: SurprisalConfig,
    prompts: Arc<PromptSet>,
    memo: Arc<Mutex<BaselineMemo>>,
}

impl<T> SurprisalScorer<T> {
    /// A surprisal scorer asking `model`, with options `config`.
    pub fn new(model: T, config: SurprisalConfig) -> Self {
        Self {
            model,
            config,
            prompts: PromptSet::embedded(),
            memo: Arc::new(Mutex::new(BaselineMemo::new(BASELINE_MEMO_BYTES))),
        }
    }

    /// Keeps at most `bytes` of baseline log-probabilities (0: none, every excerpt is scored twice).
    #[must_use]
    pub fn with_baseline_memo_bytes(mut self, bytes: usize) -> Self {
        self.memo = Arc::new(Mutex::new(BaselineMemo::new(bytes)));
        self
    }

    /// Builds its prefixes from `prompts`' `surprisal.jinja` instead of the built-in one.
    #[must_use]
    pub fn with_prompts(mut self, prompts: Arc<PromptSet>) -> Self {
        self.prompts = prompts;
        // Another baseline prefix: what was remembered under the old one does not hold.
        let budget = self.memo.lock().unwrap_or_else(|e| e.into_inner()).budget;
        self.memo = Arc::new(Mutex::new(BaselineMemo::new(budget)));
        self
    }

    /// The options.
    pub fn config(&self) -> &SurprisalConfig {
        &self.config
    }
}

impl<T: TokenScorer> SurprisalScorer<T> {
    /// Scores `explanation` on `record`'s test and non-activating examples; see
    /// [`Scorer::score`]. An example the model fails to score is a failed example; when it
    /// fails on every one, the first error is returned.
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = SURPRISAL))]
    pub async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> Result<ScorerResult> {
        let examples = labelled_examples(record, SURPRISAL)?;
        let with = surprisal_prefix_with(&self.prompts, &explanation.text)?;
        let without = surprisal_prefix_with(&self.prompts, &self.config.baseline)?;
        let texts: Vec<String> = examples.iter().map(|(e, _)| e.text()).collect();
        // A poisoned lock only means another task panicked mid-insert; the map is still whole.
        let memo = || self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let calls = texts.iter().map(|text| async {
            let known = memo().get(text);
            let baseline = async {
                match known {
                    Some(losses) => Ok(losses.to_vec()),
                    None => {
                        let lp = self.model.logprobs(&without, text).await?;
                        memo().insert(text, Arc::from(lp.as_slice()));
                        Ok(lp)
                    }
                }
            };
            let (a, b) = futures::join!(baseline, self.model.logprobs(&with, text));
            Ok::<_, autointerp_client::Error>((a?, b?))
        });
        let results = unless_all_failed(futures::future::join_all(calls).await)?;
        let mut failures = Vec::new();
        let mut outcomes = Vec::with_capacity(examples.len());
        for (((example, activating), text), result) in examples.iter().zip(texts).zip(results) {
            let (no_explanation, explained, loss_reduction) = match result {
                Ok((a, b)) => {
                    let a: Vec<f32> = a.into_iter().map(|lp| -lp).collect();
                    let b: Vec<f32> = b.into_iter().map(|lp| -lp).collect();
                    let reduction = match (mean_loss(&a), mean_loss(&b)) {
                        (Some(x), Some(y)) => Some(x - y),
                        _ => {
                            failures.push(format!("no tokens or no finite loss for {text:?}"));
                            None
                        }
                    };
                    (a, b, reduction)
                }
                Err(e) => {
                    failures.push(Error::Client(e).to_string());
                    (Vec::new(), Vec::new(), None)
                }
            };
            outcomes.push(SurprisalOutcome {
                text,
                activating: *activating,
                quantile: example.quantile,
                distance: example.distance,
                activations: example.activations.clone(),
                no_explanation,
                explanation: explained,
                loss_reduction,
            });
        }
        let (labels, scores): (Vec<bool>, Vec<f64>) = outcomes
            .iter()
            .filter_map(|o| o.loss_reduction.map(|r| (o.activating, r)))
            .unzip();
        let n_failed = outcomes.len() - labels.len();
        Ok(ScorerResult {
            score: Score {
                latent: record.id,
                scorer: SURPRISAL.to_string(),
                value: or_nan(roc_auc(&labels, &scores)),
                n_failed,
            },
            details: ScoreDetails::Surprisal { outcomes },
            failures,
            usage: Usage::default(),
        })
    }
}

impl<T: TokenScorer> Scorer for SurprisalScorer<T> {
    fn name(&self) -> &'static str {
        SURPRISAL
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        SurprisalScorer::score(self, record, explanation)
    }
}
