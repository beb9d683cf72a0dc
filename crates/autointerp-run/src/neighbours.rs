//! The neighbour lists of `non_activating_source = "neighbours"`, found the way the config's
//! `neighbours_type` says: co-occurrence from the cache, or the cosine similarity of the sparse
//! coders' decoder or encoder directions. They are computed for the latents a run covers, on
//! every run (delphi writes them to `neighbours/`; a run here needs no file to resume).

use std::collections::{BTreeMap, HashMap};

use autointerp_core::HookPoint;
use autointerp_latents::{HookCache, LatentCache, LatentWeights, NeighbourLists};
use autointerp_sae::SparseCoder;

use crate::config::{NeighboursType, RunConfig};
use crate::error::{bail, Context};
use crate::{Event, Progress, Result};

/// Neighbours kept per latent, as delphi's `NeighbourCalculator(number_of_neighbours=250)`.
pub(crate) const NEIGHBOURS_PER_LATENT: usize = 250;

/// The neighbour lists of `latents` (by hook point), by `cfg.neighbours_type`.
///
/// # Errors
/// A similarity type without sparse coders to read (`sparse_model` unset and not in the
/// cache's `config.json`), coders that do not load, have no such weights (MLP neurons, a
/// checkpoint without a decoder) or are not as wide as the cache; a cache that cannot be read.
pub(crate) fn neighbour_lists(
    cfg: &RunConfig,
    cache: &LatentCache,
    latents: &BTreeMap<HookPoint, Vec<u32>>,
    progress: &dyn Progress,
) -> Result<HashMap<HookPoint, NeighbourLists>> {
    let kind = cfg.neighbours_type;
    let mut out = HashMap::new();
    for (&hook, ls) in latents {
        let hc = cache.hook(hook)?;
        progress.event(Event::Loading(&format!(
            "finding the {} neighbours of {} latents of {hook}",
            kind.name(),
            ls.len()
        )));
        let lists = match kind {
            NeighboursType::CoOccurrence => {
                NeighbourLists::co_occurrence(hc, Some(ls), NEIGHBOURS_PER_LATENT)?
            }
            NeighboursType::DecoderSimilarity | NeighboursType::EncoderSimilarity => {
                let coder = coder_of(cfg, hc)?;
                let rows = if kind == NeighboursType::DecoderSimilarity {
                    coder.decoder_rows()
                } else {
                    coder.encoder_rows()
                }
                .with_context(|| format!("--neighbours-type {}: {hook}", kind.name()))?;
                let dim = rows.len() / coder.width().max(1);
                let weights = LatentWeights { rows: &rows, dim };
                NeighbourLists::cosine(&weights, Some(ls), NEIGHBOURS_PER_LATENT)?
            }
        };
        out.insert(hook, lists);
    }
    Ok(out)
}

/// The sparse coder of a cached hook point: from `sparse_model`, else from the source the
/// cache's `config.json` names; it must be as wide as the cache.
fn coder_of(cfg: &RunConfig, hc: &HookCache) -> Result<SparseCoder> {
    let kind = cfg.neighbours_type.name();
    let recorded = hc
        .config()
        .and_then(|c| c.get("sparse_model"))
        .and_then(|s| s.as_str());
    let source = match (cfg.sparse_model.as_str(), recorded) {
        ("", Some(s)) => s,
        ("", None) => bail!(
            "--neighbours-type {kind} reads the sparse coders' weights: name them (SPARSE_MODEL, \
             --sparse-model or `sparse_model` in --config); the cache of {} does not",
            hc.name()
        ),
        (s, _) => s,
    };
    if source.starts_with("neurons") {
        bail!(
            "--neighbours-type {kind} compares the sparse coders' weights, and MLP neurons \
             ({source}) have none: use --neighbours-type co-occurrence"
        );
    }
    let name = hc.name();
    let mut found = SparseCoder::load(source, &[name], tch::Device::Cpu).with_context(|| {
        format!("--neighbours-type {kind}: the sparse coder of {name} in {source:?}")
    })?;
    let Some((_, coder)) = found.pop().filter(|_| found.is_empty()) else {
        bail!("--neighbours-type {kind}: {source:?} holds no single sparse coder for {name}");
    };
    if coder.width() != hc.width() as usize {
        bail!(
            "--neighbours-type {kind}: the sparse coder of {name} in {source:?} has {} latents, \
             the cache {}",
            coder.width(),
            hc.width()
        );
    }
    Ok(coder)
}
