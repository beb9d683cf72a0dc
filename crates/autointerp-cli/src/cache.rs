//! `autointerp cache`: stream a dataset through a model and sparse coders into a latent cache.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use autointerp_cache::tokens::DatasetConfig;
use autointerp_cache::{cache_dataset, CacheConfig, DatasetSpec, HookStats, Shard};
use autointerp_core::is_hub_repo_id;
use autointerp_core::split::Tokens;
use autointerp_latents::ShardInfo;
use autointerp_model::{Model, Tokenizer};
use autointerp_run::overrides::number;
use autointerp_run::TenthLines;
use autointerp_sae::load_coders;
use indicatif::ProgressBar;

use crate::common::{bar, load_model, log_tenth, parse_hookpoints, spinner, DeviceArgs};

/// `autointerp cache`.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// HF model folder, `.gguf` file, or Hub id.
    #[arg(long)]
    pub model: String,
    /// Sparse coders: a sparsify / SAE-Lens / GemmaScope folder or Hub repo, or `neurons` /
    /// `neurons:K` to use the MLP activations at `layers.{i}.mlp.hidden` (top-K per token).
    #[arg(long)]
    pub sparse_model: String,
    /// Hook points to cache, space- or comma-separated (`--hookpoints layers.3 layers.6`).
    #[arg(long, visible_alias = "hookpoint", required = true, num_args = 1.., value_delimiter = ',')]
    pub hookpoints: Vec<String>,
    /// A .txt/.jsonl/.parquet file or a folder of them, a `.safetensors` of pre-tokenized
    /// `tokens` [rows, ctx_len], or a Hugging Face dataset id (`owner/name`, its parquet files;
    /// honours HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_OFFLINE).
    #[arg(long, visible_alias = "dataset-repo")]
    pub dataset: String,
    /// Config (subset) of a Hub dataset, as delphi's `dataset_name`; default: `default`, or the
    /// only one.
    #[arg(long)]
    pub dataset_name: Option<String>,
    /// Split of a Hub dataset, optionally sliced as in `datasets` (`train[:1%]`,
    /// `train[1000:5000]`), as delphi's `dataset_split`; default `train`.
    #[arg(long)]
    pub dataset_split: Option<String>,
    /// Column or key holding the text.
    #[arg(long, default_value = "text", visible_alias = "dataset-row")]
    pub dataset_column: String,
    /// Tokens to cache.
    #[arg(long, default_value_t = 10_000_000, value_parser = number::<usize>)]
    pub n_tokens: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 256, visible_alias = "cache-ctx-len", value_parser = number::<usize>)]
    pub ctx_len: usize,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 8, value_parser = number::<usize>)]
    pub batch_size: usize,
    /// Split files per hook point.
    #[arg(long, default_value_t = 5, value_parser = number::<u32>)]
    pub n_splits: u32,
    /// Seconds between checkpoints (fsync of the spills): a killed run redoes at most this
    /// much; 0 checkpoints after every batch.
    #[arg(long, default_value_t = 5.0, value_parser = number::<f64>)]
    pub checkpoint_every: f64,
    /// Drop BOS tokens from the token stream [default: false; delphi's is true].
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub filter_bos: bool,
    /// Record no latents at position 0 of each row (the attention sink of most LMs).
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub skip_first_token: bool,
    /// Seed of the document order.
    #[arg(long, default_value_t = 22, value_parser = number::<u64>)]
    pub seed: u64,
    /// Cache only shard I of N (`I/N`, 0-based) of the token rows, e.g. one process per GPU.
    #[arg(long)]
    pub shard: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Output folder (`<out>/latents/<hookpoint>/...`).
    #[arg(long)]
    pub out: PathBuf,
}

impl CacheArgs {
    /// The dataset as the cache library takes it.
    pub fn dataset_spec(&self) -> DatasetSpec {
        DatasetSpec {
            source: self.dataset.clone(),
            name: self.dataset_name.clone(),
            split: self.dataset_split.clone(),
            rows: DatasetConfig {
                column: self.dataset_column.clone(),
                ctx_len: self.ctx_len,
                n_tokens: self.n_tokens,
                seed: self.seed,
                filter_bos: self.filter_bos,
            },
        }
    }
}

/// The token rows of `dataset`, with a spinner while a Hub dataset downloads.
pub fn dataset_rows(dataset: &DatasetSpec, model: &str, tok: Option<&Tokenizer>) -> Result<Tokens> {
    let source = &dataset.source;
    let from_hub = !Path::new(source).exists() && is_hub_repo_id(source);
    let wait = from_hub.then(|| spinner(&format!("fetching the parquet files of {source}")));
    let rows = dataset.token_rows(tok);
    wait.inspect(ProgressBar::finish_and_clear);
    rows.with_context(|| format!("model {model:?}"))
}

/// Caches the latents of `args`; `tok` is needed only for a text dataset (pre-tokenized ids need
/// none, and the cache then records that the model had no tokenizer).
pub fn run_cache(
    args: &CacheArgs,
    model: &Model,
    tok: Option<&Tokenizer>,
) -> Result<Vec<HookStats>> {
    let hooks = parse_hookpoints(&args.hookpoints, model)?;
    let coders = load_coders(
        &args.sparse_model,
        &hooks,
        |h| model.hook_dim(h),
        model.device(),
    )?;
    let mut tokens = dataset_rows(&args.dataset_spec(), &args.model, tok)?;
    let out = &args.out;
    if let Some(spec) = &args.shard {
        let shard: Shard = spec.parse().context("--shard")?;
        let (rows, part) = shard.slice(&tokens).context("--shard")?;
        tokens = part;
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        ShardInfo {
            index: shard.index as u32,
            count: shard.count as u32,
            row_offset: rows.start as u64,
            rows: rows.len() as u64,
        }
        .write(out)?;
    }
    let cfg = CacheConfig {
        batch_size: NonZeroUsize::new(args.batch_size)
            .context("--batch-size must be at least 1")?,
        n_splits: args.n_splits,
        model_name: args.model.clone(),
        skip_first_token: args.skip_first_token,
        extra: BTreeMap::new(),
        checkpoint_every: std::time::Duration::try_from_secs_f64(args.checkpoint_every)
            .context("--checkpoint-every must be a number of seconds, 0 or more")?,
        identity: String::new(),
    }
    .with_dataset(&args.dataset_spec())
    .with_model_has_tokenizer(tok.is_some())
    .with_sparse_model(&args.sparse_model);
    let progress = bar((tokens.rows * tokens.ctx_len) as u64, "tokens");
    let mut lines = TenthLines::new("cache");
    let ctx = tokens.ctx_len as u64;
    let stats = cache_dataset(out, model, &coders, &tokens, &cfg, |p| {
        progress.set_position(p.rows_done as u64 * ctx);
        log_tenth(&mut lines, &progress, "tokens");
    })?;
    progress.finish_and_clear();
    Ok(stats)
}

pub fn run_command(args: CacheArgs) -> Result<()> {
    let (model, tok) = load_model(&args.model, &args.device)?;
    let stats = run_cache(&args, &model, tok.as_ref())?;
    println!("{}", HookStats::table(&stats));
    eprintln!("cache written to {}", args.out.join("latents").display());
    Ok(())
}
