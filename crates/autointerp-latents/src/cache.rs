//! Opening a latent cache (one folder, or a set of shards) and reading its split files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use autointerp_core::split::{
    file_name, parse_file_name, SplitReader, Tokens, CHECKPOINT_FILE, SPILL_DIR,
};
use autointerp_core::{HookPoint, VocabProjection, VOCAB_PROJECTION_FILE};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Name of the file that marks a folder as one shard of a cache written in pieces.
pub const SHARD_FILE: &str = "shard.json";

/// `shard.json`: which piece of a cache a shard folder holds.
///
/// `autointerp cache --shard I/N` caches rows `row_offset..row_offset + rows` of the token
/// dataset into its own folder, with the usual `latents/<hookpoint>/<start>_<end>.safetensors`
/// layout whose rows count from 0. [`LatentCache::open_shards`] reads the N folders as one cache
/// whose row `r` of shard `I` is global row `row_offset + r`.
///
/// ```json
/// {"index": 1, "count": 4, "row_offset": 2048, "rows": 2048}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Which shard, `0..count`.
    pub index: u32,
    /// How many shards make the cache.
    pub count: u32,
    /// Global index of this shard's first row.
    pub row_offset: u64,
    /// Rows this shard holds.
    pub rows: u64,
}

impl ShardInfo {
    /// Reads `dir/shard.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(SHARD_FILE);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Shard {
            path,
            problem: format!("malformed: {e}"),
        })
    }

    /// Writes `dir/shard.json` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(SHARD_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Shard {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        autointerp_core::fs::write_atomic(&path, &bytes)?;
        Ok(())
    }
}

/// The per-latent firing counts autointerp's cache writes in each hook point's folder
/// (`{"n_tokens": N, "counts": [...]}`).
pub const FIRING_COUNTS_FILE: &str = "firing_counts.json";

/// A latent cache: the split files of one or more hook points, in one folder or spread over
/// shards, read as one cache with global row indices.
///
/// Opening lists the files and reads their headers (so a missing or corrupt split is reported
/// up front, naming the file); activations are read later, one split at a time. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LatentCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    path: PathBuf,
    hooks: Vec<HookCache>,
}

/// The cache of one hook point.
#[derive(Debug, Clone)]
pub struct HookCache {
    name: String,
    hook: HookPoint,
    /// One entry per split range, sorted by start.
    splits: Vec<SplitRange>,
    /// One entry per shard (one for an unsharded cache), by row offset.
    shards: Vec<ShardPart>,
    ctx_len: usize,
    rows: u64,
    config: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct SplitRange {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

#[derive(Debug, Clone)]
struct ShardPart {
    /// The hook point's folder in this shard.
    dir: PathBuf,
    row_offset: u64,
    rows: u64,
    /// The split file holding the token grid.
    tokens_file: PathBuf,
}

impl LatentCache {
    /// Opens a cache, recognising its layout:
    /// - a cache root `<path>/latents/<hookpoint>/<start>_<end>.safetensors` (ours and delphi's),
    ///   or that `latents` folder itself (what delphi's `LatentDataset` takes);
    /// - a folder whose subfolders are the shards of one cache (see [`ShardInfo`]), or one
    ///   shard (`<path>/shard.json`) when it is the whole cache (a missing shard is an error that
    ///   names it);
    /// - a single hook point's folder of split files, named after the hook point.
    ///
    /// A hook point folder that a cache run has not finished is refused with
    /// [`Error::UnfinishedCache`]: one holding a spill folder (`.spill`), one beside a run
    /// checkpoint (`latents/.checkpoint.json`), or one with autointerp's `firing_counts.json` but
    /// not the `config.json` it writes last. A folder without `config.json` is otherwise
    /// accepted: hand-made caches and older delphi ones may lack it.
    pub fn open(path: &Path) -> Result<Self> {
        if path.join(SHARD_FILE).is_file() {
            return Self::open_shards(&[path.to_path_buf()]);
        }
        let subdirs = list_dirs(path)?;
        let shard_dirs: Vec<PathBuf> = subdirs
            .iter()
            .filter(|d| d.join(SHARD_FILE).is_file())
            .cloned()
            .collect();
        if !shard_dirs.is_empty() {
            return Self::open_shards_at(path, &shard_dirs);
        }
        let hooks = open_unsharded(path)?;
        Ok(Self {
            inner: Arc::new(CacheInner {
                path: path.to_path_buf(),
                hooks,
            }),
        })
    }

    /// Opens shard folders (each with a `shard.json`, in any order) as one cache. Every shard
    /// must hold the same hook points and split files, and the shards' rows must follow one
    /// another with no gap: `count` shards, indices `0..count`, each starting where the previous
    /// one ended.
    pub fn open_shards(dirs: &[PathBuf]) -> Result<Self> {
        let first = dirs.first().ok_or_else(|| Error::Shard {
            path: PathBuf::new(),
            problem: "no shard folders given".into(),
        })?;
        Self::open_shards_at(first, dirs)
    }

    fn open_shards_at(path: &Path, dirs: &[PathBuf]) -> Result<Self> {
        let mut shards: Vec<(ShardInfo, PathBuf)> = dirs
            .iter()
            .map(|d| Ok((ShardInfo::read(d)?, d.clone())))
            .collect::<Result<_>>()?;
        shards.sort_by_key(|(info, _)| info.index);
        let count = shards[0].0.count;
        let indices: Vec<u32> = shards.iter().map(|(i, _)| i.index).collect();
        if let Some((info, dir)) = shards.iter().find(|(i, _)| i.count != count) {
            return Err(Error::Shard {
                path: dir.join(SHARD_FILE),
                problem: format!(
                    "says the cache has {} shards, but {} says {count}",
                    info.count,
                    shards[0].1.display()
                ),
            });
        }
        if indices != (0..count).collect::<Vec<_>>() {
            let missing: Vec<String> = (0..count)
                .filter(|i| !indices.contains(i))
                .map(|i| format!("{i}/{count}"))
                .collect();
            return Err(Error::Shard {
                path: path.to_path_buf(),
                problem: format!(
                    "the shards given ({}) are not shards 0..{count} exactly once{}",
                    indices
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!("; missing: {}", missing.join(", "))
                    }
                ),
            });
        }
        let mut next_row = 0;
        for (info, dir) in &shards {
            if info.row_offset != next_row {
                return Err(Error::Shard {
                    path: dir.join(SHARD_FILE),
                    problem: format!(
                        "row_offset is {}, but the shards before it end at row {next_row}",
                        info.row_offset
                    ),
                });
            }
            next_row += info.rows;
        }

        // Open each shard as an unsharded cache, then check they agree and merge them.
        let mut merged: Option<Vec<HookCache>> = None;
        for (info, dir) in &shards {
            let hooks = open_unsharded(dir)?;
            for h in &hooks {
                let part = &h.shards[0];
                if part.rows != info.rows {
                    return Err(Error::Shard {
                        path: part.tokens_file.clone(),
                        problem: format!(
                            "holds {} token rows, but {} says {}",
                            part.rows,
                            dir.join(SHARD_FILE).display(),
                            info.rows
                        ),
                    });
                }
            }
            merged = Some(match merged {
                None => hooks
                    .into_iter()
                    .map(|mut h| {
                        h.shards[0].row_offset = info.row_offset;
                        h
                    })
                    .collect(),
                Some(mut acc) => {
                    merge_shard(&mut acc, hooks, info, dir)?;
                    acc
                }
            });
        }
        let hooks = merged.unwrap_or_default();
        Ok(Self {
            inner: Arc::new(CacheInner {
                path: path.to_path_buf(),
                hooks,
            }),
        })
    }

    /// The folder the cache was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The cached hook points, sorted.
    pub fn hooks(&self) -> &[HookCache] {
        &self.inner.hooks
    }

    /// The cache of one hook point.
    pub fn hook(&self, hook: HookPoint) -> Result<&HookCache> {
        self.inner
            .hooks
            .iter()
            .find(|h| h.hook == hook)
            .ok_or_else(|| Error::HookNotCached {
                hook: hook.to_string(),
                cached: self.inner.hooks.iter().map(|h| h.name.clone()).collect(),
            })
    }
}

impl HookCache {
    /// The hook point.
    pub fn hook(&self) -> HookPoint {
        self.hook
    }

    /// The folder name, as written (e.g. `transformer.h.0` for [`HookPoint::Residual`]`(0)`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of latents covered by the split files (the last split's end + 1).
    pub fn width(&self) -> u32 {
        self.splits.last().map_or(0, |s| s.end + 1)
    }

    /// Token rows over all shards.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Tokens per row.
    pub fn ctx_len(&self) -> usize {
        self.ctx_len
    }

    /// Tokens in the cache.
    pub fn n_tokens(&self) -> u64 {
        self.rows * self.ctx_len as u64
    }

    /// The latent ranges of the split files, `(start, end)` with `end` inclusive.
    pub fn split_ranges(&self) -> Vec<(u32, u32)> {
        self.splits.iter().map(|s| (s.start, s.end)).collect()
    }

    /// The hook point's `config.json` (delphi's cache config plus `model_name`), if present.
    pub fn config(&self) -> Option<&serde_json::Value> {
        self.config.as_ref()
    }

    /// The hook point's vocabulary projection (`vocab_projection.json`, written by
    /// `autointerp-cache` for coders with a decoder): each latent's top promoted and suppressed
    /// tokens. `None` when the cache has none (delphi's caches, MLP neurons), and, with a
    /// warning, when the file cannot be read: records are built without it.
    pub fn vocab_projection(&self) -> Option<VocabProjection> {
        let dir = self
            .shards
            .iter()
            .map(|s| &s.dir)
            .find(|d| d.join(VOCAB_PROJECTION_FILE).is_file())?;
        match VocabProjection::read_from_dir(dir) {
            Ok(Some(p)) if p.width() == self.width() as usize => Some(p),
            Ok(Some(p)) => {
                tracing::warn!(hook = %self.name, projected = p.width(), width = self.width(), "the vocabulary projection is of another coder's width; records go without it");
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(hook = %self.name, error = %e, "records go without the vocabulary projection");
                None
            }
        }
    }

    /// The model named in `config.json` (`model_name`), whose tokenizer decodes the cached
    /// tokens; `None` without a config or that field.
    pub fn model_name(&self) -> Option<&str> {
        self.config.as_ref()?.get("model_name")?.as_str()
    }

    /// Per-latent firing counts (the tokens at which each latent is nonzero) as autointerp's
    /// cache wrote them: `firing_counts.json` in the hook point's folder, summed over shards.
    /// `None` when a shard lacks the file (delphi's caches, hand-made ones); then
    /// [`HookCache::count_firings`] counts them from the split files.
    ///
    /// # Errors
    /// [`Error::FiringCounts`] for a file that is not `{"counts": [...]}` with one count per latent.
    pub fn stored_firing_counts(&self) -> Result<Option<Vec<u64>>> {
        #[derive(Deserialize)]
        struct Counts {
            counts: Vec<u64>,
        }
        let width = self.width() as usize;
        let mut total = vec![0u64; width];
        for part in &self.shards {
            let path = part.dir.join(FIRING_COUNTS_FILE);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(Error::Io { path, source }),
            };
            let counts = serde_json::from_slice::<Counts>(&bytes)
                .map_err(|e| Error::FiringCounts {
                    path: path.clone(),
                    problem: e.to_string(),
                })?
                .counts;
            if counts.len() != width {
                return Err(Error::FiringCounts {
                    path,
                    problem: format!(
                        "{} counts, but the split files cover {width} latents",
                        counts.len()
                    ),
                });
            }
            for (t, c) in total.iter_mut().zip(counts) {
                *t += c;
            }
        }
        Ok(Some(total))
    }

    /// Per-latent firing counts counted from the split files: one pass over every nonzero.
    pub fn count_firings(&self) -> Result<Vec<u64>> {
        let mut counts = vec![0u64; self.width() as usize];
        self.for_each_nonzero(|_, _, latent| {
            if let Some(c) = counts.get_mut(latent as usize) {
                *c += 1;
            }
        })?;
        Ok(counts)
    }

    pub(crate) fn splits(&self) -> &[SplitRange] {
        &self.splits
    }

    /// Index of the split holding `latent`.
    pub(crate) fn split_of(&self, latent: u32) -> Option<usize> {
        let i = self.splits.partition_point(|s| s.end < latent);
        (i < self.splits.len() && self.splits[i].start <= latent).then_some(i)
    }

    pub(crate) fn not_cached(&self, latent: u32) -> Error {
        Error::LatentNotCached {
            hook: self.name.clone(),
            latent,
            width: self.width(),
        }
    }

    /// Reads the token grid of every shard into one grid with global rows.
    pub fn read_tokens(&self) -> Result<Tokens> {
        let total = usize::try_from(self.rows * self.ctx_len as u64)
            .map_err(|_| Error::Config(format!("{} rows do not fit in memory", self.rows)))?;
        let mut ids = Vec::with_capacity(total);
        for part in &self.shards {
            let split = open_split(&part.tokens_file)?;
            let t = split
                .tokens()
                .ok_or_else(|| Error::NoTokens(part.dir.clone()))?;
            t.append_to(&mut ids).map_err(split_error)?;
        }
        Ok(Tokens {
            rows: self.rows as usize,
            ctx_len: self.ctx_len,
            ids,
        })
    }

    /// Reads split `split` of every shard and groups the nonzeros of the latents for which
    /// `wanted(latent)` holds by latent, each sorted by (row, position), with one counting sort.
    pub(crate) fn read_grouped(
        &self,
        split: usize,
        wanted: &dyn Fn(u32) -> bool,
    ) -> Result<Grouped> {
        let range = &self.splits[split];
        let width = (range.end - range.start + 1) as usize;
        let keep: Vec<bool> = (range.start..=range.end).map(wanted).collect();
        let files: Vec<SplitReader> = self
            .shards
            .iter()
            .map(|p| open_split(&p.dir.join(file_name(range.start, range.end))))
            .collect::<Result<_>>()?;

        // Pass 1: count the kept nonzeros of each latent.
        let mut offsets = vec![0usize; width + 1];
        for (file, part) in files.iter().zip(&self.shards) {
            file.for_each_location(part.rows, self.ctx_len as u64, |_, _, _, off| {
                if keep[off as usize] {
                    offsets[off as usize + 1] += 1;
                }
            })
            .map_err(split_error)?;
        }
        for i in 0..width {
            offsets[i + 1] += offsets[i];
        }
        // Pass 2: place them, in file order, so each latent's hits stay in (row, position) order.
        let mut cursor = offsets.clone();
        let mut hits = vec![
            Hit {
                row: 0,
                pos: 0,
                act: 0.0
            };
            offsets[width]
        ];
        for (file, part) in files.iter().zip(&self.shards) {
            let acts = file.activations();
            file.for_each_location(part.rows, self.ctx_len as u64, |i, row, pos, off| {
                if keep[off as usize] {
                    let c = &mut cursor[off as usize];
                    hits[*c] = Hit {
                        row: (row + part.row_offset) as u32,
                        pos,
                        act: acts.get(i),
                    };
                    *c += 1;
                }
            })
            .map_err(split_error)?;
        }
        // Files list nonzeros in (row, position) order; sort any latent whose hits are not.
        for l in 0..width {
            let h = &mut hits[offsets[l]..offsets[l + 1]];
            if !h
                .windows(2)
                .all(|w| (w[0].row, w[0].pos) <= (w[1].row, w[1].pos))
            {
                h.sort_unstable_by_key(|x| (x.row, x.pos));
            }
        }
        Ok(Grouped {
            start: range.start,
            offsets,
            hits,
        })
    }

    /// Visits every nonzero of every split of every shard: `f(global_row, position, latent)`.
    pub(crate) fn for_each_nonzero(&self, mut f: impl FnMut(u64, u32, u32)) -> Result<()> {
        for range in &self.splits {
            for part in &self.shards {
                let split = open_split(&part.dir.join(file_name(range.start, range.end)))?;
                split
                    .for_each_location(part.rows, self.ctx_len as u64, |_, row, pos, off| {
                        f(row + part.row_offset, pos, range.start + off)
                    })
                    .map_err(split_error)?;
            }
        }
        Ok(())
    }
}

/// One nonzero activation: global row, position in the row, value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    pub(crate) row: u32,
    pub(crate) pos: u32,
    pub(crate) act: f32,
}

/// The nonzeros of one split, grouped by latent.
#[derive(Debug)]
pub(crate) struct Grouped {
    start: u32,
    /// `offsets[l]..offsets[l + 1]` are latent `start + l`'s hits.
    offsets: Vec<usize>,
    hits: Vec<Hit>,
}

impl Grouped {
    /// The hits of `latent`, sorted by (row, position); empty if it never fires.
    pub(crate) fn hits(&self, latent: u32) -> &[Hit] {
        let l = (latent - self.start) as usize;
        &self.hits[self.offsets[l]..self.offsets[l + 1]]
    }
}

/// Lists the hook point folders of an unsharded cache at `path` (see [`LatentCache::open`]).
fn open_unsharded(path: &Path) -> Result<Vec<HookCache>> {
    if !path.is_dir() {
        return Err(Error::NotACache {
            path: path.to_path_buf(),
            reason: "no such folder".into(),
        });
    }
    // A hook point's own folder of split files?
    if list_splits(path)?.is_some() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        return Ok(vec![open_hook(path, &name)?]);
    }
    let latents = path.join("latents");
    let root = if latents.is_dir() {
        latents
    } else {
        path.to_path_buf()
    };
    // Before any split file is written, an unfinished cache has no hook folder to refuse.
    let ckpt = root.join(CHECKPOINT_FILE);
    if ckpt.exists() {
        return Err(Error::UnfinishedCache {
            path: root,
            problem: format!("the run checkpoint {} is there", ckpt.display()),
        });
    }
    let mut hooks = Vec::new();
    for dir in list_dirs(&root)? {
        check_finished(&dir)?;
        if list_splits(&dir)?.is_none() {
            continue;
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        hooks.push(open_hook(&dir, &name)?);
    }
    if hooks.is_empty() {
        return Err(Error::NotACache {
            path: path.to_path_buf(),
            reason: "expected `latents/<hookpoint>/<start>_<end>.safetensors`, hook point folders of split \
                     files, shard folders with `shard.json`, or split files"
                .into(),
        });
    }
    hooks.sort_by_key(|h| h.hook);
    if let Some(w) = hooks.windows(2).find(|w| w[0].hook == w[1].hook) {
        return Err(Error::NotACache {
            path: root,
            reason: format!(
                "folders `{}` and `{}` are the same hook point {}",
                w[0].name, w[1].name, w[0].hook
            ),
        });
    }
    Ok(hooks)
}

/// The most latents a hook point's cache may have: 64 Mi, four times the largest sparse coders
/// published (16 Mi latents), so that a split file's name cannot size allocations at will.
const MAX_WIDTH: u32 = 1 << 26;

fn open_hook(dir: &Path, name: &str) -> Result<HookCache> {
    let hook: HookPoint = name.parse().map_err(|source| Error::HookName {
        dir: dir.to_path_buf(),
        source,
    })?;
    check_finished(dir)?;
    let ranges = list_splits(dir)?.ok_or_else(|| Error::NoSplits(dir.to_path_buf()))?;
    // The ranges must tile 0..width with no gap or overlap.
    let mut next = 0u32;
    for &(start, end) in &ranges {
        if start != next {
            return Err(if start > next {
                Error::MissingSplit {
                    path: dir.join(format!("{next}_*.safetensors")),
                    reason: format!("no split file holds latents {next}..{start}"),
                }
            } else {
                Error::CorruptSplit {
                    path: dir.join(file_name(start, end)),
                    problem: format!(
                        "overlaps the split before it, which ends at latent {}",
                        next - 1
                    ),
                }
            });
        }
        // A file name is a claim, not a fact: bound it before anything is sized by the width.
        next = match end.checked_add(1).filter(|&w| w <= MAX_WIDTH) {
            Some(w) => w,
            None => {
                return Err(Error::CorruptSplit {
                    path: dir.join(file_name(start, end)),
                    problem: format!(
                        "its name claims latents up to {end}, more than any sparse coder has \
                         (at most {MAX_WIDTH} latents are read)"
                    ),
                })
            }
        };
    }

    // Read every header: the layout must be sound, and one file must hold the token grid.
    let mut grid: Option<(usize, usize, PathBuf)> = None;
    for &(start, end) in &ranges {
        let path = dir.join(file_name(start, end));
        let split = open_split(&path)?;
        if let Some(t) = split.tokens() {
            let (rows, ctx) = (t.rows(), t.ctx_len());
            match &grid {
                None => grid = Some((rows, ctx, path.clone())),
                Some((r, c, first)) if (*r, *c) != (rows, ctx) => {
                    return Err(Error::CorruptSplit {
                        path,
                        problem: format!(
                            "tokens are {rows}×{ctx}, but {} has {r}×{c}",
                            first.display()
                        ),
                    })
                }
                Some(_) => {}
            }
        }
    }
    let (rows, ctx_len, tokens_file) = grid.ok_or_else(|| Error::NoTokens(dir.to_path_buf()))?;
    check_rows(rows as u64, &tokens_file)?;
    let config = match std::fs::read(dir.join("config.json")) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes).map_err(|e| Error::NotACache {
                path: dir.join("config.json"),
                reason: format!("malformed config.json: {e}"),
            })?,
        ),
        Err(_) => None,
    };
    Ok(HookCache {
        name: name.to_string(),
        hook,
        splits: ranges
            .iter()
            .map(|&(start, end)| SplitRange { start, end })
            .collect(),
        shards: vec![ShardPart {
            dir: dir.to_path_buf(),
            row_offset: 0,
            rows: rows as u64,
            tokens_file,
        }],
        ctx_len,
        rows: rows as u64,
        config,
    })
}

/// Refuses a hook point folder that autointerp's cache run has not finished (see
/// [`LatentCache::open`]).
fn check_finished(dir: &Path) -> Result<()> {
    let problem = if dir.join(SPILL_DIR).exists() {
        format!("it still holds the spill folder {SPILL_DIR}")
    } else if let Some(ckpt) = dir
        .parent()
        .map(|p| p.join(CHECKPOINT_FILE))
        .filter(|c| c.exists())
    {
        format!("the run checkpoint {} is there", ckpt.display())
    } else if dir.join(FIRING_COUNTS_FILE).exists() && !dir.join("config.json").exists() {
        "it has firing_counts.json but not the config.json written after it".into()
    } else {
        return Ok(());
    };
    Err(Error::UnfinishedCache {
        path: dir.to_path_buf(),
        problem,
    })
}

/// Adds one shard's hook points to those of the shards before it, checking that they agree.
fn merge_shard(
    acc: &mut [HookCache],
    hooks: Vec<HookCache>,
    info: &ShardInfo,
    dir: &Path,
) -> Result<()> {
    let names = |hs: &[HookCache]| hs.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
    let (have, got) = (names(acc), names(&hooks));
    if let Some(missing) = have.iter().find(|n| !got.contains(n)) {
        return Err(Error::MissingSplit {
            path: dir.join("latents").join(missing),
            reason: format!(
                "shard {}/{} lacks hook point {missing}, which the other shards have",
                info.index, info.count
            ),
        });
    }
    if let Some(extra) = got.iter().find(|n| !have.contains(n)) {
        return Err(Error::Shard {
            path: dir.to_path_buf(),
            problem: format!("has hook point {extra}, which the shards before it lack"),
        });
    }
    for (a, mut h) in acc.iter_mut().zip(hooks) {
        let mut part = h.shards.remove(0);
        if h.ctx_len != a.ctx_len {
            return Err(Error::Shard {
                path: part.tokens_file,
                problem: format!(
                    "rows of {} tokens, but the shards before it have {}",
                    h.ctx_len, a.ctx_len
                ),
            });
        }
        let want = a.split_ranges();
        let got = h.split_ranges();
        if let Some(&(s, e)) = want.iter().find(|r| !got.contains(r)) {
            return Err(Error::MissingSplit {
                path: part.dir.join(file_name(s, e)),
                reason: format!(
                    "shard {}/{} lacks a split file the other shards have",
                    info.index, info.count
                ),
            });
        }
        if let Some(&(s, e)) = got.iter().find(|r| !want.contains(r)) {
            return Err(Error::Shard {
                path: part.dir.join(file_name(s, e)),
                problem: "a split file the shards before it lack (different n_splits?)".into(),
            });
        }
        part.row_offset = info.row_offset;
        a.rows += part.rows;
        check_rows(a.rows, &part.tokens_file)?;
        a.shards.push(part);
    }
    Ok(())
}

/// Rows are held as u32, and windows are numbered with u32 too.
fn check_rows(rows: u64, path: &Path) -> Result<()> {
    if rows > u64::from(u32::MAX) {
        return Err(Error::CorruptSplit {
            path: path.to_path_buf(),
            problem: format!("{rows} token rows; at most 2^32 - 1 are supported"),
        });
    }
    Ok(())
}

fn list_dirs(path: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The `(start, end)` of the split files in `dir`, sorted; `None` when there are none.
fn list_splits(dir: &Path) -> Result<Option<Vec<(u32, u32)>>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut ranges = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(r) = entry.file_name().to_str().and_then(parse_file_name) {
            ranges.push(r);
        }
    }
    ranges.sort_unstable();
    Ok((!ranges.is_empty()).then_some(ranges))
}

/// Opens a split file (memory-mapped) and checks its header.
fn open_split(path: &Path) -> Result<SplitReader> {
    SplitReader::open(path).map_err(split_error)
}

/// A split file's error from the core codec as this crate reports it: a file gone since the
/// cache was opened is missing, a malformed one corrupt.
fn split_error(e: autointerp_core::Error) -> Error {
    use autointerp_core::Error as Core;
    match e {
        Core::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::MissingSplit {
                path,
                reason: "listed when the cache was opened, gone now".into(),
            }
        }
        Core::Io { path, source } => Error::Io { path, source },
        Core::BadSplit { path, problem } => Error::CorruptSplit { path, problem },
        Core::BadTensor {
            path,
            tensor,
            problem,
        } => Error::CorruptSplit {
            path,
            problem: format!("tensor `{tensor}`: {problem}"),
        },
        other => Error::Core(other),
    }
}

#[cfg(test)]
mod tests {
    use autointerp_core::split::{Location, Split, Tokens};

    use super::*;

    #[test]
    fn the_model_name_comes_from_config_json_when_there_is_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("latents").join("layers.0");
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = Tokens {
            rows: 1,
            ctx_len: 4,
            ids: vec![0; 4],
        };
        let locations = vec![Location {
            row: 0,
            position: 1,
            latent: 0,
        }];
        Split {
            start: 0,
            end: 0,
            locations,
            activations: vec![1.0],
            tokens: Some(tokens),
        }
        .write_to_dir(&dir)
        .unwrap();
        let hook = HookPoint::Residual(0);
        let cache = LatentCache::open(root.path()).unwrap();
        assert_eq!(cache.hook(hook).unwrap().model_name(), None);

        std::fs::write(dir.join("config.json"), r#"{"ctx_len": 4}"#).unwrap();
        let cache = LatentCache::open(root.path()).unwrap();
        assert_eq!(cache.hook(hook).unwrap().model_name(), None);

        std::fs::write(dir.join("config.json"), r#"{"model_name": "gpt2"}"#).unwrap();
        let cache = LatentCache::open(root.path()).unwrap();
        assert_eq!(cache.hook(hook).unwrap().model_name(), Some("gpt2"));
    }

    #[test]
    fn split_names_that_claim_billions_of_latents_are_refused() {
        for end in [u32::MAX, MAX_WIDTH] {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("latents/layers.0");
            std::fs::create_dir_all(&dir).unwrap();
            let split = Split {
                start: 0,
                end,
                locations: vec![Location {
                    row: 0,
                    position: 1,
                    latent: 0,
                }],
                activations: vec![1.0],
                tokens: Some(Tokens {
                    rows: 1,
                    ctx_len: 4,
                    ids: vec![0; 4],
                }),
            };
            split.write_to_dir(&dir).unwrap();
            let err = LatentCache::open(root.path()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("0_{end}.safetensors")) && err.contains("claims"),
                "{err}"
            );
        }
    }

    #[test]
    fn firing_counts_are_read_from_the_file_or_counted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("latents").join("layers.0");
        std::fs::create_dir_all(&dir).unwrap();
        let at = |row, position, latent| Location {
            row,
            position,
            latent,
        };
        Split {
            start: 0,
            end: 2,
            locations: vec![at(0, 0, 0), at(0, 1, 2), at(1, 0, 2), at(1, 3, 2)],
            activations: vec![1.0; 4],
            tokens: Some(Tokens {
                rows: 2,
                ctx_len: 4,
                ids: vec![0; 8],
            }),
        }
        .write_to_dir(&dir)
        .unwrap();
        let cache = LatentCache::open(root.path()).unwrap();
        let hook = cache.hook(HookPoint::Residual(0)).unwrap();
        assert_eq!(hook.stored_firing_counts().unwrap(), None);
        assert_eq!(hook.count_firings().unwrap(), vec![1, 0, 3]);

        std::fs::write(
            dir.join(FIRING_COUNTS_FILE),
            r#"{"n_tokens": 8, "counts": [1, 0, 3]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let cache = LatentCache::open(root.path()).unwrap();
        let hook = cache.hook(HookPoint::Residual(0)).unwrap();
        assert_eq!(hook.stored_firing_counts().unwrap(), Some(vec![1, 0, 3]));

        std::fs::write(dir.join(FIRING_COUNTS_FILE), r#"{"counts": [1]}"#).unwrap();
        let err = hook.stored_firing_counts().unwrap_err().to_string();
        assert!(
            err.contains("1 counts") && err.contains("3 latents"),
            "{err}"
        );
    }

    #[test]
    fn unfinished_caches_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let latents = root.path().join("latents");
        let dir = latents.join("layers.0");
        std::fs::create_dir_all(&dir).unwrap();
        Split {
            start: 0,
            end: 0,
            locations: vec![Location {
                row: 0,
                position: 1,
                latent: 0,
            }],
            activations: vec![1.0],
            tokens: Some(Tokens {
                rows: 1,
                ctx_len: 4,
                ids: vec![0; 4],
            }),
        }
        .write_to_dir(&dir)
        .unwrap();
        std::fs::write(dir.join("firing_counts.json"), "{}").unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        LatentCache::open(root.path()).unwrap();

        let refused = |why: &str| {
            for path in [root.path(), &latents, &dir] {
                let err = LatentCache::open(path).unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, Error::UnfinishedCache { .. }), "{why}: {msg}");
                assert!(
                    msg.contains(&latents.display().to_string()) && msg.contains("rerun"),
                    "{why}: {msg}"
                );
            }
        };
        std::fs::create_dir(dir.join(".spill")).unwrap();
        refused("a spill");
        // Killed before writing any split file.
        let early = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(early.path().join("latents/layers.0/.spill")).unwrap();
        std::fs::write(early.path().join("latents/.checkpoint.json"), "{}").unwrap();
        let err = LatentCache::open(early.path()).unwrap_err();
        assert!(matches!(err, Error::UnfinishedCache { .. }), "{err}");
        std::fs::remove_dir(dir.join(".spill")).unwrap();
        std::fs::write(latents.join(".checkpoint.json"), "{}").unwrap();
        refused("a checkpoint");
        std::fs::remove_file(latents.join(".checkpoint.json")).unwrap();
        std::fs::remove_file(dir.join("config.json")).unwrap();
        refused("no config.json after firing_counts.json");
        std::fs::remove_file(dir.join("firing_counts.json")).unwrap();
        LatentCache::open(root.path()).unwrap();
    }
}
