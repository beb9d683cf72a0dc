//! Caches the nonzero latents of sparse coders over a token stream, in delphi's split-file layout.
//!
//! Nonzeros are spilled to one append-only file per split as batches arrive, then each split is
//! written out by streaming its spill file, so peak memory does not grow with the number of
//! tokens (delphi keeps every nonzero in RAM until the end). Documents come from local files
//! ([`tokens`]) or the parquet files of a Hugging Face dataset ([`hub`]).
//!
//! ```
//! use autointerp_cache::SplitSpiller;
//! use autointerp_core::split::{Split, Tokens};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let mut spiller = SplitSpiller::create(dir.path(), 8, 2, "my-run")?; // 8 latents, 2 splits
//! // Token 0 of row 0 fires latents 1 and 6; token 1 fires nothing.
//! spiller.push_token(0, 0, &[(6, 0.5), (1, 2.0)])?;
//! let done = spiller.finish(Some(&Tokens { rows: 1, ctx_len: 2, ids: vec![7, 9] }))?;
//! let first = Split::read(&done.files[0])?;
//! assert_eq!(first.activations, vec![2.0]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod hub;
mod run;
mod spill;
pub mod tokens;

pub use error::{Error, Result};
pub use run::{hook_dir, run, BoxError, HookStats, LatentEncoder, Progress, RunConfig, Target};
pub use spill::{Checkpoint, Finished, SplitSpiller};
