use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, HookPoint, Result};

/// One latent of one sparse coder: the hook point it reads and its index in the coder's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LatentId {
    /// Where the sparse coder reads its input.
    pub hookpoint: HookPoint,
    /// Index of the latent, `0..width`.
    pub index: u32,
}

impl LatentId {
    /// A latent of the coder at `hookpoint`.
    pub fn new(hookpoint: HookPoint, index: u32) -> Self {
        Self { hookpoint, index }
    }
}

/// `layers.6_latent12`: the name delphi gives explanation and score files.
impl fmt::Display for LatentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_latent{}", self.hookpoint, self.index)
    }
}

impl FromStr for LatentId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::MalformedLatentId(s.to_string());
        let (hook, index) = s.rsplit_once("_latent").ok_or_else(bad)?;
        let index = index.parse().map_err(|_| bad())?;
        Ok(Self::new(hook.parse()?, index))
    }
}

/// A window of tokens shown to an explainer or scorer, with the latent's activation on each token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Each token decoded on its own, for display.
    pub str_tokens: Vec<String>,
    /// The latent's activation on each token. A non-activating example taken from a
    /// neighbouring latent carries that neighbour's activations instead (all zero otherwise):
    /// whether an example activates the latent is told by the list it is in, not by these.
    pub activations: Vec<f32>,
    /// Activations scaled to integers 0–10 by the latent's maximum activation (the neighbour's,
    /// for a neighbour's non-activating example).
    pub normalized: Vec<u8>,
    /// Which activation quantile the example was drawn from (1 = strongest); `None` when it was
    /// not drawn by quantile, e.g. a non-activating example.
    pub quantile: Option<u8>,
    /// For non-activating examples found by similarity: how far they are from the latent
    /// (1 − similarity); `None` otherwise.
    pub distance: Option<f32>,
}

impl Example {
    /// The largest activation in the window (0 for an empty window).
    pub fn max_activation(&self) -> f32 {
        self.activations.iter().copied().fold(0.0, f32::max)
    }

    /// The decoded text of the whole window.
    pub fn text(&self) -> String {
        self.str_tokens.concat()
    }
}

/// Firing statistics of a latent over the whole cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatentStats {
    /// Number of tokens on which the latent is nonzero.
    pub n_activations: u64,
    /// Number of tokens in the cache.
    pub n_tokens: u64,
    /// Largest activation seen.
    pub max_activation: f32,
}

impl LatentStats {
    /// Fraction of tokens on which the latent fires.
    pub fn firing_rate(&self) -> f64 {
        if self.n_tokens == 0 {
            0.0
        } else {
            self.n_activations as f64 / self.n_tokens as f64
        }
    }
}

/// Everything the explainers and scorers see of one latent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentRecord {
    /// Which latent.
    pub id: LatentId,
    /// Activating examples shown to the explainer.
    pub train: Vec<Example>,
    /// Activating examples held out for scoring; never overlapping `train`.
    pub test: Vec<Example>,
    /// Examples on which the latent does not fire.
    pub non_activating: Vec<Example>,
    /// Firing statistics over the whole cache.
    pub stats: LatentStats,
    /// The output side of the latent: the tokens its decoder direction promotes and suppresses
    /// through the model's unembedding (see [`crate::VocabProjection`]); `None` when the cache
    /// has no projection (a coder without a decoder, an older cache, a delphi cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits: Option<LatentLogits>,
}

/// One token of a latent's vocabulary projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogit {
    /// The token id.
    pub token: u32,
    /// The token decoded on its own, for display.
    pub text: String,
    /// How much the latent's decoder direction (at unit activation) moves this token's logit.
    pub delta: f32,
}

/// The tokens whose logits a latent's decoder direction raises and lowers most: the "logit
/// lens" of the direction, as read from [`crate::VocabProjection`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatentLogits {
    /// The largest deltas first.
    pub promoted: Vec<TokenLogit>,
    /// The most negative deltas first.
    pub suppressed: Vec<TokenLogit>,
}

impl LatentLogits {
    /// `" Paris" (+1.23), " London" (+1.05)`: the first `n` tokens of `tokens`, JSON-quoted,
    /// with their deltas.
    pub fn describe(tokens: &[TokenLogit], n: usize) -> String {
        tokens
            .iter()
            .take(n)
            .map(|t| {
                let text = serde_json::Value::String(t.text.clone()).to_string();
                format!("{text} ({:+.2})", t.delta)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A natural-language description of what a latent responds to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The latent it explains.
    pub latent: LatentId,
    /// The explanation itself.
    pub text: String,
}

/// A scorer's summary verdict on one explanation of one latent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The latent scored.
    pub latent: LatentId,
    /// The scorer's name, e.g. `detection`.
    pub scorer: String,
    /// The headline number (balanced accuracy, correlation, AUC, ... as the scorer defines it).
    pub value: f64,
    /// Answers the scorer could not parse, excluded from `value`.
    pub n_failed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_id_round_trips_through_delphi_names() {
        let id = LatentId::new(HookPoint::Mlp(3), 77);
        assert_eq!(id.to_string(), "layers.3.mlp_latent77");
        assert_eq!("layers.3.mlp_latent77".parse::<LatentId>().unwrap(), id);
        assert!("layers.3.mlp_latentX".parse::<LatentId>().is_err());
        assert!("layers.3.mlp".parse::<LatentId>().is_err());
    }

    #[test]
    fn records_without_logits_parse_and_records_with_them_round_trip() {
        let old = r#"{"id": {"hookpoint": "layers.2", "index": 5}, "train": [], "test": [],
            "non_activating": [], "stats": {"n_activations": 1, "n_tokens": 9, "max_activation": 2.0}}"#;
        let mut record: LatentRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.logits, None);
        assert!(!serde_json::to_string(&record).unwrap().contains("logits"));
        record.logits = Some(LatentLogits {
            promoted: vec![TokenLogit {
                token: 4,
                text: " Paris".into(),
                delta: 1.25,
            }],
            suppressed: vec![],
        });
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<LatentRecord>(&json).unwrap(), record);
    }

    #[test]
    fn example_helpers() {
        let ex = Example {
            tokens: vec![1, 2, 3],
            str_tokens: vec!["a".into(), " b".into(), " c".into()],
            activations: vec![0.0, 2.5, 1.0],
            normalized: vec![0, 10, 4],
            quantile: Some(1),
            distance: None,
        };
        assert_eq!(ex.max_activation(), 2.5);
        assert_eq!(ex.text(), "a b c");
        let stats = LatentStats {
            n_activations: 5,
            n_tokens: 100,
            max_activation: 2.5,
        };
        assert!((stats.firing_rate() - 0.05).abs() < 1e-12);
    }
}
