//! Qwen2: Llama's block with biases on q, k and v, and sliding layers from `max_window_layers`
//! on. It shares Llama's config keys, GGUF tensor names and builder.

use super::llama::{self, HfLlamaConfig};
use super::{Arch, Family, GgufSpec};
use crate::config::{parse_hf, Config};
use crate::Result;

pub(crate) const FAMILY: Family = Family {
    arch: Arch::Qwen2,
    model_types: &["qwen2"],
    hf_config,
    gguf: Some(GgufSpec {
        name: "qwen2",
        tensors: llama::GGUF_TENSORS,
        // llama.cpp permutes q and k for its `llama` graph only; Qwen2's uses HF's RoPE layout.
        permuted_qk: false,
        config: |_, _, _| Ok(()),
    }),
    build: llama::build,
};

fn hf_config(value: serde_json::Value, model_type: &str) -> Result<Config, String> {
    let hf = parse_hf::<HfLlamaConfig>(value, model_type, llama::KEYS, false)?;
    // The window applies only with `use_sliding_window`, and then to the layers from
    // `max_window_layers` on (HF's default: 28).
    let window = hf.sliding_window.filter(|_| hf.use_sliding_window);
    let first = hf.max_window_layers.unwrap_or(28);
    let mut c = hf.into_config(Arch::Qwen2, window, |i| window.is_some() && i >= first)?;
    // Qwen2's attention has q/k/v biases and none on the output, whatever attention_bias says.
    c.qkv_bias = true;
    c.o_bias = false;
    Ok(c)
}
