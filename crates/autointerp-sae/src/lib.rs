//! Sparse autoencoders and transcoders on libtorch: load a checkpoint, encode activations into
//! sparse latents, decode them back, and measure reconstruction.
//!
//! ```no_run
//! use autointerp_sae::SparseCoder;
//! # fn main() -> autointerp_sae::Result<()> {
//! // A sparsify checkpoint folder holding `cfg.json` and `sae.safetensors`.
//! let sae = SparseCoder::load_sparsify("sae/layers.6".as_ref(), tch::Device::Cpu)?;
//! let x = tch::Tensor::randn([4, sae.d_in() as i64], (tch::Kind::Float, tch::Device::Cpu));
//! let latents = sae.encode(&x)?; // indices and values, never a dense [tokens, width] buffer
//! assert_eq!(latents.indices.size(), [4, sae.k().unwrap() as i64]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod coder;
mod error;

pub use coder::{Activation, SparseCoder, SparseLatents};
pub use error::{Error, Result};
