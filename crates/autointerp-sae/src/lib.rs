//! Sparse autoencoders, transcoders and MLP neurons on libtorch: load a checkpoint, encode
//! activations into sparse latents, decode them back, and measure reconstruction.
//!
//! ```
//! use autointerp_sae::{Activation, SparseCoder, Weights};
//! use tch::{Device, Kind, Tensor};
//! # fn main() -> autointerp_sae::Result<()> {
//! let (d_in, width) = (16, 64);
//! let opts = (Kind::Float, Device::Cpu);
//! let sae = SparseCoder::new(
//!     Weights {
//!         w_enc: Tensor::randn([d_in, width], opts),
//!         b_enc: Tensor::zeros([width], opts),
//!         w_dec: Some(Tensor::randn([width, d_in], opts)),
//!         b_dec: Tensor::zeros([d_in], opts),
//!         w_skip: None,
//!     },
//!     Activation::TopK { k: 4 },
//! )?;
//! let x = Tensor::randn([8, d_in], opts);
//! let latents = sae.encode(&x)?; // indices and values, never a dense [tokens, width] buffer
//! assert_eq!(latents.indices.size(), [8, 4]);
//! let metrics = sae.metrics(&x, None)?; // FVU, mean L0, dead fraction
//! assert!(metrics.mean_l0 <= 4.0);
//! # Ok(()) }
//! ```
//!
//! Checkpoints on disk or on the Hugging Face Hub, chosen by hook point:
//!
//! ```no_run
//! use autointerp_sae::SparseCoder;
//! # fn main() -> autointerp_sae::Result<()> {
//! // A sparsify repo: one sub-folder per hook point.
//! let coders = SparseCoder::load("EleutherAI/sae-pythia-70m-32k", &["layers.4.mlp"], tch::Device::Cpu)?;
//! for (name, coder) in &coders {
//!     coder.check_input(coder.hook(), 512)?;
//!     println!("{name}: {} latents at {:?}", coder.width(), coder.hook());
//! }
//! # Ok(()) }
//! ```
//!
//! # Formats
//!
//! | format | files | encoder |
//! |---|---|---|
//! | EleutherAI sparsify | `cfg.json` + `sae.safetensors` per hook-point folder (`layers.6/`, `layers.6.mlp/`) | TopK or group-max on `relu((x − b_dec) Wᵀ + b)`; transcoders (`transcode`) skip `− b_dec`; `skip_connection` adds `x W_skipᵀ` to the output |
//! | SAE-Lens | `cfg.json` + `sae_weights.safetensors` | `standard` (ReLU), `topk`, `jumprelu` (`threshold` or `log_threshold`), `gated`, `transcoder`, `skip_transcoder`, `jumprelu_transcoder`, `batchtopk` training checkpoints; pre-6.0 configs too |
//! | GemmaScope | `params.npz` (`layer_{i}/width_{w}/average_l0_{l}/`) | JumpReLU on `x W_enc + b_enc` |
//! | neurons | none | the MLP's hidden activations (`layers.{i}.mlp.hidden`), optionally top-k |
//!
//! SAE-Lens's `normalize_activations`: `constant_norm_rescale` (`x·sqrt(d_in)/‖x‖` per token) and
//! `layer_norm` are applied on the input and undone on the output; `expected_average_only_in` is a
//! constant factor that is folded into the weights as SAE-Lens folds it, read from
//! `activation_scaler.json` beside the weights or `norm_scaling_factor` in `cfg.json`, or given with
//! [`SparseCoder::fold_norm_scaling_factor`] (without it the input is encoded unscaled, with a
//! warning, as SAE-Lens does). Hook names (`blocks.8.hook_resid_post`, `layers.6.mlp`,
//! `layer_12` + `gemma-scope-…-res`) become [`autointerp_core::HookPoint`]s.
//!
//! # Features
//! - `hub` (default): download from the Hugging Face Hub. Without it, or offline, a repo id
//!   loads only from a snapshot already in the local Hugging Face cache; otherwise the error asks
//!   for a local path.
//!
//! Example: `cargo run --release -p autointerp-sae --example sae_encode`.
#![warn(missing_docs)]

mod coder;
pub mod edit;
mod error;
mod files;
mod gemmascope;
mod hub;
mod load;
mod npz;
mod saelens;
mod select;
mod sparsify;
pub mod train;

pub use coder::{Activation, Format, InputNorm, Metrics, SparseCoder, SparseLatents, Weights};
pub use error::{Error, Result};
pub use select::load_coders;
