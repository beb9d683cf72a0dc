//! `autointerp train-sae`: train a TopK SAE on a model's activations, streamed from a dataset.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use autointerp_cache::tokens::{build_rows, DatasetConfig, RowTokens};
use autointerp_model::{Hooks, Input, Logits, Model, Tokenizer};
use autointerp_sae::train::{TrainConfig, Trainer};
use tch::Tensor;

use crate::common::{bar, load_model_with_tokenizer, parse_hookpoints, read_dataset, DeviceArgs};

/// `autointerp train-sae`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// HF model folder, `.gguf` file, or Hub id.
    #[arg(long)]
    pub model: String,
    /// The hook point whose activations the SAE reconstructs.
    #[arg(long)]
    pub hookpoint: String,
    /// A .txt/.jsonl/.parquet file or a folder of them.
    #[arg(long)]
    pub dataset: String,
    /// Column or key holding the text.
    #[arg(long, default_value = "text")]
    pub dataset_column: String,
    /// Tokens to train on.
    #[arg(long, default_value_t = 1_000_000)]
    pub n_tokens: usize,
    /// Width = expansion factor × d_model.
    #[arg(long, default_value_t = 8)]
    pub expansion_factor: usize,
    /// Latents kept per token.
    #[arg(long, default_value_t = 32)]
    pub k: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 256)]
    pub ctx_len: usize,
    /// Rows per forward pass (one optimiser step per batch).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Learning rate (default: 2e-4 / sqrt(width / 2^14)).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of the data order and the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Output folder: the SAE is written in sparsify's layout under `<out>/<hookpoint>/`.
    #[arg(long)]
    pub out: PathBuf,
}

/// Whether the tokenizer starts sequences with BOS (then every row should too).
pub fn row_tokens(tok: &Tokenizer) -> RowTokens {
    let adds_bos = tok.bos_id().is_some_and(|b| {
        tok.encode("a", true)
            .ok()
            .and_then(|ids| ids.first().copied())
            == Some(b)
    });
    RowTokens {
        bos: if adds_bos { tok.bos_id() } else { None },
        eos: tok.eos_id(),
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (model, tok) = load_model_with_tokenizer(&args.model, &args.device)?;
    let dir = train(&args, &model, &tok)?;
    eprintln!("wrote {}", dir.display());
    Ok(())
}

/// Trains and writes the SAE; returns its folder.
pub fn train(args: &TrainArgs, model: &Model, tok: &Tokenizer) -> Result<PathBuf> {
    let hook = *parse_hookpoints(&args.hookpoint, model)?
        .first()
        .context("--hookpoint is empty")?;
    let d_in = model.hook_dim(hook)?;
    let docs = read_dataset(&args.dataset, &args.dataset_column)?;
    let cfg = DatasetConfig {
        column: args.dataset_column.clone(),
        ctx_len: args.ctx_len,
        n_tokens: args.n_tokens,
        seed: args.seed,
        filter_bos: false,
    };
    let rows = build_rows(
        docs,
        tok.inner(),
        row_tokens(tok),
        &cfg,
        Path::new(&args.dataset),
    )?;
    let train_cfg = TrainConfig {
        expansion_factor: args.expansion_factor,
        k: args.k,
        lr: args.lr,
        seed: args.seed as i64,
        ..Default::default()
    };
    let mut trainer = Trainer::new(d_in, train_cfg, model.device())?;
    let hooks = Hooks::new().capture(hook).with_logits(Logits::None);
    let progress = bar((rows.rows * rows.ctx_len) as u64, "tokens");
    let batch = args.batch_size.max(1);
    let _guard = tch::no_grad_guard();
    for start in (0..rows.rows).step_by(batch) {
        let end = (start + batch).min(rows.rows);
        let ids: Vec<i64> = rows.ids[start * rows.ctx_len..end * rows.ctx_len]
            .iter()
            .map(|&t| i64::from(t))
            .collect();
        let ids = Tensor::from_slice(&ids)
            .reshape([(end - start) as i64, rows.ctx_len as i64])
            .to_device(model.device());
        let mut out = model.forward(&Input::new(&ids), &hooks)?;
        let acts = out.take(hook).context("forward pass captured nothing")?;
        // Position 0 is an attention sink with a huge norm in most LMs: it would dominate the loss.
        let x = acts
            .narrow(1, 1, rows.ctx_len as i64 - 1)
            .reshape([-1, d_in as i64]);
        let stats = tch::with_grad(|| trainer.step(&x))?;
        progress.inc(((end - start) * rows.ctx_len) as u64);
        progress.set_message(format!(
            "FVU {:.3}  dead {:.1}%",
            stats.fvu,
            100.0 * stats.dead_fraction
        ));
    }
    progress.finish();
    let dir = args.out.join(hook.to_string());
    trainer.save(&dir)?;
    Ok(dir)
}
