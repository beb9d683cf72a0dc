//! Gemma 3 (text): Gemma 2's block with norms of each head's queries and keys, a RoPE of its own
//! for sliding layers, and no attention softcap. It reads the `text_config` of the multimodal
//! `gemma3` checkpoints too, and skips their vision tower.

use super::gemma2::{self, HfGemmaConfig};
use super::llama::Layout;
use super::{Arch, Family, GgufSpec};
use crate::config::{parse_hf, Config, RopeConfig};
use crate::gguf::{GgufFile, GgufHparams};
use crate::Result;

pub(crate) const FAMILY: Family = Family {
    arch: Arch::Gemma3,
    model_types: &["gemma3", "gemma3_text"],
    hf_config,
    gguf: Some(GgufSpec {
        name: "gemma3",
        tensors: gemma2::GGUF_TENSORS,
        permuted_qk: false,
        config: gguf_config,
    }),
    build: |c, w| gemma2::build_with(c, w, &LAYOUT),
};

const LAYOUT: Layout = Layout {
    qk_norm: true,
    ..gemma2::LAYOUT
};

fn hf_config(value: serde_json::Value, model_type: &str) -> Result<Config, String> {
    let value = if model_type == "gemma3" {
        text_config(value)?
    } else {
        value
    };
    let hf = parse_hf::<HfGemmaConfig>(value, model_type, gemma2::KEYS, true)?;
    let period = hf.sliding_window_pattern.unwrap_or(6).max(1);
    let mut c = hf.shared_config(Arch::Gemma3, period, 1_000_000.0)?;
    c.rope_local = Some(local_rope(&c, hf.rope_local_base_freq.unwrap_or(10_000.0)));
    // Gemma 3 ignores attn_logit_softcapping (it is not passed to its attention), and HF's
    // default for the final cap is null.
    c.final_logit_softcap = hf.final_logit_softcapping.flatten();
    Ok(c)
}

/// The language model's config inside the multimodal wrapper.
fn text_config(wrapper: serde_json::Value) -> Result<serde_json::Value, String> {
    let mut text = wrapper
        .get("text_config")
        .cloned()
        .ok_or_else(|| "model_type gemma3 without \"text_config\"".to_owned())?;
    // Token ids of the wrapper (what HF generation reads) win over the nested ones.
    if let (Some(obj), Some(top)) = (text.as_object_mut(), wrapper.as_object()) {
        for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
            if let Some(v) = top.get(key) {
                obj.insert(key.to_owned(), v.clone());
            }
        }
    }
    Ok(text)
}

/// The RoPE of sliding layers: the global one's dimensions, its own base, never rescaled.
fn local_rope(c: &Config, theta: f64) -> RopeConfig {
    RopeConfig {
        theta,
        rotary_dim: c.rope.as_ref().map_or(c.head_dim, |r| r.rotary_dim),
        scaling: None,
    }
}

fn gguf_config(gguf: &GgufFile, hp: &GgufHparams, c: &mut Config) -> Result<()> {
    // All layers but every sixth slide unless the file says otherwise (llama.cpp's default);
    // the 27B model has 62 layers.
    let period = |key: &str| Ok(gguf.opt_usize(key)?.unwrap_or(6).max(1));
    gemma2::gguf_shared_config(gguf, hp, c, period, 62)?;
    let theta = gguf
        .opt_f32(&format!("{}.rope.freq_base_swa", hp.architecture))
        .ok()
        .flatten()
        .map(f64::from)
        .unwrap_or(10_000.0);
    c.rope_local = Some(local_rope(c, theta));
    Ok(())
}
