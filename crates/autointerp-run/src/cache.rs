//! The cache stage of a run: the hook points whose cache is missing or unfinished are cached
//! with autointerp-cache before the explain and score stages read them.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;

use autointerp_cache::tokens::DatasetConfig;
use autointerp_cache::{cache_dataset, CacheConfig, DatasetSpec, HookStats};
use autointerp_core::HookPoint;
use autointerp_model::{DType, Model, Tokenizer};

use crate::error::{ensure, Context};
use crate::{Error, Event, Overwrite, Progress, Result, RunConfig};

/// What the cache stage did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Cached {
    /// The model's tokenizer (when it has one), to decode the examples without loading it again.
    pub tokenizer: Option<Tokenizer>,
    /// Per hook point cached.
    pub stats: Vec<HookStats>,
}

/// Caches the hook points of `cfg` whose cache under `root` is missing or unfinished (no
/// `config.json`), or all of them with [`Overwrite::Cache`]. `None` when there was nothing to
/// cache.
///
/// # Errors
/// [`Error::Config`] naming what is missing (hook points, the sparse model, the dataset);
/// the model, coder, dataset and cache errors.
pub fn ensure_cache(
    cfg: &RunConfig,
    root: &Path,
    progress: &dyn Progress,
) -> Result<Option<Cached>> {
    let latents = root.join("latents");
    let hooks = cfg.hooks()?;
    if hooks.is_empty() {
        ensure!(
            latents.is_dir() && !cfg.overwrites(Overwrite::Cache),
            "--hookpoints is required to build the cache (none in {})",
            latents.display()
        );
        return Ok(None);
    }
    let overwrite = cfg.overwrites(Overwrite::Cache);
    let todo: Vec<HookPoint> = (hooks.into_iter())
        .filter(|&h| {
            overwrite
                || !autointerp_cache::hook_dir(root, h)
                    .join("config.json")
                    .is_file()
        })
        .collect();
    if todo.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = todo.iter().map(HookPoint::to_string).collect();
    let names = names.join(", ");
    ensure!(
        !cfg.load_in_8bit,
        "load_in_8bit = true: autointerp does not load models in 8 bit; set it false (and `dtype` \
         to f32, bf16 or f16) to cache {names}"
    );
    ensure!(
        !cfg.sparse_model.is_empty(),
        "SPARSE_MODEL (the second argument, or `sparse_model` in --config) is required to cache {names}"
    );
    let source = cfg
        .dataset
        .clone()
        .with_context(|| format!("--dataset is required to cache {names}"))?;
    // Hours of caching must not end in an explainer that cannot be asked.
    crate::build::preflight(cfg)?;
    if overwrite {
        // The cache itself takes the lock again, once these are gone.
        let _lock = autointerp_core::fs::DirLock::acquire(root)?;
        for &h in &todo {
            let dir = autointerp_cache::hook_dir(root, h);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|source| Error::Io {
                    what: format!("removing {}", dir.display()),
                    source,
                })?;
            }
        }
    }
    let device = autointerp_model::parse_device(&cfg.device)?;
    let dtype: DType = cfg.dtype.parse()?;
    progress.event(Event::Loading(&format!("loading {}", cfg.model)));
    let (model, tok) = Model::load(&cfg.model, device, dtype)
        .with_context(|| format!("loading model {:?}", cfg.model))?;
    for &h in &todo {
        model
            .hook_dim(h)
            .with_context(|| format!("hook point {h}"))?;
    }
    let coders = autointerp_sae::load_coders(
        &cfg.sparse_model,
        &todo,
        |h| model.hook_dim(h),
        model.device(),
    )
    .with_context(|| format!("--sparse-model {:?}", cfg.sparse_model))?;
    let dataset = DatasetSpec {
        source,
        name: cfg.dataset_name.clone(),
        split: cfg.dataset_split.clone(),
        rows: DatasetConfig {
            column: cfg.dataset_column.clone(),
            ctx_len: cfg.ctx_len,
            n_tokens: cfg.n_tokens,
            seed: cfg.seed,
            filter_bos: cfg.filter_bos,
        },
    };
    progress.event(Event::Notice(&format!(
        "caching {names} into {}",
        latents.display()
    )));
    let tokens = dataset
        .token_rows(tok.as_ref())
        .with_context(|| format!("model {:?}", cfg.model))?;
    let cache_cfg = CacheConfig {
        batch_size: NonZeroUsize::new(cfg.batch_size).context("batch_size must be at least 1")?,
        n_splits: cfg.n_splits,
        model_name: cfg.model.clone(),
        skip_first_token: cfg.skip_first_token,
        extra: BTreeMap::new(),
        checkpoint_every: CacheConfig::DEFAULT_CHECKPOINT_EVERY,
        identity: String::new(),
    }
    .with_dataset(&dataset)
    .with_model_has_tokenizer(tok.is_some())
    .with_sparse_model(&cfg.sparse_model);
    let total = tokens.rows * tokens.ctx_len;
    let stats = cache_dataset(root, &model, &coders, &tokens, &cache_cfg, |p| {
        progress.event(Event::Caching {
            tokens_done: p.rows_done * tokens.ctx_len,
            tokens_total: total,
        });
    })?;
    Ok(Some(Cached {
        tokenizer: tok,
        stats,
    }))
}
