//! Llama (also Llama 3, SmolLM2, Mistral): RMSNorm, RoPE, a gated SiLU MLP, grouped-query
//! attention. Its config struct, GGUF tensor names and block builder also serve Qwen2 and,
//! with Gemma's norms ([`Layout`]), Gemma 2 and 3.

use serde::Deserialize;
use tch::Tensor;

use super::{Arch, Family, GgufSpec};
use crate::config::{
    activation, default_rms_eps, default_rope_theta, parse_hf, parse_layer_types, rope_scaling,
    rotary_dim, Config, HfRopeScaling, HfTokens, LayerAttention, RopeConfig,
};
use crate::decoder::{lm_head, sizes, Attention, Block, Mlp, Parts};
use crate::layers::{linear, rms_norm, Linear, Norm};
use crate::weights::Weights;
use crate::Result;

pub(crate) const FAMILY: Family = Family {
    arch: Arch::Llama,
    model_types: &["llama", "mistral"],
    hf_config,
    gguf: Some(GgufSpec {
        name: "llama",
        tensors: GGUF_TENSORS,
        permuted_qk: true,
        config: |_, _, _| Ok(()),
    }),
    build,
};

fn hf_config(value: serde_json::Value, model_type: &str) -> Result<Config, String> {
    let hf = parse_hf::<HfLlamaConfig>(value, model_type, KEYS, false)?;
    // Mistral applies `sliding_window` to every layer; Llama never slides.
    let window = match model_type {
        "llama" => None,
        _ => hf.sliding_window,
    };
    hf.into_config(Arch::Llama, window, |_| window.is_some())
}

/// The keys that both Llama's and Gemma's config structs read.
pub(super) const SHARED_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "partial_rotary_factor",
    "tie_word_embeddings",
    "attention_bias",
    "sliding_window",
    "layer_types",
];

/// The keys [`HfLlamaConfig`] reads (every other key that may change the forward pass is refused).
pub(super) const KEYS: &[&[&str]] = &[
    SHARED_KEYS,
    &["mlp_bias", "use_sliding_window", "max_window_layers"],
];

/// `config.json` of `llama`, `mistral` and `qwen2`.
#[derive(Debug, Deserialize)]
pub(super) struct HfLlamaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default)]
    rope_scaling: Option<HfRopeScaling>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    pub(super) sliding_window: Option<usize>,
    #[serde(default)]
    pub(super) use_sliding_window: bool,
    #[serde(default)]
    pub(super) max_window_layers: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(flatten)]
    tokens: HfTokens,
}

impl HfLlamaConfig {
    /// The config of a Llama-shaped family; `sliding_window` is the window the family applies
    /// (if any) and `slides(i)` says whether layer `i` uses it when `layer_types` does not say.
    pub(super) fn into_config(
        self,
        arch: Arch,
        sliding_window: Option<usize>,
        slides: impl Fn(usize) -> bool,
    ) -> std::result::Result<Config, String> {
        let n = self.num_hidden_layers;
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1));
        let layer_types = match &self.layer_types {
            Some(types) => parse_layer_types(types, n)?,
            None => (0..n)
                .map(|i| {
                    if slides(i) {
                        LayerAttention::Sliding
                    } else {
                        LayerAttention::Full
                    }
                })
                .collect(),
        };
        let mut c = Config {
            arch,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: n,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            norm_eps: self.rms_norm_eps,
            activation: activation(self.hidden_act.as_deref().unwrap_or("silu"))?,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(2048),
            rope: Some(RopeConfig {
                theta: self.rope_theta,
                rotary_dim: rotary_dim(head_dim, self.partial_rotary_factor)?,
                scaling: rope_scaling(&self.rope_scaling)?,
            }),
            rope_local: None,
            sliding_window,
            layer_types,
            attn_scale: (head_dim as f64).powf(-0.5),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
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

/// llama.cpp's names of Llama's block tensors beside HF's.
pub(super) const GGUF_TENSORS: &[&[(&str, &str)]] =
    &[&[("ffn_norm", "post_attention_layernorm")], GGUF_BLOCK];

/// llama.cpp's names of a Llama-shaped block's tensors beside HF's, but for the norms that
/// Llama and Gemma place differently.
pub(super) const GGUF_BLOCK: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// What the families built on Llama's block change in it.
pub(super) struct Layout {
    /// Reads one RMSNorm weight (Gemma's hold the `w` of a `(1 + w)` scale).
    pub(super) norm: fn(&mut Weights, &str, i64, f64) -> Result<Norm>,
    /// The norm before the MLP (Llama names it after the attention it follows).
    pub(super) mlp_norm: &'static str,
    /// Norms of what attention and the MLP add, before they join the residual (Gemma).
    pub(super) post_norms: Option<(&'static str, &'static str)>,
    /// Norms of each head's queries and keys (Gemma 3).
    pub(super) qk_norm: bool,
}

/// Llama's own block, which Qwen2 shares.
const LAYOUT: Layout = Layout {
    norm: rms_norm,
    mlp_norm: "post_attention_layernorm",
    post_norms: None,
    qk_norm: false,
};

/// Builds Llama (and Qwen2, whose biases the config carries).
pub(super) fn build(c: &Config, w: &mut Weights) -> Result<Parts> {
    build_with(c, w, &LAYOUT)
}

/// Builds a Llama-shaped model whose blocks are as `layout` says.
pub(super) fn build_with(c: &Config, w: &mut Weights, layout: &Layout) -> Result<Parts> {
    let (d, v, inter, nh, nkv, hd) = sizes(c);
    let norm = layout.norm;
    let prefix = ["model.", "model.language_model.", "language_model.model."]
        .into_iter()
        .find(|p| w.has(&format!("{p}embed_tokens.weight")))
        .unwrap_or("model.");
    if prefix != "model." {
        // A multimodal checkpoint: its vision tower is not ours to load.
        w.ignore_prefixes([
            "vision_tower.",
            "multi_modal_projector.",
            "model.vision_tower.",
            "model.multi_modal_projector.",
        ]);
    }
    let embed = w.get(&format!("{prefix}embed_tokens.weight"), &[v, d])?;
    let eps = c.norm_eps;
    let mut blocks = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let p = format!("{prefix}layers.{i}.");
        let ln1 = norm(w, &format!("{p}input_layernorm.weight"), d, eps)?;
        let q = w.raw(&format!("{p}self_attn.q_proj.weight"), &[nh * hd, d])?;
        let k = w.raw(&format!("{p}self_attn.k_proj.weight"), &[nkv * hd, d])?;
        let vv = w.raw(&format!("{p}self_attn.v_proj.weight"), &[nkv * hd, d])?;
        let qkv_weight = w.place(Tensor::f_cat(&[q, k, vv], 0)?)?;
        let qkv_bias = if c.qkv_bias {
            let q = w.raw(&format!("{p}self_attn.q_proj.bias"), &[nh * hd])?;
            let k = w.raw(&format!("{p}self_attn.k_proj.bias"), &[nkv * hd])?;
            let vv = w.raw(&format!("{p}self_attn.v_proj.bias"), &[nkv * hd])?;
            Some(w.place(Tensor::f_cat(&[q, k, vv], 0)?)?)
        } else {
            None
        };
        let o = linear(w, &format!("{p}self_attn.o_proj"), d, nh * hd, c.o_bias)?;
        let (q_norm, k_norm) = if layout.qk_norm {
            (
                Some(norm(w, &format!("{p}self_attn.q_norm.weight"), hd, eps)?),
                Some(norm(w, &format!("{p}self_attn.k_norm.weight"), hd, eps)?),
            )
        } else {
            (None, None)
        };
        let post_attn_norm = match layout.post_norms {
            Some((attn, _)) => Some(norm(w, &format!("{p}{attn}.weight"), d, eps)?),
            None => None,
        };
        let ln2 = norm(w, &format!("{p}{}.weight", layout.mlp_norm), d, eps)?;
        let post_mlp_norm = match layout.post_norms {
            Some((_, mlp)) => Some(norm(w, &format!("{p}{mlp}.weight"), d, eps)?),
            None => None,
        };
        let gate = w.raw(&format!("{p}mlp.gate_proj.weight"), &[inter, d])?;
        let up = w.raw(&format!("{p}mlp.up_proj.weight"), &[inter, d])?;
        let up_bias = if c.mlp_bias {
            let g = w.raw(&format!("{p}mlp.gate_proj.bias"), &[inter])?;
            let u = w.raw(&format!("{p}mlp.up_proj.bias"), &[inter])?;
            Some(w.place(Tensor::f_cat(&[g, u], 0)?)?)
        } else {
            None
        };
        let up = Linear {
            weight: w.place(Tensor::f_cat(&[gate, up], 0)?)?,
            bias: up_bias,
        };
        let down = linear(w, &format!("{p}mlp.down_proj"), d, inter, c.mlp_bias)?;
        let qkv = Linear {
            weight: qkv_weight,
            bias: qkv_bias,
        };
        let mut block = Block::new(
            c,
            i,
            ln1,
            Attention::new(c, qkv, o, q_norm, k_norm),
            ln2,
            Mlp::new(c, up, down, true),
        );
        block.post_attn_norm = post_attn_norm;
        block.post_mlp_norm = post_mlp_norm;
        blocks.push(block);
    }
    let final_norm = norm(w, &format!("{prefix}norm.weight"), d, eps)?;
    let lm_head = lm_head(c, w, &embed, "lm_head.weight")?;
    Ok(Parts::new(embed, blocks, final_norm, lm_head))
}
