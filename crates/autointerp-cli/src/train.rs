//! `autointerp train-sae`: train a TopK SAE on a model's activations, streamed from a dataset.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use autointerp_cache::tokens::{build_rows, DatasetConfig, RowTokens};
use autointerp_model::{Hooks, Input, Logits, Model, Tokenizer};
use autointerp_sae::train::{TrainConfig, Trainer};
use tch::Tensor;

use crate::common::{
    bar, load_model_with_tokenizer, parse_hookpoints, read_dataset, DeviceArgs, LogLines,
};

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
    /// Tokens held out after the training tokens (same shuffled dataset) to measure the final
    /// SAE's FVU and L0 on data it never saw; 0 to skip.
    #[arg(long, default_value_t = 16_384)]
    pub eval_tokens: usize,
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

/// What a training run reached, written beside the SAE as `train_stats.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    /// Tokens trained on (position 0 of each row, the attention sink, is left out).
    pub tokens: u64,
    /// Wall-clock seconds of the training loop, forward passes included.
    pub seconds: f64,
    /// Mean training FVU over the last tenth of the steps.
    pub train_fvu: f64,
    /// Fraction of latents that fired on none of the last `dead_after_tokens` training tokens.
    pub dead_fraction: f64,
    /// On the held-out tokens (`None` without any): FVU, mean L0, and the fraction of latents
    /// that fired on none of them.
    pub eval: Option<autointerp_sae::Metrics>,
    /// Held-out tokens measured.
    pub eval_tokens: u64,
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
        n_tokens: args.n_tokens + args.eval_tokens,
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
    // The held-out rows are the last ones; a dataset too small for both trains on what is left.
    let n_eval = args.eval_tokens.div_ceil(rows.ctx_len).min(rows.rows / 2);
    let n_train = rows.rows - n_eval;
    let train_cfg = TrainConfig {
        expansion_factor: args.expansion_factor,
        k: args.k,
        lr: args.lr,
        seed: args.seed as i64,
        ..Default::default()
    };
    let mut trainer = Trainer::new(d_in, train_cfg, model.device())?;
    let hooks = Hooks::new().capture(hook).with_logits(Logits::None);
    // Position 0 is an attention sink with a huge norm in most LMs: it would dominate the loss.
    let activations = |range: std::ops::Range<usize>| -> Result<Tensor> {
        let ids: Vec<i64> = rows.ids[range.start * rows.ctx_len..range.end * rows.ctx_len]
            .iter()
            .map(|&t| i64::from(t))
            .collect();
        let ids = Tensor::from_slice(&ids)
            .reshape([range.len() as i64, rows.ctx_len as i64])
            .to_device(model.device());
        let mut out = model.forward(&Input::new(&ids), &hooks)?;
        let acts = out.take(hook).context("forward pass captured nothing")?;
        Ok(acts
            .narrow(1, 1, rows.ctx_len as i64 - 1)
            .reshape([-1, d_in as i64]))
    };

    let progress = bar((n_train * rows.ctx_len) as u64, "tokens");
    let mut lines = LogLines::new("train-sae");
    let batch = args.batch_size.max(1);
    let n_steps = n_train.div_ceil(batch);
    let mut recent_fvu = Vec::new();
    let mut last = None;
    let started = std::time::Instant::now();
    let _guard = tch::no_grad_guard();
    for (step, start) in (0..n_train).step_by(batch).enumerate() {
        let end = (start + batch).min(n_train);
        let x = activations(start..end)?;
        let stats = tch::with_grad(|| trainer.step(&x))?;
        if step >= n_steps - n_steps.div_ceil(10) {
            recent_fvu.push(stats.fvu);
        }
        progress.inc(((end - start) * rows.ctx_len) as u64);
        let msg = format!(
            "FVU {:.3}  dead {:.1}%",
            stats.fvu,
            100.0 * stats.dead_fraction
        );
        lines.update(&progress, &msg);
        progress.set_message(msg);
        last = Some(stats);
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let last = last.context("no training tokens: the dataset is smaller than one row")?;
    let dir = args.out.join(hook.to_string());
    trainer.save(&dir)?;

    let eval = if n_eval > 0 {
        let (_, coder) = autointerp_sae::SparseCoder::load_dir(&dir, &[], model.device())?
            .into_iter()
            .next()
            .with_context(|| format!("reloading the SAE just written to {}", dir.display()))?;
        let x = Tensor::cat(
            &(n_train..rows.rows)
                .step_by(batch)
                .map(|s| activations(s..(s + batch).min(rows.rows)))
                .collect::<Result<Vec<_>>>()?,
            0,
        );
        Some(coder.metrics(&x, None)?)
    } else {
        None
    };
    let summary = TrainSummary {
        tokens: trainer.tokens_seen(),
        seconds,
        train_fvu: recent_fvu.iter().sum::<f64>() / recent_fvu.len().max(1) as f64,
        dead_fraction: last.dead_fraction,
        eval,
        eval_tokens: (n_eval * (rows.ctx_len - 1)) as u64,
    };
    eprintln!(
        "trained on {} tokens in {:.0} s: train FVU {:.3}, dead {:.2}%{}",
        summary.tokens,
        summary.seconds,
        summary.train_fvu,
        100.0 * summary.dead_fraction,
        summary.eval.as_ref().map_or_else(String::new, |m| format!(
            "; held-out ({} tokens) FVU {:.3}, L0 {:.1}",
            summary.eval_tokens, m.fvu, m.mean_l0
        ))
    );
    let path = dir.join("train_stats.json");
    autointerp_core::fs::write_atomic(&path, &serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(dir)
}
