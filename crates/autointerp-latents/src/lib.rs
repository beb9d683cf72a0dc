//! Latent records from a latent cache: for each latent, the token windows where it fires most,
//! ready for explainers and scorers. Pure Rust over the cache's split files; no libtorch.
//!
//! ```
//! use autointerp_core::split::{Location, Split, Tokens};
//! use autointerp_core::{HookPoint, LatentId};
//! use autointerp_latents::{CachedHook, ConstructorConfig};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let tokens = Tokens { rows: 1, ctx_len: 8, ids: (10..18).collect() };
//! let fired = vec![Location { row: 0, position: 5, latent: 3 }];
//! Split { start: 0, end: 3, locations: fired, activations: vec![1.5], tokens: Some(tokens) }
//!     .write_to_dir(dir.path())?;
//!
//! let hook = CachedHook::open(dir.path())?;
//! let cfg = ConstructorConfig { example_ctx_len: 4, ..Default::default() };
//! let record = hook.record(LatentId::new(HookPoint::Residual(6), 3), &cfg, &|id| format!("<{id}>"))?;
//! assert_eq!(record.train[0].tokens, vec![14, 15, 16, 17]); // the window holding position 5
//! assert_eq!(record.train[0].normalized, vec![0, 10, 0, 0]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod dataset;
mod error;

pub use dataset::{CachedHook, ConstructorConfig};
pub use error::{Error, Result};
