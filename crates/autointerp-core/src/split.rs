//! The split files of a latent cache, byte-compatible with delphi's `LatentCache.save_splits`:
//! one codec, a streaming [`SplitWriter`] and a memory-mapped [`SplitReader`], that the cache
//! writes and the latents crate reads through.
//!
//! A cache of one hook point is a folder of files `<start>_<end>.safetensors`, each holding the
//! nonzero activations of latents `start..=end`:
//! - `locations`: `[n, 3]` of (row, position, latent − start), `u16` when every value fits, else
//!   `u32` (delphi's files may also hold `i32` or `i64`);
//! - `activations`: `[n]`, `f16` (`bf16` and `f32` are read too);
//! - `tokens` (optional): `[rows, ctx_len]` token ids, `i64` (any integer type is read).
//!
//! [`Split`] holds a whole split in memory, for tests and small caches.

mod read;
mod write;

use std::path::{Path, PathBuf};

use half::f16;

pub use read::{Activations, SplitReader, TokenIds};
pub use write::{LocationDtype, SplitLayout, SplitWriter};

use crate::{Error, Result};

/// The checkpoint of a cache being written, in its `latents` folder beside the hook point
/// folders: while it is there the cache is unfinished (still running, or stopped and resumable).
pub const CHECKPOINT_FILE: &str = ".checkpoint.json";

/// The folder of a hook point folder where nonzeros are spilled while its cache is written;
/// removed once its split files are.
pub const SPILL_DIR: &str = ".spill";

/// Where a latent fired: token `position` of cache `row`, latent `latent` (absolute index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Row of the token grid.
    pub row: u32,
    /// Position in the row.
    pub position: u32,
    /// Absolute latent index in the sparse coder.
    pub latent: u32,
}

/// The token grid of a cache: `rows × ctx_len` ids, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Number of rows.
    pub rows: usize,
    /// Tokens per row.
    pub ctx_len: usize,
    /// `rows * ctx_len` ids.
    pub ids: Vec<u32>,
}

impl Tokens {
    /// Row `r` of the grid.
    pub fn row(&self, r: usize) -> &[u32] {
        &self.ids[r * self.ctx_len..(r + 1) * self.ctx_len]
    }
}

/// The nonzero activations of latents `start..=end` (inclusive, as in delphi's file names).
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// First latent of the split.
    pub start: u32,
    /// Last latent of the split (inclusive).
    pub end: u32,
    /// Where each activation is; same length as `activations`.
    pub locations: Vec<Location>,
    /// The activations, as stored (rounded to f16).
    pub activations: Vec<f32>,
    /// The token grid, when saved.
    pub tokens: Option<Tokens>,
}

/// The latent ranges of `n_splits` splits of a coder of `width` latents, as delphi computes them:
/// boundaries at `floor(linspace(0, width, n_splits + 1))`, ends inclusive.
pub fn split_ranges(width: u32, n_splits: u32) -> Vec<(u32, u32)> {
    let n = n_splits.max(1) as u64;
    let bounds: Vec<u32> = (0..=n).map(|i| (width as u64 * i / n) as u32).collect();
    bounds
        .windows(2)
        .map(|w| (w[0], w[1].saturating_sub(1)))
        .collect()
}

/// The file name delphi gives a split: `<start>_<end>.safetensors`.
pub fn file_name(start: u32, end: u32) -> String {
    format!("{start}_{end}.safetensors")
}

/// Parses `<start>_<end>.safetensors`; `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".safetensors")?;
    let (a, b) = stem.split_once('_')?;
    let (start, end) = (a.parse().ok()?, b.parse().ok()?);
    (start <= end).then_some((start, end))
}

impl Split {
    /// Serialises the split to safetensors bytes in delphi's layout (what [`SplitWriter`]
    /// writes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let path = PathBuf::from(file_name(self.start, self.end));
        self.write(Vec::new(), &path)
    }

    /// Writes the split into `dir` under its delphi file name, atomically (temp file + rename), so
    /// a reader never sees a half-written split.
    pub fn write_to_dir(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(file_name(self.start, self.end));
        self.write(crate::fs::AtomicFile::create(&path)?, &path)?
            .commit()?;
        Ok(path)
    }

    fn write<W: std::io::Write>(&self, out: W, path: &Path) -> Result<W> {
        let bad = |problem: String| Error::BadTensor {
            path: path.to_path_buf(),
            tensor: "locations".into(),
            problem,
        };
        if self.locations.len() != self.activations.len() {
            return Err(bad(format!(
                "{} locations but {} activations",
                self.locations.len(),
                self.activations.len()
            )));
        }
        let mut max = 0;
        for l in &self.locations {
            if l.latent < self.start || l.latent > self.end {
                return Err(bad(format!(
                    "latent {} outside split {}..={}",
                    l.latent, self.start, self.end
                )));
            }
            max = max.max(l.row).max(l.position).max(l.latent - self.start);
        }
        let layout = SplitLayout {
            len: self.locations.len(),
            locations: LocationDtype::fitting(max),
            tokens: self.tokens.as_ref().map(|t| (t.rows, t.ctx_len)),
        };
        let mut w = SplitWriter::new(out, path, layout)?;
        for l in &self.locations {
            w.write_location(l.row, l.position, l.latent - self.start)?;
        }
        for &a in &self.activations {
            w.write_activation(f16::from_f32(a))?;
        }
        if let Some(t) = &self.tokens {
            w.write_tokens(&t.ids)?;
        }
        w.finish()
    }

    /// Reads a split file; its latent range comes from the file name.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_reader(&SplitReader::open(path)?)
    }

    /// Parses split bytes for latents `start..=end`; `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], start: u32, end: u32, path: &Path) -> Result<Self> {
        Self::from_reader(&SplitReader::from_bytes(bytes, start, end, path)?)
    }

    fn from_reader<B: AsRef<[u8]>>(reader: &SplitReader<B>) -> Result<Self> {
        let tokens = reader.tokens().map(|t| t.to_tokens()).transpose()?;
        // Without a token grid, rows and positions only have to fit in u32.
        let (rows, ctx_len) = tokens.as_ref().map_or((1 << 32, 1 << 32), |t| {
            ((t.rows as u64).min(1 << 32), t.ctx_len as u64)
        });
        let mut locations = Vec::with_capacity(reader.len());
        reader.for_each_location(rows, ctx_len, |_, row, position, offset| {
            locations.push(Location {
                row: row as u32,
                position,
                latent: reader.start() + offset,
            })
        })?;
        Ok(Self {
            start: reader.start(),
            end: reader.end(),
            locations,
            activations: reader.activations().to_vec(),
            tokens,
        })
    }
}

#[cfg(test)]
mod tests;
