//! The caching loop and the SAE training loop driven by an `autointerp-model` [`Model`].

use std::path::{Path, PathBuf};

use autointerp_core::split::Tokens;
use autointerp_core::HookPoint;
use autointerp_model::{Hooks, Input, Logits, Model};
use autointerp_sae::train::{fit, FitProgress, FitRows, TrainConfig, TrainSummary, Trainer};
use autointerp_sae::SparseCoder;
use tch::Tensor;

use autointerp_core::fs::DirLock;

use crate::run::{check_inputs, row_ids, run_locked};
use crate::{
    source_identity, BoxError, CacheConfig, HookStats, LatentEncoder, Progress, Result, Target,
};

/// Caches the latents of `coders` over `tokens` into `<out>/latents/` as [`crate::run`] does,
/// with `model` as the forward pass, then writes each coder's vocabulary projection (the top
/// [`crate::DEFAULT_VOCAB_K`] tokens its latents promote and suppress, see
/// [`crate::vocab_projection`]) to `<out>/latents/<hookpoint>/vocab_projection.json`, and every
/// hook point's stats to `<out>/latents/stats.json`. A coder that cannot be projected (MLP
/// neurons, a decoder that does not write d_model-sized vectors) is skipped with a log line.
///
/// The checkpoint's fingerprint covers the model: its files when `cfg.model_name` is the source
/// it was loaded from (see [`source_identity`]), its config and dtype, and each coder's settings.
/// The coders' weights come in through [`CacheConfig::with_sparse_model`].
///
/// Each coder comes with the hook point it is cached under and reads the activations at its own
/// [`SparseCoder::hook`] (a transcoder's differs), as [`autointerp_sae::load_coders`] returns
/// them; a coder without a hook reads the embeddings.
///
/// # Errors
/// The errors of [`crate::run`], and writing `stats.json`.
pub fn cache_dataset(
    out: &Path,
    model: &Model,
    coders: &[(HookPoint, SparseCoder)],
    tokens: &Tokens,
    cfg: &CacheConfig,
    on_progress: impl FnMut(Progress),
) -> Result<Vec<HookStats>> {
    let read_at: Vec<HookPoint> = coders
        .iter()
        .map(|(_, c)| c.hook().unwrap_or(HookPoint::Embed))
        .collect();
    let targets: Vec<Target<'_>> = coders
        .iter()
        .map(|(hook, coder)| Target {
            hook: *hook,
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
    let mut cfg = cfg.clone().with_identity(&format!(
        "model {} {:?} {:?}",
        source_identity(&cfg.model_name),
        model.kind(),
        model.config()
    ));
    for (hook, c) in coders {
        cfg = cfg.with_identity(&format!(
            "coder {hook}: {} {}x{}->{} k {:?} {:?} {:?} b_dec {} reads {:?} transcoder {}",
            c.format(),
            c.d_in(),
            c.width(),
            c.d_out(),
            c.k(),
            c.activation().map(|a| a.name()),
            c.input_norm(),
            c.applies_b_dec_to_input(),
            c.hook(),
            c.is_transcoder()
        ));
    }
    check_inputs(tokens, &targets, &cfg)?;
    // Held until `stats.json` is written too.
    let _lock = DirLock::acquire(out)?;
    let stats = run_locked(out, tokens, &targets, forward, &cfg, on_progress)?;
    crate::vocab::write_projections(out, model, coders);
    let summary = serde_json::to_vec_pretty(&stats).unwrap_or_default();
    autointerp_core::fs::write_atomic(&out.join("latents").join("stats.json"), &summary)?;
    Ok(stats)
}

/// Settings of [`train_sae`].
#[derive(Debug, Clone, PartialEq)]
pub struct SaeTraining {
    /// The trainer's settings.
    pub trainer: TrainConfig,
    /// Rows per step.
    pub batch_rows: usize,
    /// Tokens held out at the end of the rows to measure the trained SAE on; 0 for none.
    pub eval_tokens: usize,
}

/// Trains a TopK SAE on `model`'s activations at `hook` over `tokens` and writes it in
/// sparsify's layout to `<out>/<hook>/` (see [`autointerp_sae::train::fit`]); returns that
/// folder and what the run reached.
///
/// The loop itself is `autointerp-sae`'s, which takes any source of activations; this crate
/// supplies the one that runs the model over token rows, the plumbing it already has for
/// caching. Position 0 of each row is left out: it is an attention sink with a huge norm in
/// most LMs, and would dominate the loss.
///
/// # Errors
/// [`crate::Error::Model`] for a hook point the model lacks or a failed forward pass, and the
/// trainer's errors as [`crate::Error::Sae`].
pub fn train_sae(
    model: &Model,
    hook: HookPoint,
    tokens: &Tokens,
    cfg: &SaeTraining,
    out: &Path,
    on_step: impl FnMut(FitProgress),
) -> Result<(PathBuf, TrainSummary)> {
    let d_in = model.hook_dim(hook)?;
    let mut trainer = Trainer::new(d_in, cfg.trainer.clone(), model.device())?;
    let capture = Hooks::new().capture(hook).with_logits(Logits::None);
    let ctx_len = tokens.ctx_len as i64;
    let activations = |rows: std::ops::Range<usize>| -> Result<Tensor, BoxError> {
        let ids = row_ids(tokens, rows).to_device(model.device());
        let mut out = model.forward(&Input::new(&ids), &capture)?;
        let acts = out.take(hook).ok_or("forward pass captured nothing")?;
        Ok(acts.narrow(1, 1, ctx_len - 1).reshape([-1, d_in as i64]))
    };
    let shape = FitRows {
        rows: tokens.rows,
        eval_rows: cfg.eval_tokens.div_ceil(tokens.ctx_len),
        batch_rows: cfg.batch_rows,
    };
    let dir = out.join(hook.to_string());
    let summary = fit(&mut trainer, shape, activations, &dir, on_step)?;
    Ok((dir, summary))
}
