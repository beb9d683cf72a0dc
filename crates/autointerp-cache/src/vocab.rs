//! The output side of each latent: its decoder direction read through the model's final norm
//! and unembedding (the logit lens of a direction), reduced to the top promoted and suppressed
//! tokens, and written beside the split files as `vocab_projection.json`.

use std::path::Path;

use autointerp_core::{HookPoint, LatentTokens, VocabProjection};
use autointerp_model::Model;
use autointerp_sae::SparseCoder;
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Tokens kept on each side per latent by [`crate::cache_dataset`].
pub const DEFAULT_VOCAB_K: usize = 10;

/// Logits computed at once: latents per chunk × vocabulary, 32 Mi values (128 MiB in `f32`).
const CHUNK_VALUES: usize = 1 << 25;

/// What [`VocabProjection::method`] says of the projection computed here.
const METHOD: &str = "logit lens of each decoder row d: W_U (g * d), g the final norm's gain \
                      (Gemma: 1 + w), d mean-centred first under LayerNorm; no division by an \
                      activation's scale and no final softcap (both depend on the context)";

/// The top-`k` promoted and suppressed tokens of every latent of `coder`: its decoder rows
/// through `model`'s final norm and unembedding ([`Model::direction_logits`]), a chunk of
/// latents per matrix product, on the model's device.
///
/// A transcoder's decoder writes to its output hook, whatever hook it reads; every coder whose
/// decoder writes `d_model`-sized vectors is projected. Deltas are per unit of latent
/// activation, up to the positive factor of the final norm's scale in each context.
///
/// # Errors
/// [`Error::InvalidRun`] for a coder without decoder rows (MLP neurons, encoder-only
/// checkpoints) or whose rows are not `d_model`-sized (a coder of `mlp.hidden`), or `k = 0`;
/// [`Error::Model`] when libtorch fails.
pub fn vocab_projection(model: &Model, coder: &SparseCoder, k: usize) -> Result<VocabProjection> {
    let w_dec = coder.decoder_weight().ok_or_else(|| {
        Error::InvalidRun("the sparse coder has no decoder rows to project".into())
    })?;
    if coder.d_out() != model.d_model() {
        return Err(Error::InvalidRun(format!(
            "the sparse coder's decoder writes {}-dimensional vectors, not the model's \
             d_model {}",
            coder.d_out(),
            model.d_model()
        )));
    }
    if k == 0 {
        return Err(Error::InvalidRun("k = 0 tokens per side".into()));
    }
    let _guard = tch::no_grad_guard();
    let vocab = model.vocab_size();
    let k = k.min(vocab);
    let width = coder.width();
    let chunk = (CHUNK_VALUES / vocab.max(1)).clamp(1, width.max(1));
    let mut latents = Vec::with_capacity(width);
    let mut start = 0;
    while start < width {
        let n = chunk.min(width - start);
        let torch = |e: tch::TchError| Error::Model(e.into());
        let rows = w_dec.f_narrow(0, start as i64, n as i64).map_err(torch)?;
        let logits = model.direction_logits(&rows)?; // [n, vocab]
        let promoted = top(&logits, k, true).map_err(torch)?;
        let suppressed = top(&logits, k, false).map_err(torch)?;
        latents.extend(
            promoted
                .into_iter()
                .zip(suppressed)
                .map(|(promoted, suppressed)| LatentTokens {
                    promoted,
                    suppressed,
                }),
        );
        start += n;
    }
    Ok(VocabProjection {
        method: METHOD.into(),
        vocab_size: vocab,
        k,
        latents,
    })
}

/// The `k` largest (or smallest) values of each row with their columns, in order.
///
/// # Shapes
/// `logits`: `[n, vocab]` → `n` lists of `k`.
fn top(logits: &Tensor, k: usize, largest: bool) -> Result<Vec<Vec<(u32, f32)>>, tch::TchError> {
    let (values, indices) = logits.f_topk(k as i64, -1, largest, true)?;
    let values = values
        .f_to_kind(Kind::Float)?
        .f_to_device(tch::Device::Cpu)?;
    let indices = indices.f_to_device(tch::Device::Cpu)?;
    let n = values.size()[0] as usize;
    let values: Vec<f32> = Vec::<f32>::try_from(values.f_reshape([-1])?)?;
    let indices: Vec<i64> = Vec::<i64>::try_from(indices.f_reshape([-1])?)?;
    Ok((0..n)
        .map(|r| {
            (r * k..(r + 1) * k)
                .map(|i| (indices[i] as u32, values[i]))
                .collect()
        })
        .collect())
}

/// Computes and writes the projection of each coder to its hook point's folder; a coder that
/// cannot be projected, or a projection that fails, is skipped with a log line: the cache
/// stands without it.
pub(crate) fn write_projections(out: &Path, model: &Model, coders: &[(HookPoint, SparseCoder)]) {
    for (hook, coder) in coders {
        if coder.decoder_weight().is_none() {
            tracing::info!(%hook, "no vocabulary projection: the sparse coder has no decoder rows");
            continue;
        }
        let started = std::time::Instant::now();
        let written = vocab_projection(model, coder, DEFAULT_VOCAB_K)
            .and_then(|p| Ok(p.write_to_dir(&crate::hook_dir(out, *hook))?));
        match written {
            Ok(()) => tracing::info!(
                %hook,
                latents = coder.width(),
                seconds = started.elapsed().as_secs_f64(),
                "vocabulary projection written"
            ),
            Err(e) => tracing::warn!(%hook, error = %e, "no vocabulary projection"),
        }
    }
}
