//! Embedding: does a sentence-embedding model put the explanation closer to the latent's
//! activating examples than to its non-activating ones?

use std::future::Future;

use autointerp_client::Usage;
use autointerp_core::Embedder;
use autointerp_core::{Example, Explanation, LatentRecord, Score};
use serde::{Deserialize, Serialize};

use crate::metrics::roc_auc;
use crate::scorer::or_nan;
use crate::{Error, Result, ScoreDetails, Scorer, ScorerResult};

/// Name of the embedding scorer, as in delphi (`scores/embedding/`).
pub const EMBEDDING: &str = "embedding";

/// The query instruction delphi puts before the explanation, for instruction-tuned embedding
/// models (e5-instruct, gte-Qwen, stella). Plain sentence embedders such as MiniLM take none.
pub const DELPHI_QUERY_PREFIX: &str =
    "Instruct: Retrieve sentences that could be related to the explanation.\nQuery:";

/// Options of the embedding scorer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Text put before the explanation to make the query (none by default; delphi's is
    /// [`DELPHI_QUERY_PREFIX`]).
    pub query_prefix: String,
}

/// One example and its similarity to the explanation, in the layout of delphi's
/// `EmbeddingOutput` plus `activating` and `quantile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingOutcome {
    /// The example's text, as embedded.
    pub text: String,
    /// Whether the latent fires on it (a test example) or not (a non-activating one).
    pub activating: bool,
    /// The quantile of an activating example.
    pub quantile: Option<u8>,
    /// The distance of a non-activating example found by similarity.
    pub distance: Option<f32>,
    /// Cosine similarity of its embedding to the query's; `None` when undefined (a zero or
    /// non-finite vector): a failed example.
    pub similarity: Option<f32>,
}

/// Cosine similarity; `None` when a vector has no (finite, nonzero) norm.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> Option<f32> {
    if a.len() != b.len() {
        return None;
    }
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    let denom = (aa * bb).sqrt();
    (denom > 0.0 && denom.is_finite() && dot.is_finite()).then(|| (dot / denom) as f32)
}

/// Test examples (activating), then non-activating examples, of a record that has both.
pub(crate) fn labelled_examples<'r>(
    record: &'r LatentRecord,
    scorer: &str,
) -> Result<Vec<(&'r Example, bool)>> {
    if record.test.is_empty() || record.non_activating.is_empty() {
        return Err(Error::NotEnoughExamples {
            latent: record.id,
            what: format!("the {scorer} scorer needs test and non-activating examples"),
        });
    }
    Ok(record
        .test
        .iter()
        .map(|e| (e, true))
        .chain(record.non_activating.iter().map(|e| (e, false)))
        .collect())
}

/// The embedding scorer: the query (prefix + explanation) and every test and non-activating
/// example are embedded in one call, and each example is scored by its cosine similarity to the
/// query.
///
/// The score is the ROC AUC of the similarity separating activating (positive) from
/// non-activating examples: 1 when every activating example is closer to the explanation than
/// every non-activating one, 0.5 for chance. NaN when the examples whose similarity is defined
/// lack one of the two classes.
#[derive(Debug, Clone)]
pub struct EmbeddingScorer<E> {
    embedder: E,
    config: EmbeddingConfig,
}

impl<E> EmbeddingScorer<E> {
    /// An embedding scorer asking `embedder`, with options `config`.
    pub fn new(embedder: E, config: EmbeddingConfig) -> Self {
        Self { embedder, config }
    }

    /// The options.
    pub fn config(&self) -> &EmbeddingConfig {
        &self.config
    }
}

impl<E: Embedder> EmbeddingScorer<E> {
    /// Scores `explanation` on `record`'s test and non-activating examples; see
    /// [`Scorer::score`].
    ///
    /// # Errors
    /// [`Error::NotEnoughExamples`] without test or non-activating examples,
    /// [`Error::Client`] when the embedder fails, [`Error::Embedder`] when it returns the wrong
    /// number of vectors or vectors of different lengths.
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = EMBEDDING))]
    pub async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> Result<ScorerResult> {
        let examples = labelled_examples(record, EMBEDDING)?;
        let mut texts = Vec::with_capacity(examples.len() + 1);
        texts.push(format!("{}{}", self.config.query_prefix, explanation.text));
        texts.extend(examples.iter().map(|(e, _)| e.text()));
        let vectors = self.embedder.embed(&texts).await.map_err(|e| {
            // A client's own error keeps its kind (rate limit, timeout, bad key).
            match e.downcast::<autointerp_client::Error>() {
                Ok(client) => Error::Client(*client),
                Err(other) => Error::Embedder {
                    reason: other.to_string(),
                },
            }
        })?;
        if vectors.len() != texts.len() {
            return Err(Error::Embedder {
                reason: format!("{} vectors for {} texts", vectors.len(), texts.len()),
            });
        }
        let query = &vectors[0];
        if let Some(v) = vectors.iter().find(|v| v.len() != query.len()) {
            return Err(Error::Embedder {
                reason: format!("vectors of lengths {} and {}", query.len(), v.len()),
            });
        }
        let outcomes: Vec<EmbeddingOutcome> = examples
            .iter()
            .zip(texts.into_iter().skip(1))
            .zip(&vectors[1..])
            .map(|(((example, activating), text), v)| EmbeddingOutcome {
                text,
                activating: *activating,
                quantile: example.quantile,
                distance: example.distance,
                similarity: cosine_similarity(query, v),
            })
            .collect();
        let failures: Vec<String> = outcomes
            .iter()
            .filter(|o| o.similarity.is_none())
            .map(|o| {
                format!(
                    "no similarity for a zero or non-finite embedding of {:?}",
                    o.text
                )
            })
            .collect();
        let (labels, scores): (Vec<bool>, Vec<f64>) = outcomes
            .iter()
            .filter_map(|o| o.similarity.map(|s| (o.activating, f64::from(s))))
            .unzip();
        Ok(ScorerResult {
            score: Score {
                latent: record.id,
                scorer: EMBEDDING.to_string(),
                value: or_nan(roc_auc(&labels, &scores)),
                n_failed: failures.len(),
            },
            details: ScoreDetails::Embedding { outcomes },
            failures,
            usage: Usage::default(),
        })
    }
}

impl<E: Embedder> Scorer for EmbeddingScorer<E> {
    fn name(&self) -> &'static str {
        EMBEDDING
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        EmbeddingScorer::score(self, record, explanation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine() {
        assert_eq!(cosine_similarity(&[1.0, 0.0], &[2.0, 0.0]), Some(1.0));
        assert_eq!(cosine_similarity(&[1.0, 0.0], &[0.0, 3.0]), Some(0.0));
        let c = cosine_similarity(&[1.0, 1.0], &[1.0, 0.0]).unwrap();
        assert!((c - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 0.0]), None);
        assert_eq!(cosine_similarity(&[f32::NAN, 1.0], &[1.0, 0.0]), None);
        assert_eq!(cosine_similarity(&[1.0], &[1.0, 0.0]), None);
    }
}
