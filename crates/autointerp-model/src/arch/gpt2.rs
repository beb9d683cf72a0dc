//! GPT-2: learned positions, LayerNorm, `Conv1D` projections (weights stored `[in, out]`), a
//! tied unembedding. No GGUF loader: llama.cpp's `gpt2` files are not read.

use serde::Deserialize;

use super::{Arch, Family};
use crate::config::{
    activation, default_layer_norm_eps, default_true, parse_hf, Config, HfTokens, LayerAttention,
};
use crate::decoder::{lm_head, sizes, Attention, Block, Mlp, Parts};
use crate::layers::{layer_norm, Linear};
use crate::weights::Weights;
use crate::Result;

pub(crate) const FAMILY: Family = Family {
    arch: Arch::Gpt2,
    model_types: &["gpt2"],
    hf_config,
    gguf: None,
    build,
};

fn hf_config(value: serde_json::Value, model_type: &str) -> Result<Config, String> {
    parse_hf::<HfGpt2Config>(value, model_type, &[KEYS], false)?.into_config()
}

fn default_n_positions() -> usize {
    1024
}
fn default_gpt2_act() -> String {
    "gelu_new".into()
}

/// The keys [`HfGpt2Config`] reads, and GPT-2's own that do not change the forward pass (`n_ctx`
/// is `n_positions` again; the `summary_*` keys configure a classification head;
/// `reorder_and_upcast_attn` only changes the precision of a half-precision softmax).
const KEYS: &[&str] = &[
    "vocab_size",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "activation_function",
    "layer_norm_epsilon",
    "n_positions",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "tie_word_embeddings",
    "n_ctx",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "reorder_and_upcast_attn",
];

/// `config.json` of `gpt2`.
#[derive(Debug, Deserialize)]
struct HfGpt2Config {
    vocab_size: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "default_gpt2_act")]
    activation_function: String,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_n_positions")]
    n_positions: usize,
    #[serde(default = "default_true")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(flatten)]
    tokens: HfTokens,
}

impl HfGpt2Config {
    fn into_config(self) -> std::result::Result<Config, String> {
        if self.scale_attn_by_inverse_layer_idx {
            return Err("scale_attn_by_inverse_layer_idx is not supported".into());
        }
        if !self.tie_word_embeddings {
            return Err("untied GPT-2 (tie_word_embeddings false) is not supported".into());
        }
        let head_dim = self.n_embd / self.n_head.max(1);
        let mut c = Config {
            arch: Arch::Gpt2,
            vocab_size: self.vocab_size,
            hidden_size: self.n_embd,
            intermediate_size: self.n_inner.unwrap_or(4 * self.n_embd),
            num_layers: self.n_layer,
            num_heads: self.n_head,
            num_kv_heads: self.n_head,
            head_dim,
            norm_eps: self.layer_norm_epsilon,
            activation: activation(&self.activation_function)?,
            max_position_embeddings: self.n_positions,
            rope: None,
            rope_local: None,
            sliding_window: None,
            layer_types: vec![LayerAttention::Full; self.n_layer],
            attn_scale: if self.scale_attn_weights {
                (head_dim as f64).powf(-0.5)
            } else {
                1.0
            },
            attn_logit_softcap: None,
            final_logit_softcap: None,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            parallel_residual: false,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
        };
        self.tokens.apply(&mut c);
        Ok(c)
    }
}

fn build(c: &Config, w: &mut Weights) -> Result<Parts> {
    let (d, v, inter, _, _, _) = sizes(c);
    // Saved from GPT2LMHeadModel the names start with `transformer.`, from GPT2Model not.
    let p = if w.has("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let eps = c.norm_eps;
    let embed = w.get(&format!("{p}wte.weight"), &[v, d])?;
    let pos_embed = w.get(
        &format!("{p}wpe.weight"),
        &[c.max_position_embeddings as i64, d],
    )?;
    let mut blocks = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let b = format!("{p}h.{i}.");
        blocks.push(Block::new(
            c,
            i,
            layer_norm(w, &format!("{b}ln_1"), d, eps)?,
            Attention::new(
                c,
                conv1d(w, &format!("{b}attn.c_attn"), d, 3 * d)?,
                conv1d(w, &format!("{b}attn.c_proj"), d, d)?,
                None,
                None,
            ),
            layer_norm(w, &format!("{b}ln_2"), d, eps)?,
            Mlp::new(
                c,
                conv1d(w, &format!("{b}mlp.c_fc"), d, inter)?,
                conv1d(w, &format!("{b}mlp.c_proj"), inter, d)?,
                false,
            ),
        ));
    }
    let final_norm = layer_norm(w, &format!("{p}ln_f"), d, eps)?;
    // Always tied (the config refuses `tie_word_embeddings: false`).
    let lm_head = lm_head(c, w, &embed, "lm_head.weight")?;
    Ok(Parts {
        pos_embed: Some(pos_embed),
        future_neg_inf: true,
        ..Parts::new(embed, blocks, final_norm, lm_head)
    })
}

/// GPT-2's `Conv1D`: weight stored `[in, out]`, kept transposed to `[out, in]`.
fn conv1d(w: &mut Weights, prefix: &str, inp: i64, out: i64) -> Result<Linear> {
    let weight = w
        .raw(&format!("{prefix}.weight"), &[inp, out])?
        .f_transpose(0, 1)?;
    Ok(Linear {
        weight: w.place(weight)?,
        bias: Some(w.get(&format!("{prefix}.bias"), &[out])?),
    })
}
