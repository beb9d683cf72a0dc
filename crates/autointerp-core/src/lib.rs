//! Small types shared by every autointerp crate, the on-disk format of a latent cache's splits
//! (one streaming writer, one memory-mapped reader), and atomic file writes.
//!
//! Data flows one way through autointerp: tokens → activations → latents → records → prompts →
//! answers → scores → report. This crate holds the nouns of that flow, so that the crates doing the
//! work can each be used alone.
//!
//! ```
//! use autointerp_core::{HookPoint, LatentId};
//!
//! // Canonical names are the same for every architecture; HF module paths are accepted as aliases.
//! let hook: HookPoint = "model.layers.6".parse()?;
//! assert_eq!(hook, HookPoint::Residual(6));
//! assert_eq!(hook.to_string(), "layers.6");
//!
//! let id = LatentId::new(hook, 1234);
//! assert_eq!(id.to_string(), "layers.6_latent1234");
//! # Ok::<(), autointerp_core::Error>(())
//! ```
//!
//! Example: `cargo run -p autointerp-core --example core_split`.
#![warn(missing_docs)]
// Only `split::read` maps files into memory.
#![deny(unsafe_code)]

pub mod assets;
mod chat;
mod embed;
mod error;
pub mod fs;
mod hook;
mod hub_id;
pub mod layout;
mod record;
pub mod split;
mod vocab;

pub use chat::{Message, Role};
pub use embed::{EmbedError, EmbedFuture, Embedder};
pub use error::{Error, Result};
pub use hook::HookPoint;
pub use hub_id::{is_hub_repo_id, read_json_bounded, MAX_HUB_METADATA_BYTES};
pub use record::{
    Example, Explanation, LatentId, LatentLogits, LatentRecord, LatentStats, Score, TokenLogit,
};
pub use vocab::{LatentTokens, VocabProjection, VOCAB_PROJECTION_FILE};
