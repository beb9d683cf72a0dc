//! Model configuration: the one [`Config`] the forward pass reads, whatever file it came from,
//! and the readers that fill it. A Hugging Face `config.json` is parsed as it is by its family's
//! struct (in [`crate::arch`]) and converted (candle's `into_config` style); GGUF metadata
//! converts here, with a family hook for what only that family stores.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::arch::{self, Arch};
use crate::gguf::GgufFile;
use crate::{Error, Result};

/// The MLP's activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// `x * sigmoid(x)` (HF `silu`, `swish`).
    Silu,
    /// The tanh approximation of GELU (HF `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    /// The exact (erf) GELU (HF `gelu`).
    Gelu,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    pub(crate) fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Self::Silu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh" => Self::GeluTanh,
            "gelu" | "gelu_python" => Self::Gelu,
            "relu" => Self::Relu,
            _ => return None,
        })
    }
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RopeScaling {
    /// `inv_freq / factor` (HF `linear`).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's piecewise rule (HF `llama3`).
    Llama3 {
        /// The divisor for low frequencies.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: f64,
    },
    /// One divisor per frequency (llama.cpp's `rope_freqs.weight`, which stores Llama 3.1's rule
    /// precomputed).
    FreqFactors(Vec<f64>),
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// The base (`rope_theta`).
    pub theta: f64,
    /// How many leading dimensions of each head rotate (the whole head but for GPT-NeoX).
    pub rotary_dim: usize,
    /// Frequency rescaling, if any.
    pub scaling: Option<RopeScaling>,
}

impl RopeConfig {
    /// The inverse frequencies, as HF computes them (in `f32`, scaling applied).
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.rotary_dim;
        let mut inv: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| {
                // HF: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), in float32.
                let exponent = i as f32 / d as f32;
                1.0 / (self.theta as f32).powf(exponent)
            })
            .collect();
        match &self.scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => {
                for f in &mut inv {
                    *f /= *factor as f32;
                }
            }
            Some(RopeScaling::FreqFactors(factors)) => {
                for (f, d) in inv.iter_mut().zip(factors) {
                    *f /= *d as f32;
                }
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: orig,
            }) => {
                let (factor, low, high, orig) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                    *orig as f32,
                );
                let low_freq_wavelen = orig / low;
                let high_freq_wavelen = orig / high;
                for f in &mut inv {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    *f = if wavelen < high_freq_wavelen {
                        *f
                    } else if wavelen > low_freq_wavelen {
                        *f / factor
                    } else {
                        let smooth = (orig / wavelen - low) / (high - low);
                        (1.0 - smooth) * *f / factor + smooth * *f
                    };
                }
            }
        }
        inv
    }
}

/// Whether a layer attends to everything before it or to a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerAttention {
    /// Causal attention over the whole prefix.
    Full,
    /// Causal attention over the last [`Config::sliding_window`] positions (itself included).
    Sliding,
}

/// Everything the forward pass needs to know about a model, whatever file it came from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The architecture family.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// d_model.
    pub hidden_size: usize,
    /// The MLP's hidden width (the `mlp.hidden` hook's last dimension).
    pub intermediate_size: usize,
    /// The number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (fewer than query heads with grouped-query attention).
    pub num_kv_heads: usize,
    /// Dimension of each head.
    pub head_dim: usize,
    /// The norms' epsilon.
    pub norm_eps: f64,
    /// The MLP's activation.
    pub activation: Activation,
    /// Learned positions (GPT-2) or the context the model was trained with.
    pub max_position_embeddings: usize,
    /// RoPE of full-attention layers (of all layers but Gemma 3's sliding ones); `None` for
    /// learned positions (GPT-2).
    pub rope: Option<RopeConfig>,
    /// RoPE of Gemma 3's sliding layers.
    pub rope_local: Option<RopeConfig>,
    /// The window of [`LayerAttention::Sliding`] layers.
    pub sliding_window: Option<usize>,
    /// One entry per layer.
    pub layer_types: Vec<LayerAttention>,
    /// The factor applied to `q·k` scores.
    pub attn_scale: f64,
    /// Gemma 2's `tanh(s / cap) * cap` on attention scores.
    pub attn_logit_softcap: Option<f64>,
    /// Gemma 2's softcap on the final logits.
    pub final_logit_softcap: Option<f64>,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// A bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// GPT-NeoX's `x + attn(ln1(x)) + mlp(ln2(x))`.
    pub parallel_residual: bool,
    /// Whether the unembedding is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (some models have several).
    pub eos_token_ids: Vec<u32>,
    /// The padding token.
    pub pad_token_id: Option<u32>,
}

/// The largest size (dimension, layer count, vocabulary, context) a config may claim: far above
/// any released model (vocabularies ~2^18, contexts ~2^23), far below what overflows products
/// of sizes or an allocation of one layer.
const MAX_SIZE: usize = 1 << 24;

/// Refuses a size key of a raw `config.json` that is not a whole number in `0..=MAX_SIZE`,
/// before an architecture's converter multiplies it.
fn check_size_keys(value: &serde_json::Value) -> std::result::Result<(), String> {
    const KEYS: [&str; 18] = [
        "vocab_size",
        "hidden_size",
        "n_embd",
        "d_model",
        "intermediate_size",
        "n_inner",
        "num_hidden_layers",
        "n_layer",
        "num_attention_heads",
        "n_head",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "n_positions",
        "n_ctx",
        "sliding_window",
        "rotary_emb_base_dim",
        "query_pre_attn_scalar",
    ];
    let configs = [Some(value), value.get("text_config")];
    for config in configs.into_iter().flatten() {
        for key in KEYS {
            let Some(v) = config.get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            if v.as_u64().is_some_and(|n| n > MAX_SIZE as u64) {
                return Err(format!(
                    "{key} {v} is beyond any real model (at most {MAX_SIZE})"
                ));
            }
        }
    }
    Ok(())
}

impl Config {
    /// Reads and converts the `config.json` at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Config`] if it is not valid for its
    /// family, [`Error::UnknownModelType`] for an unsupported `model_type`.
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hf_json(&text, path)
    }

    /// Converts the text of a `config.json`; `path` names it in errors.
    ///
    /// Sizes are bounded before anything is computed from them: a file that claims a
    /// billion-wide hidden state is refused here, not by an overflow or an allocation.
    ///
    /// # Errors
    /// As [`Config::from_hf_file`].
    pub fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let err = |problem: String| Error::Config {
            path: path.to_path_buf(),
            problem,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| err("no \"model_type\" string".into()))?
            .to_owned();
        let family = arch::by_model_type(&model_type).ok_or_else(|| Error::UnknownModelType {
            path: path.to_path_buf(),
            supported: Arch::SUPPORTED_MODEL_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            model_type: model_type.clone(),
        })?;
        check_size_keys(&value).map_err(err)?;
        let config = (family.hf_config)(value, &model_type).map_err(err)?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Builds the config of a GGUF model from its metadata (and, for Llama 3.1 files, its
    /// `rope_freqs.weight` tensor).
    ///
    /// # Errors
    /// [`Error::UnknownModelType`] for an architecture other than llama, qwen2, gemma2, gemma3;
    /// [`Error::MissingMetadata`] and the like for absent keys; [`Error::Config`] for an
    /// unsupported option.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path().to_path_buf();
        let err = |problem: String| Error::Config {
            path: path.clone(),
            problem,
        };
        let name = gguf.architecture()?;
        let (family, spec) = arch::by_gguf_name(name).ok_or_else(|| Error::UnknownModelType {
            path: path.clone(),
            model_type: name.to_owned(),
            supported: Arch::SUPPORTED_GGUF_ARCHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        })?;
        let hp = gguf.hparams()?;
        let a = hp.architecture.clone();
        let head_dim = hp.head_dim();
        let rotary_dim = hp.rope_dimension_count.unwrap_or(head_dim);
        let mut scaling = match hp.rope_scaling_type.as_deref() {
            None | Some("none") => None,
            Some("linear") => Some(RopeScaling::Linear {
                factor: hp.rope_scaling_factor.ok_or_else(|| {
                    err(format!("{a}.rope.scaling.type is linear without a factor"))
                })? as f64,
            }),
            Some(other) => {
                return Err(err(format!("rope scaling type {other:?} is not supported")))
            }
        };
        if gguf.has_tensor("rope_freqs.weight") {
            let (factors, _) = gguf.dequantize("rope_freqs.weight")?;
            if factors.len() != rotary_dim / 2 {
                return Err(err(format!(
                    "rope_freqs.weight has {} values, expected {}",
                    factors.len(),
                    rotary_dim / 2
                )));
            }
            scaling = Some(RopeScaling::FreqFactors(
                factors.into_iter().map(f64::from).collect(),
            ));
        }
        let theta = hp.rope_freq_base.map(f64::from).unwrap_or(10_000.0);
        let tok_id = |key: &str| -> Result<Option<u32>> {
            Ok(gguf.opt_u64(key)?.and_then(|v| u32::try_from(v).ok()))
        };
        let vocab_size = match hp.vocab_size {
            Some(v) => v,
            None => gguf.tensor_info("token_embd.weight")?.shape()[0] as usize,
        };
        let n = hp.block_count;
        // What llama.cpp's Llama-shaped graph computes; a family's hook changes the rest.
        let mut config = Config {
            arch: family.arch,
            vocab_size,
            hidden_size: hp.embedding_length,
            intermediate_size: hp.feed_forward_length,
            num_layers: n,
            num_heads: hp.head_count,
            num_kv_heads: hp.head_count_kv,
            head_dim,
            norm_eps: f64::from(hp.rms_norm_eps),
            activation: Activation::Silu,
            max_position_embeddings: hp.context_length,
            rope: Some(RopeConfig {
                theta,
                rotary_dim,
                scaling,
            }),
            rope_local: None,
            sliding_window: None,
            layer_types: vec![LayerAttention::Full; n],
            attn_scale: (head_dim as f64).powf(-0.5),
            attn_logit_softcap: None,
            final_logit_softcap: hp.final_logit_softcapping.map(f64::from),
            qkv_bias: gguf.has_tensor("blk.0.attn_q.bias"),
            o_bias: gguf.has_tensor("blk.0.attn_output.bias"),
            mlp_bias: false,
            parallel_residual: false,
            tie_word_embeddings: hp.tied_embeddings,
            bos_token_id: tok_id("tokenizer.ggml.bos_token_id")?,
            eos_token_ids: tok_id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
            pad_token_id: tok_id("tokenizer.ggml.padding_token_id")?,
        };
        (spec.config)(gguf, &hp, &mut config)?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Checks the sizes against each other.
    fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v > MAX_SIZE {
                return Err(format!(
                    "{name} {v} is beyond any real model (at most {MAX_SIZE})"
                ));
            }
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.layer_types.len() != self.num_layers {
            return Err(format!(
                "layer_types has {} entries for {} layers",
                self.layer_types.len(),
                self.num_layers
            ));
        }
        if self.layer_types.contains(&LayerAttention::Sliding)
            && self.sliding_window.unwrap_or(0) == 0
        {
            return Err("sliding layers without a positive sliding_window".into());
        }
        for rope in self.rope.iter().chain(&self.rope_local) {
            if rope.rotary_dim == 0 || rope.rotary_dim % 2 != 0 || rope.rotary_dim > self.head_dim {
                return Err(format!(
                    "rotary dimension {} must be even and in 2..={}",
                    rope.rotary_dim, self.head_dim
                ));
            }
            if rope.theta.is_nan() || rope.theta <= 0.0 {
                return Err(format!("rope theta {} must be positive", rope.theta));
            }
        }
        if u32::try_from(self.vocab_size).is_err() {
            return Err(format!("vocab_size {} is too large", self.vocab_size));
        }
        Ok(())
    }

    /// Whether layer `i` uses Gemma 3's local RoPE.
    pub(crate) fn uses_local_rope(&self, i: usize) -> bool {
        self.rope_local.is_some() && self.layer_types[i] == LayerAttention::Sliding
    }
}

// ---------------------------------------------------------------------------------------------
// What every family's `config.json` shares. Unknown fields are refused (hf_compat); defaults
// are HF's.

/// Parses a family's `config.json` struct from `value` after undoing transformers 5.x's
/// spellings; `keys` are the keys the struct reads, in lists that families may share (any
/// other key that may change the forward pass is an error), and `local_rope` says whether
/// sliding layers have a RoPE of their own.
pub(crate) fn parse_hf<T: DeserializeOwned>(
    mut value: serde_json::Value,
    model_type: &str,
    keys: &[&[&str]],
    local_rope: bool,
) -> std::result::Result<T, String> {
    let object = value
        .as_object_mut()
        .ok_or_else(|| format!("{model_type}: the config is not a JSON object"))?;
    crate::hf_compat::normalize(object, model_type, &keys.concat(), local_rope)?;
    serde_json::from_value(value).map_err(|e| format!("{model_type}: {e}"))
}

/// `bos_token_id` / `eos_token_id`: an integer, a list of integers, or null.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    #[default]
    None,
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn first(&self) -> Option<u32> {
        self.all().first().copied()
    }

    fn all(&self) -> Vec<u32> {
        match self {
            TokenIds::None => Vec::new(),
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The token ids every HF config may carry.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct HfTokens {
    #[serde(default)]
    bos_token_id: Option<TokenIds>,
    #[serde(default)]
    eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pad_token_id: Option<TokenIds>,
}

impl HfTokens {
    /// Sets `c`'s token ids.
    pub(crate) fn apply(&self, c: &mut Config) {
        c.bos_token_id = self.bos_token_id.as_ref().and_then(TokenIds::first);
        c.eos_token_ids = self
            .eos_token_id
            .as_ref()
            .map(TokenIds::all)
            .unwrap_or_default();
        c.pad_token_id = self.pad_token_id.as_ref().and_then(TokenIds::first);
    }
}

/// `rope_scaling` as HF writes it (`rope_type`, or `type` in older files).
#[derive(Debug, Deserialize)]
pub(crate) struct HfRopeScaling {
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    low_freq_factor: Option<f64>,
    #[serde(default)]
    high_freq_factor: Option<f64>,
    #[serde(default)]
    original_max_position_embeddings: Option<f64>,
}

/// The [`RopeScaling`] of HF's `rope_scaling` object.
pub(crate) fn rope_scaling(
    s: &Option<HfRopeScaling>,
) -> std::result::Result<Option<RopeScaling>, String> {
    let Some(s) = s else { return Ok(None) };
    let kind = s
        .rope_type
        .as_deref()
        .or(s.type_.as_deref())
        .unwrap_or("default");
    let need =
        |v: Option<f64>, name: &str| v.ok_or_else(|| format!("rope_scaling {kind} without {name}"));
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: need(s.factor, "factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: need(s.factor, "factor")?,
            low_freq_factor: need(s.low_freq_factor, "low_freq_factor")?,
            high_freq_factor: need(s.high_freq_factor, "high_freq_factor")?,
            original_max_position_embeddings: need(
                s.original_max_position_embeddings,
                "original_max_position_embeddings",
            )?,
        }),
        other => {
            return Err(format!(
                "rope_scaling type {other:?} is not supported (supported: default, linear, llama3)"
            ))
        }
    })
}

/// The [`Activation`] HF calls `name`, or a message listing the supported ones.
pub(crate) fn activation(name: &str) -> std::result::Result<Activation, String> {
    Activation::from_hf(name).ok_or_else(|| {
        format!("activation {name:?} is not supported (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)")
    })
}

/// HF's `layer_types` list, one entry per layer.
pub(crate) fn parse_layer_types(
    types: &[String],
    n: usize,
) -> std::result::Result<Vec<LayerAttention>, String> {
    if types.len() != n {
        return Err(format!(
            "layer_types has {} entries for {n} layers",
            types.len()
        ));
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "full_attention" => Ok(LayerAttention::Full),
            "sliding_attention" => Ok(LayerAttention::Sliding),
            other => Err(format!("layer type {other:?} is not supported")),
        })
        .collect()
}

/// How many leading dimensions of each head rotate: HF's `int(head_dim * partial_rotary_factor)`.
pub(crate) fn rotary_dim(
    head_dim: usize,
    partial_rotary_factor: Option<f64>,
) -> std::result::Result<usize, String> {
    match partial_rotary_factor {
        None => Ok(head_dim),
        Some(f) if f > 0.0 && f <= 1.0 => Ok((head_dim as f64 * f) as usize),
        Some(f) => Err(format!("partial_rotary_factor {f} must be in (0, 1]")),
    }
}

pub(crate) fn default_rope_theta() -> f64 {
    10_000.0
}
pub(crate) fn default_rms_eps() -> f64 {
    1e-6
}
pub(crate) fn default_layer_norm_eps() -> f64 {
    1e-5
}
pub(crate) fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config> {
        Config::from_hf_json(json, Path::new("config.json"))
    }

    #[test]
    fn llama3_inv_freq_matches_hf() {
        // README of the fixtures: default [1, 0.1, 0.01, 0.001] -> [1.0, 0.013042256, 0.00125, 0.000125].
        let rope = RopeConfig {
            theta: 10_000.0,
            rotary_dim: 8,
            scaling: Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64.0,
            }),
        };
        let got = rope.inv_freq();
        let want = [1.0, 0.013042256, 0.00125, 0.000125];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-8, "{got:?}");
        }
    }

    #[test]
    fn unknown_model_type_lists_supported_ones() {
        let msg = parse(r#"{"model_type": "bert"}"#).unwrap_err().to_string();
        assert!(msg.contains("\"bert\""), "{msg}");
        assert!(
            msg.contains("gemma3_text") && msg.contains("gpt_neox"),
            "{msg}"
        );
    }

    #[test]
    fn missing_fields_and_bad_options_are_named() {
        let msg = parse(r#"{"model_type": "llama", "vocab_size": 10}"#)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("hidden_size"), "{msg}");
        let msg = parse(
            r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 2,
                "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("yarn"), "{msg}");
        let msg = parse(
            r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2, "head_dim": 4}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("multiple"), "{msg}");
    }

    #[test]
    fn mistral_slides_every_layer_and_token_lists_parse() {
        let c = parse(
            r#"{"model_type": "mistral", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                "num_hidden_layers": 2, "num_attention_heads": 2, "sliding_window": 16,
                "eos_token_id": [1, 7], "bos_token_id": 2, "pad_token_id": null}"#,
        )
        .unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!(c.sliding_window, Some(16));
        assert_eq!(c.layer_types, vec![LayerAttention::Sliding; 2]);
        assert_eq!(c.eos_token_ids, vec![1, 7]);
        assert_eq!(c.bos_token_id, Some(2));
        assert_eq!(c.pad_token_id, None);
    }

    /// transformers 5.x writes `rope_parameters` and explicit nulls; both used to be lost (a
    /// Qwen2's theta of 1e6 silently became 10,000).
    #[test]
    fn transformers_5_configs_keep_their_rope_and_accept_nulls() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                      "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 4"#;
        let q = parse(&format!(
            r#"{{"model_type": "qwen2", {base}, "sliding_window": null,
                 "rope_parameters": {{"rope_theta": 1000000.0, "rope_type": "default",
                                      "partial_rotary_factor": 0.5}}}}"#
        ))
        .unwrap();
        let rope = q.rope.unwrap();
        assert_eq!((rope.theta, rope.rotary_dim), (1e6, 2));
        let g = parse(&format!(
            r#"{{"model_type": "gemma2", {base}, "use_bidirectional_attention": null}}"#
        ))
        .unwrap();
        assert_eq!(g.attn_logit_softcap, Some(50.0));
        let msg = parse(&format!(
            r#"{{"model_type": "qwen2", {base}, "use_mrope": true}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("config.json") && msg.contains("\"use_mrope\""),
            "{msg}"
        );
    }

    #[test]
    fn gemma_defaults_follow_hf() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                      "num_hidden_layers": 6, "num_attention_heads": 2, "head_dim": 4"#;
        let g2 = parse(&format!(r#"{{"model_type": "gemma2", {base}}}"#)).unwrap();
        assert_eq!(g2.attn_logit_softcap, Some(50.0));
        assert_eq!(g2.final_logit_softcap, Some(30.0));
        assert_eq!(g2.layer_types[0], LayerAttention::Sliding);
        assert_eq!(g2.layer_types[1], LayerAttention::Full);
        let g3 = parse(&format!(
            r#"{{"model_type": "gemma3_text", "final_logit_softcapping": null, {base}}}"#
        ))
        .unwrap();
        assert_eq!(g3.attn_logit_softcap, None);
        assert_eq!(g3.final_logit_softcap, None);
        assert_eq!(
            g3.layer_types
                .iter()
                .filter(|t| **t == LayerAttention::Full)
                .count(),
            1
        );
        assert_eq!(g3.layer_types[5], LayerAttention::Full);
        assert_eq!(g3.rope.as_ref().unwrap().theta, 1e6);
        assert_eq!(g3.rope_local.as_ref().unwrap().theta, 1e4);
    }
}
