//! `autointerp cache`: stream a dataset through a model and sparse coders into a latent cache.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use autointerp_cache::tokens::{build_rows, read_pretokenized, DatasetConfig};
use autointerp_cache::{run, BoxError, HookStats, LatentEncoder, RunConfig, Target};
use autointerp_core::split::Tokens;
use autointerp_core::HookPoint;
use autointerp_latents::ShardInfo;
use autointerp_model::{Hooks, Input, Logits, Model, Tokenizer};
use autointerp_sae::SparseCoder;
use tch::Tensor;

use crate::common::{bar, load_model, parse_hookpoints, read_dataset_split, DeviceArgs, LogLines};
use crate::train::row_tokens;

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
    /// Comma-separated hook points to cache.
    #[arg(long)]
    pub hookpoints: String,
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
    #[arg(long, default_value = "text")]
    pub dataset_column: String,
    /// Tokens to cache.
    #[arg(long, default_value_t = 10_000_000)]
    pub n_tokens: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 256)]
    pub ctx_len: usize,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Split files per hook point.
    #[arg(long, default_value_t = 5)]
    pub n_splits: u32,
    /// Drop BOS tokens from the token stream.
    #[arg(long)]
    pub filter_bos: bool,
    /// Record no latents at position 0 of each row (the attention sink of most LMs).
    #[arg(long)]
    pub skip_first_token: bool,
    /// Seed of the document order.
    #[arg(long, default_value_t = 22)]
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

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let parsed = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4"),
    }
}

/// The token rows of the run (all of them; sharding happens after).
pub fn token_rows(args: &CacheArgs, tok: Option<&Tokenizer>) -> Result<Tokens> {
    if args.dataset.ends_with(".safetensors") {
        let mut t = read_pretokenized(Path::new(&args.dataset))?;
        t.rows = t.rows.min(args.n_tokens / t.ctx_len.max(1)).max(1);
        t.ids.truncate(t.rows * t.ctx_len);
        return Ok(t);
    }
    let tok = tok.with_context(|| {
        format!(
            "model {:?} has no tokenizer (no tokenizer.json, or a GGUF file without tokenizer \
             metadata), so the text dataset {:?} cannot be tokenized: add a tokenizer.json to the \
             model or pass a pre-tokenized .safetensors dataset",
            args.model, args.dataset
        )
    })?;
    let docs = read_dataset_split(
        &args.dataset,
        &args.dataset_column,
        args.dataset_name.as_deref(),
        args.dataset_split.as_deref(),
    )?;
    let cfg = DatasetConfig {
        column: args.dataset_column.clone(),
        ctx_len: args.ctx_len,
        n_tokens: args.n_tokens,
        seed: args.seed,
        filter_bos: args.filter_bos,
    };
    Ok(build_rows(
        docs,
        tok.inner(),
        row_tokens(tok),
        &cfg,
        Path::new(&args.dataset),
    )?)
}

/// Loads one coder per hook point.
fn load_coders(args: &CacheArgs, model: &Model, hooks: &[HookPoint]) -> Result<Vec<SparseCoder>> {
    let mut coders = Vec::new();
    if let Some(k) = args.sparse_model.strip_prefix("neurons") {
        let k = match k.strip_prefix(':') {
            Some(k) => Some(k.parse::<usize>().with_context(|| {
                format!("--sparse-model {:?}: K must be a number", args.sparse_model)
            })?),
            None if k.is_empty() => None,
            None => bail!(
                "--sparse-model {:?}: expected `neurons` or `neurons:K`",
                args.sparse_model
            ),
        };
        for &hook in hooks {
            let HookPoint::MlpHidden(_) = hook else {
                bail!("neurons are read at `layers.{{i}}.mlp.hidden`, not at {hook}");
            };
            coders.push(SparseCoder::neurons(model.hook_dim(hook)?, k)?.with_hook(hook));
        }
        return Ok(coders);
    }
    for &hook in hooks {
        let name = hook.to_string();
        let mut found = SparseCoder::load(&args.sparse_model, &[name.as_str()], model.device())
            .with_context(|| {
                format!(
                    "loading the sparse coder for {hook} from {:?}",
                    args.sparse_model
                )
            })?;
        if found.len() != 1 {
            let names: Vec<_> = found.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "{:?} holds {} coders for {hook} ({}); point --sparse-model at one",
                args.sparse_model,
                found.len(),
                names.join(", ")
            );
        }
        let (_, coder) = found.remove(0);
        // A transcoder reads the MLP input of the layer it was named after.
        let read_at = coder.hook().unwrap_or(hook);
        coder
            .check_input(Some(read_at), model.hook_dim(read_at)?)
            .with_context(|| {
                format!(
                    "the sparse coder from {:?} does not fit model {:?}",
                    args.sparse_model, args.model
                )
            })?;
        coders.push(coder.with_hook(read_at));
    }
    Ok(coders)
}

/// Caches the latents of `args`; `tok` is needed only for a text dataset (pre-tokenized ids need
/// none, and the cache then records that the model had no tokenizer).
pub fn run_cache(
    args: &CacheArgs,
    model: &Model,
    tok: Option<&Tokenizer>,
) -> Result<Vec<HookStats>> {
    let hooks = parse_hookpoints(&args.hookpoints, model)?;
    let coders = load_coders(args, model, &hooks)?;
    let mut tokens = token_rows(args, tok)?;
    let out = &args.out;
    if let Some(spec) = &args.shard {
        let (i, n) = parse_shard(spec)?;
        let (lo, hi) = (tokens.rows * i / n, tokens.rows * (i + 1) / n);
        anyhow::ensure!(
            hi > lo,
            "--shard {spec}: shard {i} of {n} gets no rows ({} rows in all)",
            tokens.rows
        );
        tokens = Tokens {
            rows: hi - lo,
            ctx_len: tokens.ctx_len,
            ids: tokens.ids[lo * tokens.ctx_len..hi * tokens.ctx_len].to_vec(),
        };
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        ShardInfo {
            index: i as u32,
            count: n as u32,
            row_offset: lo as u64,
            rows: (hi - lo) as u64,
        }
        .write(out)?;
    }
    let read_at: Vec<HookPoint> = coders
        .iter()
        .map(|c| c.hook().unwrap_or(HookPoint::Embed))
        .collect();
    let targets: Vec<Target<'_>> = hooks
        .iter()
        .zip(&coders)
        .map(|(&hook, coder)| Target {
            hook,
            coder: coder as &dyn LatentEncoder,
        })
        .collect();
    let capture = Hooks::new()
        .capture_all(read_at.iter().copied())
        .with_logits(Logits::None);
    let device = model.device();
    let forward = |ids: &Tensor| -> Result<Vec<Tensor>, BoxError> {
        let ids = ids.to_device(device);
        let out = model.forward(&Input::new(&ids), &capture)?;
        read_at
            .iter()
            .map(|h| {
                out.get(*h)
                    .map(Tensor::shallow_clone)
                    .ok_or_else(|| format!("{h} not captured").into())
            })
            .collect()
    };
    let mut extra = BTreeMap::new();
    extra.insert(
        "dataset_repo".to_string(),
        serde_json::Value::from(args.dataset.clone()),
    );
    extra.insert(
        "dataset_column".to_string(),
        serde_json::Value::from(args.dataset_column.clone()),
    );
    for (key, value) in [
        ("dataset_name", &args.dataset_name),
        ("dataset_split", &args.dataset_split),
    ] {
        if let Some(v) = value {
            extra.insert(key.to_string(), serde_json::Value::from(v.clone()));
        }
    }
    // Readers that decode tokens (`explain`, `latents show`) then know to ask for --tokenizer.
    extra.insert(
        "model_has_tokenizer".to_string(),
        serde_json::Value::from(tok.is_some()),
    );
    extra.insert(
        "sparse_model".to_string(),
        serde_json::Value::from(args.sparse_model.clone()),
    );
    let cfg = RunConfig {
        batch_size: NonZeroUsize::new(args.batch_size)
            .context("--batch-size must be at least 1")?,
        n_splits: args.n_splits,
        model_name: args.model.clone(),
        skip_first_token: args.skip_first_token,
        extra,
    };
    let progress = bar((tokens.rows * tokens.ctx_len) as u64, "tokens");
    let mut lines = LogLines::new("cache");
    let ctx = tokens.ctx_len as u64;
    let stats = run(out, &tokens, &targets, forward, &cfg, |p| {
        progress.set_position(p.rows_done as u64 * ctx);
        lines.update(&progress, "tokens");
    })?;
    progress.finish_and_clear();
    let summary = serde_json::to_vec_pretty(&stats).unwrap_or_default();
    autointerp_core::fs::write_atomic(&out.join("latents").join("stats.json"), &summary)?;
    Ok(stats)
}

pub fn print_stats(stats: &[HookStats]) {
    println!(
        "{:<24} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "hook point", "tokens", "alive", ">1%", ">10%", "L0", "tokens/s"
    );
    for s in stats {
        println!(
            "{:<24} {:>10} {:>7.1}% {:>7.1}% {:>7.1}% {:>8.1} {:>10.0}",
            s.hookpoint.to_string(),
            s.n_tokens,
            100.0 * s.alive_fraction,
            100.0 * s.frac_firing_over_1pct,
            100.0 * s.frac_firing_over_10pct,
            s.mean_l0,
            s.n_tokens as f64 / s.seconds.max(1e-9)
        );
    }
}

pub fn run_command(args: CacheArgs) -> Result<()> {
    let (model, tok) = load_model(&args.model, &args.device)?;
    let stats = run_cache(&args, &model, tok.as_ref())?;
    print_stats(&stats);
    eprintln!("cache written to {}", args.out.join("latents").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse() {
        assert_eq!(parse_shard("1/4").unwrap(), (1, 4));
        for bad in ["4/4", "1", "a/b", "0/0"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
