//! Transformer language models on libtorch (tch) with named hook points: GPT-2, Llama (Llama 3,
//! SmolLM2, Mistral), Qwen2, Gemma 2, Gemma 3 and GPT-NeoX, numerically equal to Hugging Face
//! transformers (checked against its outputs to 1e-4 in `f32`).
//!
//! ```no_run
//! use autointerp_core::HookPoint;
//! use autointerp_model::{DType, Hooks, Input, Logits, Model};
//!
//! # fn main() -> anyhow::Result<()> {
//! // An HF folder, a .gguf file, or a Hub id such as "HuggingFaceTB/SmolLM2-135M".
//! let (model, tokenizer) = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf", tch::Device::Cpu, DType::F32)?;
//! let tokenizer = tokenizer.expect("GGUF files carry their tokenizer");
//! let ids: Vec<i64> = tokenizer.encode("The capital of France is", false)?.into_iter().map(i64::from).collect();
//! let ids = tch::Tensor::from_slice(&ids).unsqueeze(0); // [batch 1, seq]
//!
//! // Capture the residual stream after layer 6 and the MLP activations of layer 6; stop there.
//! let hooks = Hooks::new()
//!     .capture(HookPoint::Residual(6))
//!     .capture(HookPoint::MlpHidden(6))
//!     .with_logits(Logits::None);
//! let out = model.forward(&Input::new(&ids), &hooks)?;
//! let resid = &out.captures[&HookPoint::Residual(6)]; // [1, seq, d_model]
//!
//! // Or run to the end and read the next token.
//! let out = model.forward(&Input::new(&ids), &Hooks::new())?;
//! let next = out.logits.unwrap().select(1, -1).argmax(-1, false).int64_value(&[0]);
//! println!("{}", tokenizer.decode(&[next as u32], false)?);
//! # let _ = resid; Ok(()) }
//! ```
//!
//! Hook points ([`HookPoint`](autointerp_core::HookPoint)) mean the same in every architecture:
//! `embed` is the input of block 0 (Gemma's scaling included), `layers.i` the output of block
//! i, `layers.i.attn` / `layers.i.mlp` what each branch adds to the residual stream (after
//! Gemma's post-branch norms), `layers.i.mlp.input` the MLP's input after its norm and
//! `layers.i.mlp.hidden` the input of its down projection. [`Hooks`] captures any of them and
//! replaces any of them through a closure; [`KvCache`] and [`Model::forward_step`] decode
//! incrementally, [`Model::generate`] decodes greedily.
//!
//! [`save_activations`] runs a text or rows of token ids and saves the hook points' activations
//! to a safetensors file.
//!
//! [`SentenceEmbedder`] runs a sentence-transformers model with a BERT encoder
//! (all-MiniLM-L6-v2) in this process: texts in, unit vectors out, as
//! `SentenceTransformer.encode` computes them.
//!
//! Examples: `cargo run --release -p autointerp-model --example model_activations -- MODEL "text"`, `gguf_inspect`, `sentence_embed`.
#![warn(missing_docs)]

mod activations;
mod arch;
mod cache;
mod config;
mod decoder;
mod device;
mod error;
pub mod gguf;
mod hf_compat;
mod hooks;
mod layers;
mod load;
mod model;
mod sentence;
mod tokenizer;
mod weights;

pub use activations::{save_activations, ActivationInput, Activations};
pub use arch::Arch;
pub use cache::KvCache;
pub use config::{Activation, Config, LayerAttention, RopeConfig, RopeScaling};
pub use device::{init_cuda, parse_device, DType};
pub use error::{Error, Result};
pub use hooks::{Hooks, Intervention, Logits};
pub use model::{GenerateOptions, Input, Model, Output};
pub use sentence::{Pooling, SentenceEmbedder};
pub use tokenizer::{pad_batch, PaddingSide, Tokenizer};
