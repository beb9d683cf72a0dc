//! The caching loop: token rows → activations at hook points → sparse latents → split files.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use autointerp_core::fs::write_atomic;
use autointerp_core::split::Tokens;
use autointerp_core::HookPoint;
use tch::{Device, Kind, Tensor};

use crate::{Error, Result, SplitSpiller};

/// Any error from a caller-supplied forward pass or encoder.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A sparse coder as the cache sees it.
pub trait LatentEncoder {
    /// Number of latents.
    fn width(&self) -> usize;
    /// Input dimension.
    fn d_in(&self) -> usize;
    /// Encodes `x` `[tokens, d_in]` into indices and values `[tokens, k]` (value 0 = padding).
    fn encode_sparse(&self, x: &Tensor) -> Result<(Tensor, Tensor), BoxError>;
}

impl LatentEncoder for autointerp_sae::SparseCoder {
    fn width(&self) -> usize {
        self.width()
    }
    fn d_in(&self) -> usize {
        self.d_in()
    }
    fn encode_sparse(&self, x: &Tensor) -> Result<(Tensor, Tensor), BoxError> {
        let latents = self.encode(x)?;
        Ok((latents.indices, latents.values))
    }
}

/// One hook point to cache and the coder that encodes it.
pub struct Target<'a> {
    /// Where the activations are read.
    pub hook: HookPoint,
    /// The sparse coder.
    pub coder: &'a dyn LatentEncoder,
}

/// How the caching loop runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheConfig {
    /// Rows per forward pass.
    pub batch_size: NonZeroUsize,
    /// Split files per hook point.
    pub n_splits: u32,
    /// Name recorded as `model_name` in each hook's `config.json` (delphi reads it).
    pub model_name: String,
    /// Record nothing at position 0 of each row: in most LMs it is an attention sink whose huge
    /// activations would dominate every latent's top examples.
    #[serde(default)]
    pub skip_first_token: bool,
    /// Extra fields for each hook's `config.json` (dataset name, column, ...).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl CacheConfig {
    /// Records where the rows came from in each hook's `config.json`, under delphi's keys
    /// (`dataset_repo`, `dataset_column`, and `dataset_name` / `dataset_split` when set).
    #[must_use]
    pub fn with_dataset(mut self, dataset: &crate::DatasetSpec) -> Self {
        self.extra
            .insert("dataset_repo".into(), dataset.source.clone().into());
        self.extra
            .insert("dataset_column".into(), dataset.rows.column.clone().into());
        for (key, value) in [
            ("dataset_name", &dataset.name),
            ("dataset_split", &dataset.split),
        ] {
            if let Some(v) = value {
                self.extra.insert(key.into(), v.clone().into());
            }
        }
        self
    }

    /// Records the sparse-coder source (`sparse_model`).
    #[must_use]
    pub fn with_sparse_model(mut self, source: &str) -> Self {
        self.extra.insert("sparse_model".into(), source.into());
        self
    }

    /// Records whether the model came with a tokenizer (`model_has_tokenizer`): readers that
    /// decode tokens (`explain`, `latents show`) then know to ask for one when it did not.
    #[must_use]
    pub fn with_model_has_tokenizer(mut self, has: bool) -> Self {
        self.extra.insert("model_has_tokenizer".into(), has.into());
        self
    }
}

/// Progress of a run, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Rows done so far (including rows resumed from a checkpoint).
    pub rows_done: usize,
    /// Rows in the run.
    pub rows_total: usize,
    /// Rows done by this process (excludes resumed rows), for rates.
    pub rows_this_run: usize,
}

/// Firing statistics of one hook point's coder over the cached tokens.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HookStats {
    /// The hook point.
    pub hookpoint: HookPoint,
    /// Tokens cached.
    pub n_tokens: u64,
    /// Latents of the coder.
    pub width: usize,
    /// Fraction of latents that fired at least once.
    pub alive_fraction: f64,
    /// Fraction of latents firing on more than 1% of tokens.
    pub frac_firing_over_1pct: f64,
    /// Fraction of latents firing on more than 10% of tokens.
    pub frac_firing_over_10pct: f64,
    /// Mean number of latents firing per token.
    pub mean_l0: f64,
    /// Seconds spent in this process.
    pub seconds: f64,
}

/// The run checkpoint: all hooks' spill lengths at one row boundary, written atomically, so every
/// hook resumes from the same row.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    fingerprint: String,
    rows_done: usize,
    lengths: BTreeMap<String, Vec<u64>>,
}

/// FNV-1a, 64 bit: a stable hash (std's `DefaultHasher` may change between Rust releases, and a
/// checkpoint must outlive a toolchain update).
fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn fingerprint(tokens: &Tokens, targets: &[Target<'_>], cfg: &CacheConfig) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325;
    h = fnv1a(tokens.ids.iter().flat_map(|t| t.to_le_bytes()), h);
    let desc = format!(
        "{}x{} {} {} {} {:?}",
        tokens.rows,
        tokens.ctx_len,
        cfg.model_name,
        cfg.n_splits,
        cfg.skip_first_token,
        targets
            .iter()
            .map(|t| (t.hook.to_string(), t.coder.width(), t.coder.d_in()))
            .collect::<Vec<_>>()
    );
    format!("{:016x}", fnv1a(desc.into_bytes(), h))
}

/// Rows `rows` of `tokens` as an int64 tensor `[rows, ctx_len]` on the CPU.
pub(crate) fn row_ids(tokens: &Tokens, rows: std::ops::Range<usize>) -> Tensor {
    let ids: Vec<i64> = tokens.ids[rows.start * tokens.ctx_len..rows.end * tokens.ctx_len]
        .iter()
        .map(|&t| i64::from(t))
        .collect();
    Tensor::from_slice(&ids).reshape([rows.len() as i64, tokens.ctx_len as i64])
}

/// The folder of one hook point's cache under `out`: `<out>/latents/<hookpoint>`.
pub fn hook_dir(out: &Path, hook: HookPoint) -> PathBuf {
    out.join("latents").join(hook.to_string())
}

/// Caches the latents of every target over `tokens` into `<out>/latents/<hookpoint>/`.
///
/// `forward` receives a batch of rows `[batch, ctx_len]` (int64, CPU) and returns one activation
/// tensor `[batch, ctx_len, d_in]` per target, in the targets' order. After each batch, all spills
/// are made durable and one checkpoint is written; rerunning the same call after a crash (even
/// `kill -9`) continues from the last checkpoint and writes the same files. A hook's
/// `config.json` is written last, so a folder without it is an unfinished cache.
pub fn run(
    out: &Path,
    tokens: &Tokens,
    targets: &[Target<'_>],
    mut forward: impl FnMut(&Tensor) -> Result<Vec<Tensor>, BoxError>,
    cfg: &CacheConfig,
    mut on_progress: impl FnMut(Progress),
) -> Result<Vec<HookStats>> {
    if tokens.rows == 0 || tokens.ctx_len == 0 {
        return Err(Error::InvalidRun(format!(
            "no tokens to cache: {} rows of {} tokens",
            tokens.rows, tokens.ctx_len
        )));
    }
    for t in targets {
        let width = t.coder.width();
        if width == 0 {
            return Err(Error::InvalidRun(format!(
                "the sparse coder at {} has no latents",
                t.hook
            )));
        }
        // More splits than latents would name files `a_(a-1)` and write `0_0` twice.
        if cfg.n_splits == 0 || cfg.n_splits as usize > width {
            return Err(Error::InvalidRun(format!(
                "n_splits {} must be between 1 and the width of the sparse coder at {} ({width})",
                cfg.n_splits, t.hook
            )));
        }
    }
    let started = Instant::now();
    let fp = fingerprint(tokens, targets, cfg);
    let ckpt_path = out.join("latents").join(".checkpoint.json");
    let resumed: Option<Checkpoint> = std::fs::read(&ckpt_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &Checkpoint| c.fingerprint == fp);

    let mut spillers = Vec::with_capacity(targets.len());
    for t in targets {
        let dir = hook_dir(out, t.hook);
        let width = u32::try_from(t.coder.width()).map_err(|_| Error::LatentOutOfRange {
            latent: u32::MAX,
            width: u32::MAX,
        })?;
        // A finished cache from an earlier run is replaced only once this run finishes.
        let spiller = match resumed
            .as_ref()
            .and_then(|c| c.lengths.get(&t.hook.to_string()))
        {
            Some(lengths) => SplitSpiller::resume_at(&dir, width, cfg.n_splits, &fp, lengths)?,
            None => SplitSpiller::create(&dir, width, cfg.n_splits, &fp)?,
        };
        spillers.push(spiller);
    }
    let start_row = resumed.as_ref().map_or(0, |c| c.rows_done.min(tokens.rows));
    if start_row > 0 {
        tracing::info!(rows = start_row, "resuming from checkpoint");
    }

    let _guard = tch::no_grad_guard();
    let batch = cfg.batch_size.get();
    let mut row = start_row;
    let mut pairs: Vec<(u32, f32)> = Vec::new();
    while row < tokens.rows {
        let end = (row + batch).min(tokens.rows);
        let acts =
            forward(&row_ids(tokens, row..end)).map_err(|e| Error::Forward(e.to_string()))?;
        if acts.len() != targets.len() {
            return Err(Error::Forward(format!(
                "forward returned {} tensors for {} hook points",
                acts.len(),
                targets.len()
            )));
        }
        for ((t, spiller), x) in targets.iter().zip(&mut spillers).zip(&acts) {
            let d = t.coder.d_in() as i64;
            let want = [(end - row) as i64, tokens.ctx_len as i64, d];
            if x.size() != want {
                return Err(Error::Forward(format!(
                    "hook point {} gave activations of shape {:?}, but the sparse coder expects {:?} (d_in {d})",
                    t.hook,
                    x.size(),
                    want
                )));
            }
            let (idx, val) = t
                .coder
                .encode_sparse(&x.reshape([-1, d]))
                .map_err(|e| Error::Forward(e.to_string()))?;
            let k = idx.size().get(1).copied().unwrap_or(0) as usize;
            let idx = Vec::<i64>::try_from(idx.to_device(Device::Cpu).reshape([-1]))
                .map_err(|e| Error::Forward(e.to_string()))?;
            let val = Vec::<f32>::try_from(
                val.to_device(Device::Cpu)
                    .to_kind(Kind::Float)
                    .reshape([-1]),
            )
            .map_err(|e| Error::Forward(e.to_string()))?;
            for (token, (i, v)) in idx.chunks(k.max(1)).zip(val.chunks(k.max(1))).enumerate() {
                if cfg.skip_first_token && token % tokens.ctx_len == 0 {
                    continue;
                }
                pairs.clear();
                pairs.extend(i.iter().zip(v).map(|(&i, &v)| (i as u32, v)));
                let r = row + token / tokens.ctx_len;
                spiller.push_token(r as u32, (token % tokens.ctx_len) as u32, &pairs)?;
            }
        }
        row = end;
        let mut lengths = BTreeMap::new();
        for (t, spiller) in targets.iter().zip(&mut spillers) {
            lengths.insert(t.hook.to_string(), spiller.sync()?);
        }
        let ckpt = Checkpoint {
            fingerprint: fp.clone(),
            rows_done: row,
            lengths,
        };
        write_atomic(&ckpt_path, &serde_json::to_vec(&ckpt).unwrap_or_default())?;
        on_progress(Progress {
            rows_done: row,
            rows_total: tokens.rows,
            rows_this_run: row - start_row,
        });
    }

    let n_tokens = (tokens.rows * tokens.ctx_len) as u64;
    let mut all_stats = Vec::with_capacity(targets.len());
    for (t, spiller) in targets.iter().zip(spillers) {
        let dir = hook_dir(out, t.hook);
        let done = spiller.finish(Some(tokens))?;
        let frac = |pred: &dyn Fn(u64) -> bool| {
            done.counts.iter().filter(|&&c| pred(c)).count() as f64
                / done.counts.len().max(1) as f64
        };
        let stats = HookStats {
            hookpoint: t.hook,
            n_tokens,
            width: done.counts.len(),
            alive_fraction: frac(&|c| c > 0),
            frac_firing_over_1pct: frac(&|c| c as f64 > 0.01 * n_tokens as f64),
            frac_firing_over_10pct: frac(&|c| c as f64 > 0.10 * n_tokens as f64),
            mean_l0: done.counts.iter().sum::<u64>() as f64 / n_tokens.max(1) as f64,
            seconds: started.elapsed().as_secs_f64(),
        };
        write_counts(&dir, n_tokens, &done.counts)?;
        write_atomic(
            &dir.join("stats.json"),
            &serde_json::to_vec_pretty(&stats).unwrap_or_default(),
        )?;
        let mut config = serde_json::Map::new();
        for (k, v) in &cfg.extra {
            config.insert(k.clone(), v.clone());
        }
        config.insert("cache_ctx_len".into(), tokens.ctx_len.into());
        config.insert("n_tokens".into(), n_tokens.into());
        config.insert("batch_size".into(), batch.into());
        config.insert("n_splits".into(), cfg.n_splits.into());
        config.insert("model_name".into(), cfg.model_name.clone().into());
        config.insert("skip_first_token".into(), cfg.skip_first_token.into());
        write_atomic(
            &dir.join("config.json"),
            &serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )?;
        all_stats.push(stats);
    }
    std::fs::remove_file(&ckpt_path).map_err(|source| Error::Io {
        path: ckpt_path,
        source,
    })?;
    Ok(all_stats)
}

/// Per-latent firing counts as `firing_counts.json` (`{"n_tokens": N, "counts": [...]}`).
///
/// Not a `.safetensors` file: delphi's `LatentDataset` takes every `*.safetensors` in a hook
/// folder for a split named `<start>_<end>` and fails on any other name.
fn write_counts(dir: &Path, n_tokens: u64, counts: &[u64]) -> Result<()> {
    let body = serde_json::json!({ "n_tokens": n_tokens, "counts": counts });
    write_atomic(&dir.join("firing_counts.json"), body.to_string().as_bytes())?;
    Ok(())
}
