//! The [`Scorer`] trait that every scorer implements, and what a scorer returns.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use autointerp_client::Usage;
use autointerp_core::{Explanation, LatentRecord, Score};
use serde::{Deserialize, Serialize};

use crate::{
    write_score_file, ClassifierSummary, EmbeddingOutcome, ExampleOutcome, IntruderOutcome, Result,
    ScoredSimulation, SurprisalOutcome,
};

/// Something that scores an explanation of a latent against the latent's examples. A pipeline
/// runs any set of them; `&S` and `Arc<S>` are scorers too.
pub trait Scorer: Send + Sync {
    /// The scorer's name, as delphi names its score folders: `detection`, `fuzz`, `intruder`,
    /// `simulation`, `embedding`, `surprisal`.
    fn name(&self) -> &'static str;

    /// Scores `explanation` on `record`'s held-out examples.
    ///
    /// Answers that cannot be parsed are counted as failed ([`Score::n_failed`]) and excluded
    /// from the score, never a panic or an error. Errors are records that lack the examples the
    /// scorer needs, invalid options, and requests of which **every one** failed (a single
    /// failed request only fails the examples it concerned).
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send;

    /// Scores again only the items that failed in `previous`, an earlier result of this scorer
    /// for the same record and explanation (read back with
    /// [`read_score_file`](crate::read_score_file)), and returns the whole result: the items
    /// that succeeded before are kept verbatim, so a rerun pays only for what failed.
    ///
    /// The default scores everything again, which is right for scorers whose items cannot
    /// fail apart. When `previous` does not match what this scorer would show now (the record
    /// or the options changed), a scorer scores everything again too. [`Scorer::score`]'s
    /// errors apply, except that requests failing again are not an error while some earlier
    /// item is kept: the result then has the same failed items as `previous`.
    fn retry_failed(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        previous: &ScoreDetails,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        let _ = previous;
        self.score(record, explanation)
    }

    /// Whether the score depends on the explanation. Intruder's does not (its trials show
    /// examples only), so a random-explanation control has nothing to compare there.
    fn reads_explanation(&self) -> bool {
        true
    }
}

/// What [`DynScorer::score_boxed`] returns.
pub type ScoreFuture<'a> = Pin<Box<dyn Future<Output = Result<ScorerResult>> + Send + 'a>>;

/// [`Scorer`] in a dyn-compatible form: every scorer is one, so a run holds the scorers it was
/// configured with, and any a user wrote, as `Box<dyn DynScorer>`.
pub trait DynScorer: Send + Sync {
    /// [`Scorer::name`] (named apart so that both traits can be in scope).
    fn scorer_name(&self) -> &'static str;
    /// [`Scorer::reads_explanation`].
    fn scorer_reads_explanation(&self) -> bool;
    /// [`Scorer::score`], boxed.
    fn score_boxed<'a>(
        &'a self,
        record: &'a LatentRecord,
        explanation: &'a Explanation,
    ) -> ScoreFuture<'a>;
    /// [`Scorer::retry_failed`], boxed.
    fn retry_failed_boxed<'a>(
        &'a self,
        record: &'a LatentRecord,
        explanation: &'a Explanation,
        previous: &'a ScoreDetails,
    ) -> ScoreFuture<'a>;
}

impl<S: Scorer> DynScorer for S {
    fn scorer_name(&self) -> &'static str {
        Scorer::name(self)
    }
    fn scorer_reads_explanation(&self) -> bool {
        Scorer::reads_explanation(self)
    }
    fn score_boxed<'a>(
        &'a self,
        record: &'a LatentRecord,
        explanation: &'a Explanation,
    ) -> ScoreFuture<'a> {
        Box::pin(self.score(record, explanation))
    }
    fn retry_failed_boxed<'a>(
        &'a self,
        record: &'a LatentRecord,
        explanation: &'a Explanation,
        previous: &'a ScoreDetails,
    ) -> ScoreFuture<'a> {
        Box::pin(self.retry_failed(record, explanation, previous))
    }
}

impl std::fmt::Debug for dyn DynScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DynScorer({})", self.scorer_name())
    }
}

impl<S: Scorer> Scorer for Arc<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn reads_explanation(&self) -> bool {
        (**self).reads_explanation()
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        (**self).score(record, explanation)
    }
    fn retry_failed(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        previous: &ScoreDetails,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        (**self).retry_failed(record, explanation, previous)
    }
}

impl<S: Scorer> Scorer for &S {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn reads_explanation(&self) -> bool {
        (**self).reads_explanation()
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        (**self).score(record, explanation)
    }
    fn retry_failed(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        previous: &ScoreDetails,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        (**self).retry_failed(record, explanation, previous)
    }
}

/// What one scorer made of one explanation of one latent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerResult {
    /// The headline number, with the scorer's name and the number of failed examples (see each
    /// scorer for what the value is). An undefined value is NaN, written `"nan"` in JSON as
    /// delphi writes undefined scores.
    #[serde(with = "nan_score")]
    pub score: Score,
    /// The per-example outcomes, in delphi's layout.
    pub details: ScoreDetails,
    /// Why each failed request or answer failed, one message per failure, in order.
    pub failures: Vec<String>,
    /// Tokens and cost of the requests, summed (zero for scorers that send none).
    pub usage: Usage,
}

impl ScorerResult {
    /// Examples (or trials, or sequences) whose answer could not be used.
    pub fn n_failed(&self) -> usize {
        self.score.n_failed
    }

    /// Writes the per-example outcomes to `<scores_dir>/<scorer>/<latent>.txt`, as delphi does
    /// (see [`write_score_file`]).
    pub fn write_score_file(&self, scores_dir: &Path) -> Result<PathBuf> {
        let (dir, scorer, latent) = (scores_dir, self.score.scorer.as_str(), &self.score.latent);
        match &self.details {
            ScoreDetails::Classifier { outcomes, .. } => {
                write_score_file(dir, scorer, latent, outcomes)
            }
            ScoreDetails::Intruder { outcomes } => write_score_file(dir, scorer, latent, outcomes),
            ScoreDetails::Simulation { groups } => write_score_file(dir, scorer, latent, groups),
            ScoreDetails::Embedding { outcomes } => write_score_file(dir, scorer, latent, outcomes),
            ScoreDetails::Surprisal { outcomes } => write_score_file(dir, scorer, latent, outcomes),
            ScoreDetails::Intervention { trials } => write_score_file(dir, scorer, latent, trials),
            ScoreDetails::SurprisalIntervention { outcomes } => {
                write_score_file(dir, scorer, latent, outcomes)
            }
        }
    }
}

/// The per-example outcomes of a scorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScoreDetails {
    /// Detection and fuzzing: one outcome per example shown, and their metrics (with the ROC AUC
    /// when the answers came with logprobs).
    Classifier {
        /// One per example, in the order shown.
        outcomes: Vec<ExampleOutcome>,
        /// Confusion counts, metrics and AUC.
        summary: ClassifierSummary,
    },
    /// Intruder: one outcome per trial.
    Intruder {
        /// One per trial.
        outcomes: Vec<IntruderOutcome>,
    },
    /// Simulation: the all-sequences group, then one group per quantile.
    Simulation {
        /// As [`score_simulation`](crate::score_simulation) returns them.
        groups: Vec<ScoredSimulation>,
    },
    /// Embedding: one outcome per example.
    Embedding {
        /// Test examples, then non-activating ones.
        outcomes: Vec<EmbeddingOutcome>,
    },
    /// Surprisal: one outcome per example.
    Surprisal {
        /// Test examples, then non-activating ones.
        outcomes: Vec<SurprisalOutcome>,
    },
    /// The judged intervention scorer: one trial per prompt.
    Intervention {
        /// One per prompt.
        trials: Vec<crate::InterventionTrial>,
    },
    /// The surprisal intervention scorer: one outcome per prompt.
    SurprisalIntervention {
        /// One per prompt.
        outcomes: Vec<crate::SurprisalInterventionOutcome>,
    },
}

impl ScoreDetails {
    /// Items (examples, trials, sequences) whose answer could not be used, as the scorer counts
    /// them in [`Score::n_failed`]: a classifier example or intruder trial without a
    /// prediction, a sequence without a simulation, an example without a similarity or a loss
    /// reduction.
    pub fn n_failed(&self) -> usize {
        match self {
            Self::Classifier { outcomes, .. } => outcomes.iter().filter(|o| o.failed()).count(),
            Self::Intruder { outcomes } => outcomes.iter().filter(|o| o.correct.is_none()).count(),
            Self::Simulation { groups } => groups.first().map_or(0, |g| g.n_failed),
            Self::Embedding { outcomes } => {
                outcomes.iter().filter(|o| o.similarity.is_none()).count()
            }
            Self::Surprisal { outcomes } => outcomes
                .iter()
                .filter(|o| o.loss_reduction.is_none())
                .count(),
            Self::Intervention { trials } => trials.iter().filter(|t| t.correct.is_none()).count(),
            Self::SurprisalIntervention { outcomes } => {
                outcomes.iter().filter(|o| o.gain().is_none()).count()
            }
        }
    }

    /// Items (examples, trials, sequences) scored, failed ones included.
    pub fn n_items(&self) -> usize {
        match self {
            Self::Classifier { outcomes, .. } => outcomes.len(),
            Self::Intruder { outcomes } => outcomes.len(),
            Self::Simulation { groups } => groups
                .first()
                .map_or(0, |g| g.scored_sequence_simulations.len() + g.n_failed),
            Self::Embedding { outcomes } => outcomes.len(),
            Self::Surprisal { outcomes } => outcomes.len(),
            Self::Intervention { trials } => trials.len(),
            Self::SurprisalIntervention { outcomes } => outcomes.len(),
        }
    }
}

/// [`Score`] with its value written as [`MaybeNan`], so that NaN survives JSON.
mod nan_score {
    use autointerp_core::{LatentId, Score};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::MaybeNan;

    #[derive(Serialize, Deserialize)]
    struct Wire {
        latent: LatentId,
        scorer: String,
        value: MaybeNan,
        n_failed: usize,
    }

    pub(super) fn serialize<S: Serializer>(score: &Score, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            latent: score.latent,
            scorer: score.scorer.clone(),
            value: MaybeNan((!score.value.is_nan()).then_some(score.value)),
            n_failed: score.n_failed,
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Score, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(Score {
            latent: w.latent,
            scorer: w.scorer,
            value: w.value.0.unwrap_or(f64::NAN),
            n_failed: w.n_failed,
        })
    }
}

/// Adds `more` to `total`; the cost is known when either is.
pub(crate) fn add_usage(total: &mut Usage, more: &Usage) {
    total.prompt_tokens += more.prompt_tokens;
    total.completion_tokens += more.completion_tokens;
    total.cost = match (total.cost, more.cost) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
}

/// `Some(x)` unless undefined; NaN otherwise, for [`Score::value`].
pub(crate) fn or_nan(x: Option<f64>) -> f64 {
    x.unwrap_or(f64::NAN)
}

/// Fails with the first error when every one of `results` is an error (and there is at least
/// one); otherwise gives them back.
pub(crate) fn unless_all_failed<T, E>(
    results: Vec<std::result::Result<T, E>>,
) -> std::result::Result<Vec<std::result::Result<T, E>>, E> {
    if results.iter().all(std::result::Result::is_err) {
        return match results.into_iter().find_map(std::result::Result::err) {
            Some(e) => Err(e),
            None => Ok(Vec::new()),
        };
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_up() {
        let mut total = Usage::default();
        add_usage(
            &mut total,
            &Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
                cost: None,
            },
        );
        assert_eq!(total.cost, None);
        add_usage(
            &mut total,
            &Usage {
                prompt_tokens: 2,
                completion_tokens: 2,
                cost: Some(0.25),
            },
        );
        assert_eq!(
            (total.prompt_tokens, total.completion_tokens, total.cost),
            (5, 3, Some(0.25))
        );
    }

    #[test]
    fn only_all_failures_fail() {
        let mixed: Vec<Result<u8, &str>> = vec![Err("a"), Ok(1)];
        assert_eq!(unless_all_failed(mixed.clone()), Ok(mixed));
        assert_eq!(
            unless_all_failed::<u8, &str>(vec![Err("a"), Err("b")]),
            Err("a")
        );
        assert_eq!(unless_all_failed::<u8, &str>(vec![]), Ok(vec![]));
    }
}
