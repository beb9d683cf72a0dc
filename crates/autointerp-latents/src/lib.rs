//! Latent records from a latent cache: for each latent, the token windows where it fires, split
//! into train examples (for the explainer) and test examples (for scorers), and windows where it
//! does not fire. Pure Rust over the cache's split files (memory-mapped); no libtorch (unless
//! the `local` feature is on).
//!
//! The entry point is [`LatentCache::open`] (our cache, delphi's, or a set of shards) and
//! [`LatentDataset::builder`]; [`LatentDataset::records`] then yields one [`BuiltRecord`] per
//! latent, lazily, built in parallel on the current rayon pool.
//!
//! ```
//! use autointerp_core::split::{Location, Split, Tokens};
//! use autointerp_core::HookPoint;
//! use autointerp_latents::{LatentCache, LatentDataset, LatentsConfig};
//!
//! # fn main() -> anyhow::Result<()> {
//! // A cache of hook point `layers.6`: 4 rows of 16 tokens; latent 3 fires in every row.
//! let root = tempfile::tempdir()?;
//! let dir = root.path().join("latents").join("layers.6");
//! std::fs::create_dir_all(&dir)?;
//! let tokens = Tokens { rows: 4, ctx_len: 16, ids: (0..64).collect() };
//! let locations: Vec<Location> = (0..4).map(|row| Location { row, position: 5, latent: 3 }).collect();
//! let activations = vec![1.0, 4.0, 2.0, 3.0];
//! Split { start: 0, end: 7, locations, activations, tokens: Some(tokens) }.write_to_dir(&dir)?;
//!
//! let cache = LatentCache::open(root.path())?;
//! let mut cfg = LatentsConfig::default();
//! cfg.constructor.example_ctx_len = 8;
//! cfg.constructor.min_examples = 1;
//! cfg.sampler.train_type = autointerp_latents::TrainType::Top;
//! cfg.sampler.n_examples_train = 2;
//! let dataset = LatentDataset::builder(cache, cfg, |id: u32| format!("<{id}>"))
//!     .latents(HookPoint::Residual(6), [3])
//!     .build()?;
//! for built in dataset.records() {
//!     let built = built?;
//!     let record = &built.record;
//!     assert_eq!(record.id.to_string(), "layers.6_latent3");
//!     // The two strongest windows (rows 1 and 3), tokens 0..8 of their row.
//!     assert_eq!(record.train[0].tokens, (16..24).collect::<Vec<u32>>());
//!     assert_eq!(record.train[0].str_tokens[5], "<21>");
//!     assert_eq!(record.train[0].normalized[5], 10);
//!     assert_eq!(record.train[1].activations[5], 3.0);
//!     // The other windows hold the test examples and the non-activating ones.
//!     assert_eq!(record.test.len(), 2);
//!     assert!(record.non_activating.iter().all(|e| e.max_activation() == 0.0));
//!     assert_eq!(built.per_context_frequency(), 0.5);
//! }
//! # Ok(()) }
//! ```
//!
//! Non-activating examples come from random windows, from windows where the latent's
//! [`NeighbourLists`] fire, or from the windows whose text an [`Embedder`] places nearest to
//! the activating examples ([`NonActivatingSource`]); autointerp-engine's `LocalEmbedder` is such
//! an embedder, a sentence-transformers model (all-MiniLM-L6-v2) run in this process, as is any
//! `/embeddings` server through autointerp-client's `OpenAiEmbedder`. This crate itself is pure
//! Rust and never links libtorch.
//!
//! Example: `cargo run --release -p autointerp-latents --example latents_records -- CACHE_DIR HOOKPOINT`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
mod config;
mod constructor;
mod dataset;
mod display;
mod embedding;
mod error;
mod neighbours;
mod non_activating;
mod sampler;

pub use autointerp_core::Embedder;
pub use cache::{HookCache, LatentCache, ShardInfo, FIRING_COUNTS_FILE, SHARD_FILE};
pub use config::{ConstructorConfig, LatentsConfig, NonActivatingSource, SamplerConfig, TrainType};
pub use dataset::{BuiltRecord, DatasetBuilder, Decode, LatentDataset, Records};
pub use display::{render_example, Style};
pub use error::{Error, Result};
pub use neighbours::{LatentWeights, Neighbour, NeighbourLists};
pub use sampler::{sample, Pick, Sample};
