//! Caches the nonzero latents of sparse coders over a token stream, in delphi's split-file layout.
//!
//! Nonzeros are spilled to one append-only file per split as batches arrive, then each split is
//! written out by streaming its spill file, so peak memory does not grow with the number of
//! tokens (delphi keeps every nonzero in RAM until the end). Documents come from local files
//! ([`tokens`]) or the parquet files of a Hugging Face dataset ([`hub`]).
//!
//! With a model from `autointerp-model`, a whole cache is a dataset spec, the coders and one call:
//!
//! ```no_run
//! use std::num::NonZeroUsize;
//! use autointerp_cache::{cache_dataset, CacheConfig, DatasetSpec, Shard};
//! use autointerp_core::HookPoint;
//! use autointerp_model::{DType, Model};
//!
//! # fn main() -> anyhow::Result<()> {
//! let (model, tokenizer) = Model::load("HuggingFaceTB/SmolLM2-135M", tch::Device::Cpu, DType::F32)?;
//! let dataset = DatasetSpec { source: "acme/speeches".into(), ..Default::default() };
//! let tokens = dataset.token_rows(tokenizer.as_ref())?;
//! let (_, tokens) = "0/2".parse::<Shard>()?.slice(&tokens)?; // this process's half
//! let hooks = [HookPoint::MlpHidden(6)]; // the MLP neurons of block 6, top 32 per token
//! let coders = autointerp_sae::load_coders("neurons:32", &hooks, |h| model.hook_dim(h), model.device())?;
//! let cfg = CacheConfig {
//!     batch_size: NonZeroUsize::new(8).unwrap(),
//!     n_splits: 5,
//!     model_name: "HuggingFaceTB/SmolLM2-135M".into(),
//!     skip_first_token: true,
//!     extra: Default::default(),
//!     checkpoint_every: CacheConfig::DEFAULT_CHECKPOINT_EVERY,
//!     identity: String::new(),
//! }
//! .with_dataset(&dataset)
//! .with_sparse_model("neurons:32");
//! let stats = cache_dataset("out".as_ref(), &model, &coders, &tokens, &cfg, |_| {})?;
//! # Ok(()) }
//! ```
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
//!
//! # The output side of each latent
//!
//! With a model, [`cache_dataset`] also writes, beside each coder's split files,
//! `vocab_projection.json` ([`autointerp_core::VocabProjection`]): for every latent, the
//! [`DEFAULT_VOCAB_K`] tokens whose logits its decoder row raises most and lowers most when
//! added to the residual stream, read through the model's final norm and unembedding
//! ([`vocab_projection`], one matrix product per chunk of latents). This is the logit lens
//! (nostalgebraist, "interpreting GPT: the logit lens", LessWrong, 2020) applied to a direction
//! rather than an activation, and the vocabulary projection that Gur-Arieh et al. (2025,
//! "Enhancing Automated Interpretability with Output-Centric Feature Descriptions", ACL) give
//! explainers alongside the activating examples. Records built from the cache carry it
//! (`LatentRecord::logits`), `autointerp latents show` prints it, the report shows it, and the
//! explainers can list the promoted tokens (`--explainer-logits`). Coders without decoder rows
//! (MLP neurons) are cached without it.
//!
//! Example: `cargo run -p autointerp-cache --example cache_tiny` (a tiny random Llama and a random TopK SAE, offline, in seconds).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod dataset;
mod error;
mod forward;
pub mod hub;
mod identity;
mod run;
mod spill;
pub mod tokens;
mod vocab;

pub use dataset::{DatasetSpec, Shard};
pub use error::{Error, Result};
pub use forward::{cache_dataset, train_sae, SaeTraining};
pub use identity::source_identity;
pub use run::{hook_dir, run, BoxError, CacheConfig, HookStats, LatentEncoder, Progress, Target};
pub use spill::{Checkpoint, Finished, SplitSpiller};
pub use vocab::{vocab_projection, DEFAULT_VOCAB_K};
