//! `autointerp train-sae`: train a TopK SAE on a model's activations, streamed from a dataset.

use std::path::PathBuf;

use anyhow::{Context, Result};
use autointerp_cache::tokens::DatasetConfig;
use autointerp_cache::{train_sae, DatasetSpec, SaeTraining};
use autointerp_model::{Model, Tokenizer};
use autointerp_run::overrides::number;
use autointerp_sae::train::TrainConfig;

use crate::cache::dataset_rows;
use crate::common::{bar, load_model_with_tokenizer, log_tenth, parse_hookpoints, DeviceArgs};
use autointerp_run::TenthLines;

/// `autointerp train-sae`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// HF model folder, `.gguf` file, or Hub id.
    #[arg(long)]
    pub model: String,
    /// The hook point whose activations the SAE reconstructs.
    #[arg(long, visible_alias = "hookpoints")]
    pub hookpoint: String,
    /// A .txt/.jsonl/.parquet file or a folder of them.
    #[arg(long)]
    pub dataset: String,
    /// Column or key holding the text.
    #[arg(long, default_value = "text")]
    pub dataset_column: String,
    /// Tokens to train on.
    #[arg(long, default_value_t = 1_000_000, value_parser = number::<usize>)]
    pub n_tokens: usize,
    /// Width = expansion factor × d_model.
    #[arg(long, default_value_t = 8, value_parser = number::<usize>)]
    pub expansion_factor: usize,
    /// Latents kept per token.
    #[arg(long, default_value_t = 32, value_parser = number::<usize>)]
    pub k: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 256, value_parser = number::<usize>)]
    pub ctx_len: usize,
    /// Rows per forward pass (one optimiser step per batch).
    #[arg(long, default_value_t = 8, value_parser = number::<usize>)]
    pub batch_size: usize,
    /// Learning rate (default: 2e-4 / sqrt(width / 2^14)).
    #[arg(long, value_parser = number::<f64>)]
    pub lr: Option<f64>,
    /// Seed of the data order and the initialisation.
    #[arg(long, default_value_t = 0, value_parser = number::<u64>)]
    pub seed: u64,
    /// Tokens held out after the training tokens (same shuffled dataset) to measure the final
    /// SAE's FVU and L0 on data it never saw; 0 to skip.
    #[arg(long, default_value_t = 16_384, value_parser = number::<usize>)]
    pub eval_tokens: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Output folder: the SAE is written in sparsify's layout under `<out>/<hookpoint>/`.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (model, tok) = load_model_with_tokenizer(&args.model, &args.device)?;
    let dir = train(&args, &model, &tok)?;
    eprintln!("wrote {}", dir.display());
    Ok(())
}

/// Trains and writes the SAE; returns its folder.
pub fn train(args: &TrainArgs, model: &Model, tok: &Tokenizer) -> Result<PathBuf> {
    let hook = *parse_hookpoints(std::slice::from_ref(&args.hookpoint), model)?
        .first()
        .context("--hookpoint is empty")?;
    let dataset = DatasetSpec {
        source: args.dataset.clone(),
        name: None,
        split: None,
        rows: DatasetConfig {
            column: args.dataset_column.clone(),
            ctx_len: args.ctx_len,
            n_tokens: args.n_tokens + args.eval_tokens,
            seed: args.seed,
            filter_bos: false,
        },
    };
    let rows = dataset_rows(&dataset, &args.model, Some(tok))?;
    let cfg = SaeTraining {
        trainer: TrainConfig {
            expansion_factor: args.expansion_factor,
            k: args.k,
            lr: args.lr,
            seed: args.seed as i64,
            ..Default::default()
        },
        batch_rows: args.batch_size,
        eval_tokens: args.eval_tokens,
    };
    let progress = bar(0, "tokens");
    let mut lines = TenthLines::new("train-sae");
    let ctx = rows.ctx_len as u64;
    let (dir, summary) = train_sae(model, hook, &rows, &cfg, &args.out, |p| {
        progress.set_length(p.rows_total as u64 * ctx);
        progress.set_position(p.rows_done as u64 * ctx);
        let msg = format!(
            "FVU {:.3}  dead {:.1}%",
            p.stats.fvu,
            100.0 * p.stats.dead_fraction
        );
        log_tenth(&mut lines, &progress, &msg);
        progress.set_message(msg);
    })?;
    progress.finish();
    eprintln!("{summary}");
    Ok(dir)
}
