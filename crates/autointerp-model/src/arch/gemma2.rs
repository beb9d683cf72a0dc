//! Gemma 2: Llama's block with Gemma's `(1 + w)` RMSNorms around each branch, embeddings
//! scaled by `sqrt(d_model)`, softcapped attention scores and logits, and sliding layers. Its
//! config struct, GGUF reader and builder also serve Gemma 3.

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::llama::{self, Layout};
use super::{Arch, Family, GgufSpec};
use crate::config::{
    activation, default_rms_eps, default_true, parse_hf, parse_layer_types, rope_scaling,
    rotary_dim, Activation, Config, HfRopeScaling, HfTokens, LayerAttention, RopeConfig,
};
use crate::decoder::Parts;
use crate::gguf::{Array, GgufFile, GgufHparams, Value};
use crate::layers::Norm;
use crate::weights::Weights;
use crate::{Error, Result};

pub(crate) const FAMILY: Family = Family {
    arch: Arch::Gemma2,
    model_types: &["gemma2"],
    hf_config,
    gguf: Some(GgufSpec {
        name: "gemma2",
        tensors: GGUF_TENSORS,
        permuted_qk: false,
        config: gguf_config,
    }),
    build: |c, w| build_with(c, w, &LAYOUT),
};

fn hf_config(value: serde_json::Value, model_type: &str) -> Result<Config, String> {
    let hf = parse_hf::<HfGemmaConfig>(value, model_type, KEYS, false)?;
    // Every other layer slides, from the first.
    let mut c = hf.shared_config(Arch::Gemma2, 2, 10_000.0)?;
    // HF's defaults when a cap is absent are 50 and 30; `null` turns it off.
    c.attn_logit_softcap = hf.attn_logit_softcapping.unwrap_or(Some(50.0));
    c.final_logit_softcap = hf.final_logit_softcapping.unwrap_or(Some(30.0));
    Ok(c)
}

fn default_gemma_head_dim() -> usize {
    256
}
fn default_query_pre_attn_scalar() -> f64 {
    256.0
}
fn default_sliding_window() -> Option<usize> {
    Some(4096)
}
/// Absent → `None`, `null` → `Some(None)`, a number → `Some(Some(x))`: Gemma 2 and 3 default
/// their softcaps differently, so absence must be told from null.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// The keys [`HfGemmaConfig`] reads.
pub(super) const KEYS: &[&[&str]] = &[
    llama::SHARED_KEYS,
    &[
        "hidden_activation",
        "rope_local_base_freq",
        "query_pre_attn_scalar",
        "sliding_window_pattern",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "use_bidirectional_attention",
    ],
];

/// `config.json` of `gemma2` and `gemma3_text` (and the `text_config` of `gemma3`).
#[derive(Debug, Deserialize)]
pub(super) struct HfGemmaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_gemma_head_dim")]
    head_dim: usize,
    #[serde(default)]
    hidden_activation: Option<String>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    pub(super) rope_local_base_freq: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<HfRopeScaling>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default = "default_query_pre_attn_scalar")]
    query_pre_attn_scalar: f64,
    #[serde(default = "default_sliding_window")]
    sliding_window: Option<usize>,
    #[serde(default)]
    pub(super) sliding_window_pattern: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    attn_logit_softcapping: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) final_logit_softcapping: Option<Option<f64>>,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    use_bidirectional_attention: bool,
    #[serde(flatten)]
    tokens: HfTokens,
}

impl HfGemmaConfig {
    /// What Gemma 2 and 3 read alike: `period` says which layers attend fully when
    /// `layer_types` does not (every `period`-th), `default_theta` is the version's RoPE base.
    /// No softcaps and no local RoPE: the versions differ there.
    pub(super) fn shared_config(
        &self,
        arch: Arch,
        period: usize,
        default_theta: f64,
    ) -> std::result::Result<Config, String> {
        let n = self.num_hidden_layers;
        if self.use_bidirectional_attention {
            return Err("use_bidirectional_attention is not supported".into());
        }
        let layer_types = match &self.layer_types {
            Some(types) => parse_layer_types(types, n)?,
            None => sliding_pattern(n, period)
                .map(|sliding| {
                    if sliding {
                        LayerAttention::Sliding
                    } else {
                        LayerAttention::Full
                    }
                })
                .collect(),
        };
        let rope = RopeConfig {
            theta: self.rope_theta.unwrap_or(default_theta),
            rotary_dim: rotary_dim(self.head_dim, self.partial_rotary_factor)?,
            scaling: rope_scaling(&self.rope_scaling)?,
        };
        let act = self
            .hidden_activation
            .as_deref()
            .or(self.hidden_act.as_deref())
            .unwrap_or("gelu_pytorch_tanh");
        let mut c = Config {
            arch,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: n,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self.head_dim,
            norm_eps: self.rms_norm_eps,
            activation: activation(act)?,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(8192),
            rope: Some(rope),
            rope_local: None,
            sliding_window: self.sliding_window,
            layer_types,
            attn_scale: self.query_pre_attn_scalar.powf(-0.5),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: false,
            parallel_residual: false,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
        };
        self.tokens.apply(&mut c);
        Ok(c)
    }
}

/// Whether each of `n` layers slides when all but every `period`-th do (HF's and llama.cpp's
/// default pattern).
fn sliding_pattern(n: usize, period: usize) -> impl Iterator<Item = bool> {
    (0..n).map(move |i| (i + 1) % period != 0)
}

/// Gemma's block tensors in llama.cpp's names beside HF's: llama.cpp calls the norm before the
/// MLP `ffn_norm`, as Llama's, though HF's Gemma has one after attention as well.
pub(super) const GGUF_TENSORS: &[&[(&str, &str)]] = &[
    &[
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("post_attention_norm", "post_attention_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ],
    llama::GGUF_BLOCK,
];

fn gguf_config(gguf: &GgufFile, hp: &GgufHparams, c: &mut Config) -> Result<()> {
    // Every other layer slides; the 27B model (46 layers) scales queries differently.
    gguf_shared_config(gguf, hp, c, |_| Ok(2), 46)?;
    c.attn_logit_softcap = hp.attn_logit_softcapping.map(f64::from);
    Ok(())
}

/// What Gemma 2 and 3 read alike from GGUF metadata. `period(key)` gives the period of the
/// sliding pattern when `key` holds no per-layer flags; `layers_27b` is the block count of the
/// version's 27B model, whose queries llama.cpp scales by `d_model / n_head` (HF's
/// `query_pre_attn_scalar`) rather than by the head dimension.
pub(super) fn gguf_shared_config(
    gguf: &GgufFile,
    hp: &GgufHparams,
    c: &mut Config,
    period: impl FnOnce(&str) -> Result<usize>,
    layers_27b: usize,
) -> Result<()> {
    let err = |problem: String| Error::Config {
        path: gguf.path().to_path_buf(),
        problem,
    };
    let a = &hp.architecture;
    let n = hp.block_count;
    // The sliding pattern: a period, or one flag per layer (nonzero = sliding).
    let key = format!("{a}.attention.sliding_window_pattern");
    let flags: Vec<bool> = match gguf.get(&key) {
        Some(Value::Array(arr)) => match arr {
            Array::Bool(b) => b.clone(),
            other => other
                .to_i64_vec()
                .ok_or_else(|| err(format!("{key} is neither a period nor per-layer flags")))?
                .into_iter()
                .map(|v| v != 0)
                .collect(),
        },
        _ => sliding_pattern(n, period(&key)?).collect(),
    };
    if flags.len() != n {
        return Err(err(format!(
            "{key} has {} entries for {n} layers",
            flags.len()
        )));
    }
    c.layer_types = flags
        .into_iter()
        .map(|sliding| {
            if sliding && hp.sliding_window.is_some() {
                LayerAttention::Sliding
            } else {
                LayerAttention::Full
            }
        })
        .collect();
    let scalar = match gguf.opt_f32(&format!("{a}.attention.scale"))? {
        Some(scale) if scale > 0.0 => 1.0 / (f64::from(scale) * f64::from(scale)),
        _ if n == layers_27b => (hp.embedding_length / hp.head_count) as f64,
        _ => c.head_dim as f64,
    };
    c.attn_scale = scalar.powf(-0.5);
    c.activation = Activation::GeluTanh;
    c.sliding_window = hp.sliding_window;
    Ok(())
}

/// Gemma's block: `(1 + w)` norms, the MLP's own norm before it and one after each branch.
pub(super) const LAYOUT: Layout = Layout {
    norm,
    mlp_norm: "pre_feedforward_layernorm",
    post_norms: Some(("post_attention_layernorm", "post_feedforward_layernorm")),
    qk_norm: false,
};

/// Gemma's RMSNorm from tensor `name`: its scale `1 + w` is computed in `f32`, as HF does.
fn norm(w: &mut Weights, name: &str, dim: i64, eps: f64) -> Result<Norm> {
    let raw = w.raw(name, &[dim])?.f_to_kind(Kind::Float)?;
    // llama.cpp's converter has already added the 1.
    let scale = if w.is_gguf() {
        raw
    } else {
        raw.f_add_scalar(1.0)?
    };
    Ok(Norm::Gemma {
        scale: scale.f_to_device(w.device)?,
        eps,
    })
}

/// Builds a Gemma whose blocks are as `layout` says.
pub(super) fn build_with(c: &Config, w: &mut Weights, layout: &Layout) -> Result<Parts> {
    let mut parts = llama::build_with(c, w, layout)?;
    // HF: torch.tensor(sqrt(hidden)) in float32, cast to the weights' dtype.
    let scale = (c.hidden_size as f64).sqrt() as f32;
    parts.embed_scale = Some(
        Tensor::from(scale)
            .f_to_kind(w.kind)?
            .f_to_device(w.device)?,
    );
    Ok(parts)
}
