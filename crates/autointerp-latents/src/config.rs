use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything that decides which examples a record gets: same config, same cache → same records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatentsConfig {
    /// How activating and non-activating examples are cut from the cache.
    pub constructor: ConstructorConfig,
    /// How train and test examples are drawn from the activating ones.
    pub sampler: SamplerConfig,
    /// Seed of every random choice. Each latent draws from its own stream derived from this seed,
    /// its hook point and its index, so records do not depend on thread count or order.
    pub seed: u64,
}

impl Default for LatentsConfig {
    fn default() -> Self {
        Self {
            constructor: ConstructorConfig::default(),
            sampler: SamplerConfig::default(),
            seed: 22,
        }
    }
}

/// How activating examples are cut from the cache, and where non-activating ones come from
/// (delphi's `ConstructorConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConstructorConfig {
    /// Tokens per example window; at most the cache's context length.
    pub example_ctx_len: usize,
    /// `false`: aligned, non-overlapping windows of each cache row, ranked by their largest
    /// activation. `true`: windows placed around each of those windows' peak token, with 3/4 of
    /// the window before it (clamped to the row), never overlapping another example.
    ///
    /// delphi's flag of the same name is wired the other way round (its default `true` yields
    /// aligned windows), so `false` here reproduces delphi's default output.
    pub center_examples: bool,
    /// Latents with fewer activating examples are skipped.
    pub min_examples: usize,
    /// Keep at most this many activating examples, strongest first; `None` keeps them all.
    pub max_examples: Option<usize>,
    /// Non-activating examples per record.
    pub n_non_activating: usize,
    /// Where non-activating examples come from.
    pub non_activating_source: NonActivatingSource,
    /// With `neighbours`: examples taken from each neighbour before moving to the next.
    pub n_examples_per_neighbour: usize,
    /// With `neighbours`: strongest windows remembered per neighbour latent; windows where the
    /// explained latent fires are skipped from these.
    pub neighbour_windows: usize,
    /// With `embedding`: the windows searched for hard negatives. `None` (the default) searches
    /// every aligned window of the hook point, as delphi's FAISS index does; `Some(k)` a seeded
    /// sample of `k` windows, drawn once per hook point. Either way each window is embedded once
    /// per hook point and every latent's search is exact over the pool; a sample is cheaper in
    /// both (a latent's search costs `pool × embedding_queries` dot products) but may miss the
    /// hardest negatives.
    pub embedding_pool: Option<usize>,
    /// With `embedding`: strongest activating examples embedded as queries.
    pub embedding_queries: usize,
}

impl Default for ConstructorConfig {
    fn default() -> Self {
        Self {
            example_ctx_len: 32,
            center_examples: false,
            min_examples: 200,
            max_examples: None,
            n_non_activating: 50,
            non_activating_source: NonActivatingSource::Random,
            n_examples_per_neighbour: 10,
            neighbour_windows: 200,
            embedding_pool: None,
            embedding_queries: 10,
        }
    }
}

/// Where non-activating examples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonActivatingSource {
    /// Seeded random windows where the latent never fires.
    #[default]
    Random,
    /// Windows where the latent's nearest neighbours fire most but it does not (needs
    /// [`NeighbourLists`](crate::NeighbourLists)). Each example keeps the activations of the
    /// neighbour that fired there, normalised by that neighbour's largest activation, as delphi
    /// does: fuzzing and intruder highlight those tokens, while detection still counts the
    /// example as non-activating.
    Neighbours,
    /// Windows where the latent does not fire whose text embeds closest to its strongest
    /// activating examples (needs an [`Embedder`](crate::Embedder)); delphi calls this `FAISS`.
    #[serde(alias = "FAISS", alias = "faiss")]
    Embedding,
}

/// How train and test examples are drawn (delphi's `SamplerConfig`). Train and test never share
/// an example: test is drawn from what train left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// Examples shown to the explainer.
    pub n_examples_train: usize,
    /// Examples held out for scoring, drawn by quantile.
    pub n_examples_test: usize,
    /// Activation quantiles (1 = strongest); at most 255.
    pub n_quantiles: usize,
    /// How train examples are drawn.
    pub train_type: TrainType,
    /// With `mix`: fraction of train examples taken from the very top.
    pub ratio_top: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            n_examples_train: 40,
            n_examples_test: 50,
            n_quantiles: 10,
            train_type: TrainType::Quantiles,
            ratio_top: 0.2,
        }
    }
}

/// How train examples are drawn from the activating examples (ranked strongest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainType {
    /// The strongest ones.
    Top,
    /// A seeded sample of all of them.
    Random,
    /// An equal share from each activation quantile.
    #[default]
    Quantiles,
    /// `ratio_top` from the top, the rest by quantile over the remaining examples.
    Mix,
}

impl LatentsConfig {
    /// The `n` strongest examples of `example_ctx_len` tokens as train examples, for any latent
    /// that fires at least once: a latent's top activations, as a viewer shows them.
    pub fn top_examples(n: usize, example_ctx_len: usize) -> Self {
        let mut cfg = Self::default();
        cfg.constructor.example_ctx_len = example_ctx_len;
        cfg.constructor.min_examples = 1;
        cfg.sampler.train_type = TrainType::Top;
        cfg.sampler.n_examples_train = n;
        cfg
    }

    /// Checks values that would make record building fail or loop.
    pub fn validate(&self) -> Result<()> {
        let c = &self.constructor;
        let s = &self.sampler;
        if c.example_ctx_len == 0 {
            return Err(Error::Config(
                "constructor.example_ctx_len must be at least 1".into(),
            ));
        }
        if c.max_examples == Some(0) {
            return Err(Error::Config(
                "constructor.max_examples must be at least 1 (or absent)".into(),
            ));
        }
        if c.embedding_pool == Some(0) {
            return Err(Error::Config(
                "constructor.embedding_pool must be at least 1 (or absent, for every window)"
                    .into(),
            ));
        }
        if !(1..=255).contains(&s.n_quantiles) {
            return Err(Error::Config(format!(
                "sampler.n_quantiles is {}; it must be 1..=255",
                s.n_quantiles
            )));
        }
        if !(0.0..=1.0).contains(&s.ratio_top) {
            return Err(Error::Config(format!(
                "sampler.ratio_top is {}; it must be in [0, 1]",
                s.ratio_top
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_delphi_and_reject_bad_values() {
        let cfg: LatentsConfig = serde_json::from_str(
            r#"{"constructor": {"non_activating_source": "FAISS"}, "sampler": {"train_type": "mix"}}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.constructor.non_activating_source,
            NonActivatingSource::Embedding
        );
        assert_eq!(cfg.constructor.example_ctx_len, 32);
        assert_eq!(cfg.sampler.n_quantiles, 10);
        assert_eq!(cfg.sampler.train_type, TrainType::Mix);
        assert!(serde_json::from_str::<LatentsConfig>(r#"{"sampler": {"n_train": 3}}"#).is_err());
        assert_eq!(cfg.constructor.embedding_pool, None);
        let sampled: LatentsConfig =
            serde_json::from_str(r#"{"constructor": {"embedding_pool": 2048}}"#).unwrap();
        assert_eq!(sampled.constructor.embedding_pool, Some(2048));

        let mut bad = LatentsConfig::default();
        bad.sampler.n_quantiles = 0;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("n_quantiles"));
        bad = LatentsConfig::default();
        bad.sampler.ratio_top = 1.5;
        assert!(bad.validate().is_err());
        bad = LatentsConfig::default();
        bad.constructor.embedding_pool = Some(0);
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("embedding_pool"), "{err}");
    }

    #[test]
    fn top_examples_takes_the_strongest_and_rejects_empty_windows() {
        let cfg = LatentsConfig::top_examples(7, 16);
        assert_eq!(cfg.sampler.train_type, TrainType::Top);
        assert_eq!(cfg.sampler.n_examples_train, 7);
        assert_eq!(cfg.constructor.example_ctx_len, 16);
        assert_eq!(cfg.constructor.min_examples, 1);
        cfg.validate().unwrap();
        let err = LatentsConfig::top_examples(7, 0).validate().unwrap_err();
        assert!(err.to_string().contains("example_ctx_len"), "{err}");
    }
}
