//! The async pipeline: stages composed with combinators, run over many items with bounded
//! concurrency, each result handed to one writer.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use autointerp_pipeline::{from_fn, run, StageExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), autointerp_pipeline::BoxError> {
//! let explain = from_fn(|latent: u32| async move { Ok(format!("latent {latent}")) });
//! let score = from_fn(|text: String| async move { Ok(text.len()) });
//! let pipeline = explain.then(score);
//!
//! let mut lengths = Vec::new();
//! let summary = run(0..3u32, pipeline, NonZeroUsize::new(2).unwrap(), |_, result| {
//!     lengths.push(result?);
//!     Ok(())
//! })
//! .await?;
//! assert_eq!(summary.succeeded, 3);
//! lengths.sort();
//! assert_eq!(lengths, vec![8, 8, 8]);
//! # Ok(()) }
//! ```
//!
//! Example: `cargo run -p autointerp-pipeline --example pipeline_stages`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod runner;
mod stage;

pub use runner::{run, Summary};
pub use stage::{from_fn, FanOut, FromFn, Map, Stage, StageExt, Then};

/// The error a stage fails with: any error, so that stages from different crates compose.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
