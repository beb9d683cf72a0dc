//! GPT-NeoX (Pythia): LayerNorm, partial rotary, q/k/v fused per head, a parallel or sequential
//! residual. No GGUF loader.

use serde::Deserialize;
use tch::Tensor;

use super::{Arch, Family};
use crate::config::{
    activation, default_layer_norm_eps, default_true, parse_hf, rope_scaling, rotary_dim, Config,
    HfRopeScaling, HfTokens, LayerAttention, RopeConfig,
};
use crate::decoder::{lm_head, sizes, Attention, Block, Mlp, Parts};
use crate::layers::{layer_norm, linear, Linear};
use crate::weights::Weights;
use crate::Result;

pub(crate) const FAMILY: Family = Family {
    arch: Arch::GptNeox,
    model_types: &["gpt_neox"],
    hf_config,
    gguf: None,
    build,
};

fn hf_config(value: serde_json::Value, model_type: &str) -> Result<Config, String> {
    parse_hf::<HfNeoxConfig>(value, model_type, &[KEYS], false)?.into_config()
}

/// The keys [`HfNeoxConfig`] reads.
const KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "rotary_pct",
    "partial_rotary_factor",
    "rotary_emb_base",
    "rope_theta",
    "rope_scaling",
    "layer_norm_eps",
    "use_parallel_residual",
    "tie_word_embeddings",
    "attention_bias",
];

/// `config.json` of `gpt_neox` (Pythia).
#[derive(Debug, Deserialize)]
struct HfNeoxConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    rotary_pct: Option<f64>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    rotary_emb_base: Option<f64>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<HfRopeScaling>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_true")]
    use_parallel_residual: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_true")]
    attention_bias: bool,
    #[serde(flatten)]
    tokens: HfTokens,
}

impl HfNeoxConfig {
    fn into_config(self) -> std::result::Result<Config, String> {
        let head_dim = self.hidden_size / self.num_attention_heads.max(1);
        let pct = self
            .partial_rotary_factor
            .or(self.rotary_pct)
            .or(Some(0.25));
        let rotary_dim = rotary_dim(head_dim, pct)?;
        let mut c = Config {
            arch: Arch::GptNeox,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_attention_heads,
            head_dim,
            norm_eps: self.layer_norm_eps,
            activation: activation(self.hidden_act.as_deref().unwrap_or("gelu"))?,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(2048),
            rope: Some(RopeConfig {
                theta: self.rope_theta.or(self.rotary_emb_base).unwrap_or(10_000.0),
                rotary_dim,
                scaling: rope_scaling(&self.rope_scaling)?,
            }),
            rope_local: None,
            sliding_window: None,
            layer_types: vec![LayerAttention::Full; self.num_hidden_layers],
            attn_scale: (head_dim as f64).powf(-0.5),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: true,
            parallel_residual: self.use_parallel_residual,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
        };
        self.tokens.apply(&mut c);
        Ok(c)
    }
}

fn build(c: &Config, w: &mut Weights) -> Result<Parts> {
    let (d, v, inter, nh, _, hd) = sizes(c);
    let eps = c.norm_eps;
    let embed = w.get("gpt_neox.embed_in.weight", &[v, d])?;
    let mut blocks = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let p = format!("gpt_neox.layers.{i}.");
        // query_key_value rows are [head][q|k|v][head_dim]; regroup them as [q|k|v][head][head_dim]
        // so that the fused projection splits like everyone else's.
        let regroup = |t: Tensor, rest: &[i64]| -> Result<Tensor> {
            let mut shape = vec![nh, 3, hd];
            shape.extend(rest);
            let mut flat = vec![3 * nh * hd];
            flat.extend(rest);
            Ok(t.f_reshape(&shape)?
                .f_transpose(0, 1)?
                .f_contiguous()?
                .f_reshape(&flat)?)
        };
        let qkv_w = regroup(
            w.raw(&format!("{p}attention.query_key_value.weight"), &[3 * d, d])?,
            &[d],
        )?;
        let qkv_b = if c.qkv_bias {
            let b = w.raw(&format!("{p}attention.query_key_value.bias"), &[3 * d])?;
            Some(w.place(regroup(b, &[])?)?)
        } else {
            None
        };
        let qkv = Linear {
            weight: w.place(qkv_w)?,
            bias: qkv_b,
        };
        let mut block = Block::new(
            c,
            i,
            layer_norm(w, &format!("{p}input_layernorm"), d, eps)?,
            Attention::new(
                c,
                qkv,
                linear(w, &format!("{p}attention.dense"), d, d, c.o_bias)?,
                None,
                None,
            ),
            layer_norm(w, &format!("{p}post_attention_layernorm"), d, eps)?,
            Mlp::new(
                c,
                linear(w, &format!("{p}mlp.dense_h_to_4h"), inter, d, true)?,
                linear(w, &format!("{p}mlp.dense_4h_to_h"), d, inter, true)?,
                false,
            ),
        );
        block.parallel = c.parallel_residual;
        blocks.push(block);
    }
    let final_norm = layer_norm(w, "gpt_neox.final_layer_norm", d, eps)?;
    let lm_head = lm_head(c, w, &embed, "embed_out.weight")?;
    Ok(Parts::new(embed, blocks, final_norm, lm_head))
}
