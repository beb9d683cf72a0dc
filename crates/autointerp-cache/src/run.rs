//! The caching loop: token rows → activations at hook points → sparse latents → split files.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autointerp_core::fs::{remove_temp_files, write_atomic, DirLock};
use autointerp_core::split::{Tokens, CHECKPOINT_FILE};
use autointerp_core::HookPoint;
use tch::{Device, Kind, Tensor};

use crate::identity::{fnv1a, source_identity, FNV_START};
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
    /// How often the spills are made durable (fsync) and the checkpoint written; a run killed
    /// in between redoes at most this much work, and a shorter interval costs fsyncs.
    #[serde(default = "CacheConfig::default_checkpoint_every")]
    pub checkpoint_every: Duration,
    /// What identifies the run's weights beyond the settings above: digests of the model's and
    /// the sparse coders' files, the dtype. It is part of the checkpoint's fingerprint, so a
    /// rerun with other weights starts afresh instead of resuming into a mix of two coders'
    /// latents. [`CacheConfig::with_sparse_model`] adds the coders' files, and
    /// [`crate::cache_dataset`] the model's; with [`run`] and a forward pass of one's own, add
    /// what identifies it with [`CacheConfig::with_identity`].
    #[serde(default)]
    pub identity: String,
}

impl CacheConfig {
    /// The default [`CacheConfig::checkpoint_every`]: 5 seconds.
    pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

    fn default_checkpoint_every() -> Duration {
        Self::DEFAULT_CHECKPOINT_EVERY
    }

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

    /// Records the sparse-coder source (`sparse_model`), and adds a digest of its files to
    /// [`CacheConfig::identity`] (see [`source_identity`]; cheap: a MiB from each end of each
    /// file).
    #[must_use]
    pub fn with_sparse_model(mut self, source: &str) -> Self {
        self.extra.insert("sparse_model".into(), source.into());
        self.with_identity(&format!("sparse model {}", source_identity(source)))
    }

    /// Adds `part` (a line) to [`CacheConfig::identity`].
    #[must_use]
    pub fn with_identity(mut self, part: &str) -> Self {
        if !self.identity.is_empty() {
            self.identity.push('\n');
        }
        self.identity.push_str(part);
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

impl HookStats {
    /// The stats of each hook point as a table for a terminal: tokens, live latents, the
    /// fractions firing on more than 1 % and 10 % of tokens, L0 and the rate.
    pub fn table(stats: &[HookStats]) -> String {
        let mut out = format!(
            "{:<24} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "hook point", "tokens", "alive", ">1%", ">10%", "L0", "tokens/s"
        );
        for s in stats {
            out.push_str(&format!(
                "\n{:<24} {:>10} {:>7.1}% {:>7.1}% {:>7.1}% {:>8.1} {:>10.0}",
                s.hookpoint.to_string(),
                s.n_tokens,
                100.0 * s.alive_fraction,
                100.0 * s.frac_firing_over_1pct,
                100.0 * s.frac_firing_over_10pct,
                s.mean_l0,
                s.n_tokens as f64 / s.seconds.max(1e-9)
            ));
        }
        out
    }
}

/// The run checkpoint: all hooks' spill lengths at one row boundary, written atomically, so every
/// hook resumes from the same row; then, once every row is spilled, which hooks' split files are
/// written.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    fingerprint: String,
    rows_done: usize,
    lengths: BTreeMap<String, Vec<u64>>,
    /// Hook points whose split files and `firing_counts.json` are written: their spill is
    /// removed (or about to be), and a rerun goes straight to their `config.json`.
    #[serde(default)]
    finished: BTreeSet<String>,
}

impl Checkpoint {
    fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec(self).unwrap_or_default())?;
        Ok(())
    }
}

fn fingerprint(tokens: &Tokens, targets: &[Target<'_>], cfg: &CacheConfig) -> String {
    let mut h = FNV_START;
    h = fnv1a(tokens.ids.iter().flat_map(|t| t.to_le_bytes()), h);
    let desc = format!(
        "{}x{} {} {} {} {:?} {}",
        tokens.rows,
        tokens.ctx_len,
        cfg.model_name,
        cfg.n_splits,
        cfg.skip_first_token,
        targets
            .iter()
            .map(|t| (t.hook.to_string(), t.coder.width(), t.coder.d_in()))
            .collect::<Vec<_>>(),
        cfg.identity,
    );
    format!("{:016x}", fnv1a(desc.into_bytes(), h))
}

/// Test hooks at each step of the finish: a test makes the step named `at` fail, leaving what a
/// `kill -9` there would leave, then checks that a rerun completes.
#[cfg(test)]
pub(crate) mod failpoint {
    use std::cell::RefCell;

    thread_local! {
        static AT: RefCell<Option<(&'static str, usize)>> = const { RefCell::new(None) };
    }

    /// Fails the `nth` (0-based) passage through `at` on this thread.
    pub(crate) fn set(at: &'static str, nth: usize) {
        AT.with(|a| *a.borrow_mut() = Some((at, nth)));
    }

    pub(crate) fn check(name: &str) -> crate::Result<()> {
        AT.with(|a| {
            let mut a = a.borrow_mut();
            match *a {
                Some((at, 0)) if at == name => {
                    *a = None;
                    Err(crate::Error::InvalidRun(format!("killed at {name}")))
                }
                Some((at, n)) if at == name => {
                    *a = Some((at, n - 1));
                    Ok(())
                }
                _ => Ok(()),
            }
        })
    }
}

/// A step of the finish that a test can make fail (see `failpoint`); nothing outside tests.
#[inline]
pub(crate) fn fail_point(_name: &str) -> Result<()> {
    #[cfg(test)]
    failpoint::check(_name)?;
    Ok(())
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
/// `kill -9`, at any point, the finish included) continues from the last checkpoint and writes
/// the same files. A checkpoint of other tokens, settings or weights
/// ([`CacheConfig::identity`]) is not resumed: the run starts afresh.
///
/// The run holds `out`'s [`DirLock`] throughout: a second run on the same folder fails at once,
/// naming this one. Until the run ends, `<out>/latents/.checkpoint.json` is there, which readers
/// take for an unfinished cache; each hook's `config.json` is written last.
pub fn run(
    out: &Path,
    tokens: &Tokens,
    targets: &[Target<'_>],
    forward: impl FnMut(&Tensor) -> Result<Vec<Tensor>, BoxError>,
    cfg: &CacheConfig,
    on_progress: impl FnMut(Progress),
) -> Result<Vec<HookStats>> {
    check_inputs(tokens, targets, cfg)?;
    let _lock = DirLock::acquire(out)?;
    run_locked(out, tokens, targets, forward, cfg, on_progress)
}

/// The inputs [`run`] refuses, before it touches `out`.
pub(crate) fn check_inputs(
    tokens: &Tokens,
    targets: &[Target<'_>],
    cfg: &CacheConfig,
) -> Result<()> {
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
    Ok(())
}

/// [`run`], with `out`'s lock held by the caller and the inputs checked.
pub(crate) fn run_locked(
    out: &Path,
    tokens: &Tokens,
    targets: &[Target<'_>],
    mut forward: impl FnMut(&Tensor) -> Result<Vec<Tensor>, BoxError>,
    cfg: &CacheConfig,
    mut on_progress: impl FnMut(Progress),
) -> Result<Vec<HookStats>> {
    let started = Instant::now();
    let fp = fingerprint(tokens, targets, cfg);
    let latents = out.join("latents");
    let ckpt_path = latents.join(CHECKPOINT_FILE);
    // A killed run's half-written files; with the lock held, no live writer's.
    remove_temp_files(&latents)?;
    for t in targets {
        remove_temp_files(&hook_dir(out, t.hook))?;
    }
    let fresh = Checkpoint {
        fingerprint: fp.clone(),
        ..Checkpoint::default()
    };
    let resumed: Option<Checkpoint> = std::fs::read(&ckpt_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &Checkpoint| c.fingerprint == fp)
        // Splits are written only once every row is spilled.
        .filter(|c| c.finished.is_empty() || c.rows_done == tokens.rows);
    let (mut ckpt, mut spillers) = match resumed {
        Some(c) => match open_spillers(out, targets, cfg, &c) {
            Ok(spillers) => (c, spillers),
            Err(e) => {
                // Spills that do not match the checkpoint (moved, truncated, or left by an
                // older version mid-finish): the rows are redone rather than trusted.
                tracing::warn!(error = %e, "the checkpoint cannot be resumed; caching afresh");
                let spillers = open_spillers(out, targets, cfg, &fresh)?;
                (fresh, spillers)
            }
        },
        None => {
            let spillers = open_spillers(out, targets, cfg, &fresh)?;
            (fresh, spillers)
        }
    };
    let start_row = ckpt.rows_done.min(tokens.rows);
    if start_row > 0 {
        tracing::info!(rows = start_row, "resuming from checkpoint");
    }
    if start_row < tokens.rows {
        // Nothing is finished before every row is spilled: every hook has its spiller.
        let active: Vec<SplitSpiller> = spillers.drain(..).flatten().collect();
        let (active, saved) = spill_rows(
            active,
            ckpt,
            start_row,
            tokens,
            targets,
            &mut forward,
            cfg,
            &ckpt_path,
            &mut on_progress,
        )?;
        spillers = active.into_iter().map(Some).collect();
        ckpt = saved;
    }

    // The finish, resumable at every step: each hook's split files and firing counts are
    // written, then recorded in the checkpoint, and only then is its spill removed; a rerun
    // skips the hooks recorded. `config.json` files come after every hook's splits, and the
    // checkpoint goes last.
    let n_tokens = (tokens.rows * tokens.ctx_len) as u64;
    let mut counts = Vec::with_capacity(targets.len());
    for (t, spiller) in targets.iter().zip(&mut spillers) {
        let dir = hook_dir(out, t.hook);
        let name = t.hook.to_string();
        match spiller.take() {
            Some(mut spiller) => {
                let done = spiller.write_splits(Some(tokens))?;
                write_counts(&dir, n_tokens, &done.counts)?;
                fail_point("counts written")?;
                ckpt.finished.insert(name);
                ckpt.write(&ckpt_path)?;
                fail_point("splits recorded")?;
                drop(spiller);
                SplitSpiller::remove_spill(&dir)?;
                fail_point("spill removed")?;
                counts.push(done.counts);
            }
            None => {
                // Killed after recording the splits: the spill may still be there.
                SplitSpiller::remove_spill(&dir)?;
                counts.push(read_counts(&dir, n_tokens, t.coder.width(), &ckpt_path)?);
            }
        }
    }
    let mut all_stats = Vec::with_capacity(targets.len());
    for (t, counts) in targets.iter().zip(&counts) {
        let dir = hook_dir(out, t.hook);
        let frac = |pred: &dyn Fn(u64) -> bool| {
            counts.iter().filter(|&&c| pred(c)).count() as f64 / counts.len().max(1) as f64
        };
        let stats = HookStats {
            hookpoint: t.hook,
            n_tokens,
            width: counts.len(),
            alive_fraction: frac(&|c| c > 0),
            frac_firing_over_1pct: frac(&|c| c as f64 > 0.01 * n_tokens as f64),
            frac_firing_over_10pct: frac(&|c| c as f64 > 0.10 * n_tokens as f64),
            mean_l0: counts.iter().sum::<u64>() as f64 / n_tokens.max(1) as f64,
            seconds: started.elapsed().as_secs_f64(),
        };
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
        config.insert("batch_size".into(), cfg.batch_size.get().into());
        config.insert("n_splits".into(), cfg.n_splits.into());
        config.insert("model_name".into(), cfg.model_name.clone().into());
        config.insert("skip_first_token".into(), cfg.skip_first_token.into());
        write_atomic(
            &dir.join("config.json"),
            &serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )?;
        fail_point("config written")?;
        all_stats.push(stats);
    }
    std::fs::remove_file(&ckpt_path).map_err(|source| Error::Io {
        path: ckpt_path,
        source,
    })?;
    Ok(all_stats)
}

/// One spiller per target, resumed at `ckpt`'s lengths; `None` for the hooks `ckpt` records as
/// finished. Fails when a spill cannot be resumed.
fn open_spillers(
    out: &Path,
    targets: &[Target<'_>],
    cfg: &CacheConfig,
    ckpt: &Checkpoint,
) -> Result<Vec<Option<SplitSpiller>>> {
    let mut spillers = Vec::with_capacity(targets.len());
    for t in targets {
        let dir = hook_dir(out, t.hook);
        let name = t.hook.to_string();
        let width = u32::try_from(t.coder.width()).map_err(|_| Error::LatentOutOfRange {
            latent: u32::MAX,
            width: u32::MAX,
        })?;
        if ckpt.finished.contains(&name) {
            spillers.push(None);
            continue;
        }
        // A finished cache from an earlier run is replaced only once this run finishes.
        let spiller = if ckpt.rows_done == 0 {
            SplitSpiller::create(&dir, width, cfg.n_splits, &ckpt.fingerprint)?
        } else {
            let lengths = ckpt.lengths.get(&name).ok_or_else(|| {
                Error::InvalidRun(format!("the checkpoint has no spill lengths for {name}"))
            })?;
            SplitSpiller::resume_at(&dir, width, cfg.n_splits, &ckpt.fingerprint, lengths)?
        };
        spillers.push(Some(spiller));
    }
    Ok(spillers)
}

/// Encodes and spills rows `start_row..`, checkpointing as it goes; returns the spillers and
/// the last checkpoint written.
#[allow(clippy::too_many_arguments)]
fn spill_rows(
    spillers: Vec<SplitSpiller>,
    ckpt: Checkpoint,
    start_row: usize,
    tokens: &Tokens,
    targets: &[Target<'_>],
    forward: &mut impl FnMut(&Tensor) -> Result<Vec<Tensor>, BoxError>,
    cfg: &CacheConfig,
    ckpt_path: &Path,
    on_progress: &mut impl FnMut(Progress),
) -> Result<(Vec<SplitSpiller>, Checkpoint)> {
    // Device work (forward, encode) stays on this thread; a writer thread copies each batch's
    // latents to the host and spills them, so the device starts batch n+1 while the host
    // writes batch n. The channel holds two batches: host memory stays bounded, and a host
    // slower than the device slows the device instead of piling up batches.
    let _guard = tch::no_grad_guard();
    let batch = cfg.batch_size.get();
    let (send, receive) = std::sync::mpsc::sync_channel::<EncodedBatch>(2);
    std::thread::scope(|scope| {
        let hooks: Vec<String> = targets.iter().map(|t| t.hook.to_string()).collect();
        let writer = scope
            .spawn(move || write_batches(receive, spillers, &hooks, tokens, cfg, ckpt, ckpt_path));
        let sent = encode_batches(
            &send,
            start_row,
            tokens,
            targets,
            forward,
            batch,
            on_progress,
        );
        drop(send);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidRun("the cache writer thread panicked".into())));
        // A writer error is why sending stopped; report it rather than the closed channel.
        let written = written?;
        sent?;
        Ok(written)
    })
}

/// One batch's latents, still on the device: `(indices, values)` `[tokens, k]` per target.
struct EncodedBatch {
    rows: std::ops::Range<usize>,
    latents: Vec<(Tensor, Tensor)>,
}

/// The device side of the loop: runs `forward` and the encoders over rows `start_row..` and
/// sends each batch's latents to the writer. Stops early, without error, when the writer has
/// stopped (its error is the one reported).
fn encode_batches(
    send: &std::sync::mpsc::SyncSender<EncodedBatch>,
    start_row: usize,
    tokens: &Tokens,
    targets: &[Target<'_>],
    forward: &mut impl FnMut(&Tensor) -> Result<Vec<Tensor>, BoxError>,
    batch: usize,
    on_progress: &mut impl FnMut(Progress),
) -> Result<()> {
    let mut row = start_row;
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
        let mut latents = Vec::with_capacity(targets.len());
        for (t, x) in targets.iter().zip(&acts) {
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
            latents.push(
                t.coder
                    .encode_sparse(&x.reshape([-1, d]))
                    .map_err(|e| Error::Forward(e.to_string()))?,
            );
        }
        if send
            .send(EncodedBatch {
                rows: row..end,
                latents,
            })
            .is_err()
        {
            return Ok(());
        }
        row = end;
        on_progress(Progress {
            rows_done: row,
            rows_total: tokens.rows,
            rows_this_run: row - start_row,
        });
    }
    Ok(())
}

/// The host side of the loop: copies each batch's latents off the device, spills them, and
/// every `cfg.checkpoint_every` (and after the last batch) makes the spills durable and writes
/// the checkpoint. Returns the spillers, for the finish, and the last checkpoint.
fn write_batches(
    receive: std::sync::mpsc::Receiver<EncodedBatch>,
    mut spillers: Vec<SplitSpiller>,
    hooks: &[String],
    tokens: &Tokens,
    cfg: &CacheConfig,
    mut ckpt: Checkpoint,
    ckpt_path: &Path,
) -> Result<(Vec<SplitSpiller>, Checkpoint)> {
    let _guard = tch::no_grad_guard();
    let mut last_checkpoint = Instant::now();
    let mut unsaved: Option<usize> = None;
    let mut host = HostLatents::default();
    for batch in receive {
        for ((spiller, (idx, val)), hook) in spillers.iter_mut().zip(&batch.latents).zip(hooks) {
            host.copy_from(idx, val)
                .map_err(|e| Error::Forward(format!("copying the latents of {hook}: {e}")))?;
            spiller.push_rows(
                batch.rows.start as u32,
                tokens.ctx_len,
                host.k,
                &host.indices,
                &host.values,
                cfg.skip_first_token,
            )?;
        }
        drop(batch.latents);
        unsaved = Some(batch.rows.end);
        if last_checkpoint.elapsed() >= cfg.checkpoint_every {
            checkpoint(&mut spillers, hooks, batch.rows.end, &mut ckpt, ckpt_path)?;
            last_checkpoint = Instant::now();
            unsaved = None;
        }
    }
    if let Some(rows_done) = unsaved {
        checkpoint(&mut spillers, hooks, rows_done, &mut ckpt, ckpt_path)?;
    }
    Ok((spillers, ckpt))
}

/// Makes every spill durable, then records where they stand after `rows_done` rows.
fn checkpoint(
    spillers: &mut [SplitSpiller],
    hooks: &[String],
    rows_done: usize,
    ckpt: &mut Checkpoint,
    path: &Path,
) -> Result<()> {
    for (hook, spiller) in hooks.iter().zip(spillers) {
        ckpt.lengths.insert(hook.clone(), spiller.sync()?);
    }
    ckpt.rows_done = rows_done;
    ckpt.write(path)
}

/// One batch's latents on the host, in buffers reused from batch to batch.
#[derive(Default)]
struct HostLatents {
    k: usize,
    indices: Vec<i64>,
    values: Vec<f32>,
}

impl HostLatents {
    fn copy_from(&mut self, idx: &Tensor, val: &Tensor) -> Result<(), tch::TchError> {
        self.k = idx.size().get(1).copied().unwrap_or(0) as usize;
        let idx = idx.to_device(Device::Cpu).to_kind(Kind::Int64).contiguous();
        let val = val.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let n = idx.numel();
        self.indices.resize(n, 0);
        self.values.resize(val.numel(), 0.0);
        idx.f_copy_data(&mut self.indices, n)?;
        val.f_copy_data(&mut self.values, n)?;
        Ok(())
    }
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

/// Reads back the `firing_counts.json` of a hook whose splits the checkpoint records as written.
fn read_counts(dir: &Path, n_tokens: u64, width: usize, ckpt_path: &Path) -> Result<Vec<u64>> {
    #[derive(serde::Deserialize)]
    struct Counts {
        n_tokens: u64,
        counts: Vec<u64>,
    }
    let path = dir.join("firing_counts.json");
    let problem = match std::fs::read(&path) {
        Err(e) => e.to_string(),
        Ok(bytes) => match serde_json::from_slice::<Counts>(&bytes) {
            Err(e) => format!("malformed: {e}"),
            Ok(c) if c.n_tokens != n_tokens || c.counts.len() != width => format!(
                "counts {} latents over {} tokens, but the run has {width} over {n_tokens}",
                c.counts.len(),
                c.n_tokens
            ),
            Ok(c) => return Ok(c.counts),
        },
    };
    Err(Error::InvalidRun(format!(
        "{}: {problem}; {} records this hook point's split files as written, so it should be \
         whole: delete {} to cache afresh",
        path.display(),
        ckpt_path.display(),
        ckpt_path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TopK over a fixed random projection.
    struct RandomTopK(Tensor);

    impl LatentEncoder for RandomTopK {
        fn width(&self) -> usize {
            self.0.size()[1] as usize
        }
        fn d_in(&self) -> usize {
            self.0.size()[0] as usize
        }
        fn encode_sparse(&self, x: &Tensor) -> Result<(Tensor, Tensor), BoxError> {
            let (v, i) = x.matmul(&self.0).relu().topk(3, -1, true, true);
            Ok((i, v))
        }
    }

    struct Setup {
        tokens: Tokens,
        embed: Tensor,
        coders: [RandomTopK; 2],
        cfg: CacheConfig,
    }

    fn setup() -> Setup {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        Setup {
            tokens: Tokens {
                rows: 8,
                ctx_len: 5,
                ids: (0..40u32).map(|i| (i * 31) % 20).collect(),
            },
            embed: Tensor::randn([20, 6], opts),
            coders: [
                RandomTopK(Tensor::randn([6, 24], opts)),
                RandomTopK(Tensor::randn([6, 16], opts)),
            ],
            cfg: CacheConfig {
                batch_size: NonZeroUsize::new(3).unwrap(),
                n_splits: 3,
                model_name: "synthetic".into(),
                skip_first_token: false,
                extra: Default::default(),
                checkpoint_every: Duration::ZERO,
                identity: String::new(),
            },
        }
    }

    const HOOKS: [HookPoint; 2] = [HookPoint::Residual(0), HookPoint::Mlp(1)];

    /// Runs the cache; returns the forward passes it made.
    fn run_it(s: &Setup, out: &Path) -> Result<usize> {
        let targets: Vec<Target<'_>> = HOOKS
            .iter()
            .zip(&s.coders)
            .map(|(&hook, coder)| Target { hook, coder })
            .collect();
        let mut calls = 0;
        let forward = |ids: &Tensor| -> Result<Vec<Tensor>, BoxError> {
            calls += 1;
            let x = s.embed.index_select(0, &ids.reshape([-1]));
            let x = x.reshape([ids.size()[0], ids.size()[1], -1]);
            Ok(vec![x.shallow_clone(), x])
        };
        run(out, &s.tokens, &targets, forward, &s.cfg, |_| {})?;
        Ok(calls)
    }

    /// Every file under `out`, hidden ones included, by relative path; `stats.json` holds
    /// wall time and is left out.
    fn snapshot(out: &Path) -> Vec<(String, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, files);
                } else if !path.ends_with("stats.json") {
                    let rel = path.strip_prefix(root).unwrap().display().to_string();
                    files.push((rel, std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut files = Vec::new();
        walk(out, out, &mut files);
        files.sort();
        files
    }

    #[test]
    fn a_kill_at_any_step_of_the_finish_resumes_to_identical_files() {
        let s = setup();
        let straight = tempfile::tempdir().unwrap();
        run_it(&s, straight.path()).unwrap();
        let want = snapshot(straight.path());
        let names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 2 * 5, "{names:?}");
        assert!(names.iter().all(|n| !n.contains("/.")), "{names:?}");

        // `nth` counts passages over both hooks: 1 is the second hook's.
        let kills = [
            ("splits written", 0),
            ("counts written", 0),
            ("splits recorded", 0),
            ("spill removed", 0),
            ("splits written", 1),
            ("counts written", 1),
            ("splits recorded", 1),
            ("spill removed", 1),
            ("config written", 0),
            ("config written", 1), // the checkpoint's removal is all that is left
        ];
        for (at, nth) in kills {
            let out = tempfile::tempdir().unwrap();
            failpoint::set(at, nth);
            let err = run_it(&s, out.path()).unwrap_err().to_string();
            assert!(err.contains("killed at"), "{at} #{nth}: {err}");
            assert!(out.path().join("latents").join(CHECKPOINT_FILE).is_file());
            // A kill also leaves the temporary file of the write it interrupted, and one
            // while splits are written (side by side) leaves some of them unwritten.
            let dir = hook_dir(out.path(), HOOKS[nth]);
            std::fs::write(dir.join(".0_7.safetensors.tmp4242"), b"half").unwrap();
            if at == "splits written" {
                let split = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
                    .unwrap();
                std::fs::remove_file(split).unwrap();
            }
            // Every row was spilled before the finish began: none is encoded again.
            assert_eq!(run_it(&s, out.path()).unwrap(), 0, "{at} #{nth}");
            assert!(
                snapshot(out.path()) == want,
                "killed at {at} #{nth}: the rerun's files differ"
            );
        }
    }

    #[test]
    fn a_checkpoint_whose_spills_are_gone_is_cached_afresh() {
        // What the finish of earlier versions left when killed after removing the spill: a
        // checkpoint of every row with spill lengths, and no spill.
        let s = setup();
        let straight = tempfile::tempdir().unwrap();
        run_it(&s, straight.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        run_it(&s, out.path()).unwrap();
        let targets: Vec<Target<'_>> = HOOKS
            .iter()
            .zip(&s.coders)
            .map(|(&hook, coder)| Target { hook, coder })
            .collect();
        let old = serde_json::json!({
            "fingerprint": fingerprint(&s.tokens, &targets, &s.cfg),
            "rows_done": s.tokens.rows,
            "lengths": { "layers.0": [140, 140, 140], "layers.1.mlp": [98, 98, 98] },
        });
        let path = out.path().join("latents").join(CHECKPOINT_FILE);
        std::fs::write(&path, old.to_string()).unwrap();
        std::fs::remove_file(hook_dir(out.path(), HOOKS[1]).join("config.json")).unwrap();
        assert_eq!(run_it(&s, out.path()).unwrap(), 3, "every batch again");
        assert!(snapshot(out.path()) == snapshot(straight.path()));
    }
}
