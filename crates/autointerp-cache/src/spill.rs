use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use autointerp_core::fs::write_atomic;
use autointerp_core::split::{
    file_name, parse_file_name, split_ranges, LocationDtype, SplitLayout, SplitWriter, Tokens,
    SPILL_DIR,
};
use half::f16;

use crate::{Error, Result};

/// Bytes of one spilled nonzero: row, position, latent − split start (u32 each), value (f16).
const RECORD: usize = 14;

/// Where a spill stood at its last checkpoint: enough to resume it after a crash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Identifies the run; a checkpoint of another run is never resumed.
    pub fingerprint: String,
    /// Token rows fully spilled.
    pub rows_done: usize,
    /// Bytes of each split's spill file at the checkpoint.
    pub lengths: Vec<u64>,
}

/// Accumulates the nonzero latents of one hook point on disk, one append-only spill file per
/// split, and writes delphi's split files from them at the end.
///
/// Tokens must be pushed in (row, position) order, as a forward pass produces them; the split
/// files then list nonzeros sorted by (row, position, latent), exactly as delphi's do. After
/// [`SplitSpiller::checkpoint`], a killed run can [`SplitSpiller::open`] again and continue: spill
/// files are cut back to their checkpointed length, so the result is byte-identical to an
/// uninterrupted run.
#[derive(Debug)]
pub struct SplitSpiller {
    dir: PathBuf,
    width: u32,
    fingerprint: String,
    ranges: Vec<(u32, u32)>,
    spills: Vec<Spill>,
}

#[derive(Debug)]
struct Spill {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
}

/// Per-split results of [`SplitSpiller::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The split files written.
    pub files: Vec<PathBuf>,
    /// Tokens on which each latent fired.
    pub counts: Vec<u64>,
}

impl SplitSpiller {
    /// Starts spilling a coder of `width` latents into `n_splits` splits under `dir`, discarding
    /// any earlier spill there.
    pub fn create(dir: &Path, width: u32, n_splits: u32, fingerprint: &str) -> Result<Self> {
        Self::remove_spill(dir)?;
        Self::open_with(dir, width, n_splits, fingerprint, None)
    }

    /// Removes the spill folder under `dir`, if there is one.
    pub fn remove_spill(dir: &Path) -> Result<()> {
        let spill_dir = dir.join(SPILL_DIR);
        match std::fs::remove_dir_all(&spill_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                path: spill_dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Resumes the spill under `dir` from its last checkpoint when that checkpoint belongs to the
    /// same run (`fingerprint`), else starts afresh. Returns the spiller and the rows already done.
    pub fn open(dir: &Path, width: u32, n_splits: u32, fingerprint: &str) -> Result<(Self, usize)> {
        let path = dir.join(SPILL_DIR).join("checkpoint.json");
        let checkpoint: Option<Checkpoint> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|c: &Checkpoint| c.fingerprint == fingerprint);
        match checkpoint {
            Some(c) if c.lengths.len() == split_ranges(width, n_splits).len() => {
                let rows = c.rows_done;
                tracing::info!(dir = %dir.display(), rows, "resuming cache from checkpoint");
                Ok((
                    Self::open_with(dir, width, n_splits, fingerprint, Some(&c.lengths))?,
                    rows,
                ))
            }
            _ => Ok((Self::create(dir, width, n_splits, fingerprint)?, 0)),
        }
    }

    fn open_with(
        dir: &Path,
        width: u32,
        n_splits: u32,
        fingerprint: &str,
        lengths: Option<&[u64]>,
    ) -> Result<Self> {
        let spill_dir = dir.join(SPILL_DIR);
        std::fs::create_dir_all(&spill_dir).map_err(|source| Error::Io {
            path: spill_dir.clone(),
            source,
        })?;
        let ranges = split_ranges(width, n_splits);
        let spills = ranges
            .iter()
            .enumerate()
            .map(|(i, &(start, end))| {
                let path = spill_dir.join(format!("{start}_{end}.bin"));
                let io = |source| Error::Io { path: path.clone(), source };
                let len = lengths.map_or(0, |l| l.get(i).copied().unwrap_or(0));
                let file = OpenOptions::new().create(true).write(true).truncate(lengths.is_none()).open(&path).map_err(io)?;
                let on_disk = file.metadata().map_err(io)?.len();
                if on_disk < len {
                    return Err(Error::Io {
                        path: path.clone(),
                        source: std::io::Error::other(format!(
                            "spill file has {on_disk} bytes but the checkpoint recorded {len}; delete the output folder and rerun"
                        )),
                    });
                }
                // Whatever was appended after the checkpoint is cut off and spilled again.
                file.set_len(len).map_err(io)?;
                let mut out = BufWriter::with_capacity(1 << 20, file);
                std::io::Seek::seek(&mut out, std::io::SeekFrom::Start(len)).map_err(io)?;
                Ok(Spill { path, out, len })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            width,
            fingerprint: fingerprint.to_string(),
            ranges,
            spills,
        })
    }

    /// Number of latents of the coder.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Records the nonzero latents `(latent, value)` of one token; zeros are skipped.
    pub fn push_token(&mut self, row: u32, position: u32, latents: &[(u32, f32)]) -> Result<()> {
        let mut packed = Vec::with_capacity(latents.len());
        for &(latent, value) in latents {
            if value != 0.0 {
                packed.push(self.pack(i64::from(latent), value)?);
            }
        }
        let mut staged = vec![Vec::new(); self.spills.len()];
        self.stage_token(row, position, &mut packed, &mut staged);
        self.append(std::slice::from_ref(&staged))
    }

    /// Records a batch of rows at once: `indices` and `values` hold `k` entries per token, for
    /// every token of rows `first_row..` of `ctx_len` tokens, as a TopK encoder returns them
    /// (any order; value 0 = padding, negative indices are refused). With `skip_first`, position
    /// 0 of each row records nothing. The same as [`SplitSpiller::push_token`] per token, with
    /// one write per split instead of one per nonzero.
    pub fn push_rows(
        &mut self,
        first_row: u32,
        ctx_len: usize,
        k: usize,
        indices: &[i64],
        values: &[f32],
        skip_first: bool,
    ) -> Result<()> {
        if k == 0 {
            return Ok(());
        }
        let n_tokens = indices.len() / k;
        // Big batches are staged by several threads, each over its own run of tokens; their
        // bytes are then appended in token order, so the files do not depend on the threads.
        let threads = if n_tokens >= 4096 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
        } else {
            1
        };
        let per = n_tokens.div_ceil(threads);
        let stage = |part: usize| {
            let tokens = part * per..((part + 1) * per).min(n_tokens);
            self.stage(
                first_row,
                ctx_len,
                tokens.start,
                &indices[tokens.start * k..tokens.end * k],
                &values[tokens.start * k..tokens.end * k],
                k,
                skip_first,
            )
        };
        let parts: Vec<Result<Vec<Vec<u8>>>> = if threads == 1 {
            vec![stage(0)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|p| scope.spawn(move || stage(p)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::InvalidRun("a spill staging thread panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
        self.append(&parts)
    }

    /// Appends staged records, split by split, in the order of `parts`.
    fn append(&mut self, parts: &[Vec<Vec<u8>>]) -> Result<()> {
        for (s, spill) in self.spills.iter_mut().enumerate() {
            for part in parts {
                let bytes = &part[s];
                spill.out.write_all(bytes).map_err(|source| Error::Io {
                    path: spill.path.clone(),
                    source,
                })?;
                spill.len += bytes.len() as u64;
            }
        }
        Ok(())
    }

    /// The spill records of tokens `first_token..` of a batch (`k` latents each), per split.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        first_row: u32,
        ctx_len: usize,
        first_token: usize,
        indices: &[i64],
        values: &[f32],
        k: usize,
        skip_first: bool,
    ) -> Result<Vec<Vec<u8>>> {
        let mut staged = vec![
            Vec::with_capacity(indices.len() * RECORD / self.spills.len().max(1));
            self.spills.len()
        ];
        let mut token_latents: Vec<u64> = Vec::with_capacity(k);
        for (i, (idx, val)) in indices.chunks(k).zip(values.chunks(k)).enumerate() {
            let token = first_token + i;
            let position = (token % ctx_len) as u32;
            if skip_first && position == 0 {
                continue;
            }
            let row = first_row + (token / ctx_len) as u32;
            token_latents.clear();
            for (&i, &v) in idx.iter().zip(val) {
                if v != 0.0 {
                    token_latents.push(self.pack(i, v)?);
                }
            }
            self.stage_token(row, position, &mut token_latents, &mut staged);
        }
        Ok(staged)
    }

    /// `latent << 32 | value bits`, so that one integer sort orders a token's latents; refuses
    /// a latent outside the coder.
    fn pack(&self, latent: i64, value: f32) -> Result<u64> {
        let latent = u32::try_from(latent)
            .ok()
            .filter(|&l| l < self.width)
            .ok_or_else(|| Error::LatentOutOfRange {
                latent: u32::try_from(latent).unwrap_or(u32::MAX),
                width: self.width,
            })?;
        Ok(u64::from(latent) << 32 | u64::from(value.to_bits()))
    }

    /// Appends one token's records (its packed latents, sorted here) to each split's bytes.
    fn stage_token(&self, row: u32, position: u32, packed: &mut [u64], staged: &mut [Vec<u8>]) {
        packed.sort_unstable();
        for &p in packed.iter() {
            let (latent, value) = ((p >> 32) as u32, f32::from_bits(p as u32));
            let s = self.ranges.partition_point(|&(_, end)| end < latent);
            let rec = record(row, position, latent - self.ranges[s].0, value);
            staged[s].extend_from_slice(&rec);
        }
    }

    /// Makes everything pushed so far durable; returns each spill file's length, from which
    /// [`SplitSpiller::resume_at`] can continue.
    pub fn sync(&mut self) -> Result<Vec<u64>> {
        for spill in &mut self.spills {
            let io = |source| Error::Io {
                path: spill.path.clone(),
                source,
            };
            spill.out.flush().map_err(io)?;
            spill.out.get_ref().sync_data().map_err(io)?;
        }
        Ok(self.spills.iter().map(|s| s.len).collect())
    }

    /// Reopens a spill at lengths returned by [`SplitSpiller::sync`], cutting off anything
    /// appended after them. Fails if a spill file is shorter than its recorded length.
    pub fn resume_at(
        dir: &Path,
        width: u32,
        n_splits: u32,
        fingerprint: &str,
        lengths: &[u64],
    ) -> Result<Self> {
        let spiller = Self::open_with(dir, width, n_splits, fingerprint, Some(lengths))?;
        Ok(spiller)
    }

    /// Makes everything pushed so far durable and records that `rows_done` rows are complete,
    /// for [`SplitSpiller::open`].
    pub fn checkpoint(&mut self, rows_done: usize) -> Result<()> {
        let lengths = self.sync()?;
        let checkpoint = Checkpoint {
            fingerprint: self.fingerprint.clone(),
            rows_done,
            lengths,
        };
        let bytes = serde_json::to_vec(&checkpoint).unwrap_or_default();
        write_atomic(&self.dir.join(SPILL_DIR).join("checkpoint.json"), &bytes)?;
        Ok(())
    }

    /// Writes every split file (atomically), then removes the spill; returns the split paths and
    /// per-latent firing counts. If killed midway, reopening and finishing again is safe: the
    /// spill is only removed once every split is written.
    pub fn finish(mut self, tokens: Option<&Tokens>) -> Result<Finished> {
        let done = self.write_splits(tokens)?;
        let dir = self.dir.clone();
        drop(self); // closes the spill files
        Self::remove_spill(&dir)?;
        Ok(done)
    }

    /// Writes every split file (each atomically) and removes split files of other latent ranges
    /// (an earlier cache with another `n_splits`), keeping the spill: a caller that must record
    /// the splits as written before the spill goes (see [`crate::run`]) then removes it with
    /// [`SplitSpiller::remove_spill`]. Returns the split paths and per-latent firing counts.
    pub fn write_splits(&mut self, tokens: Option<&Tokens>) -> Result<Finished> {
        for spill in &mut self.spills {
            spill.out.flush().map_err(|source| Error::Io {
                path: spill.path.clone(),
                source,
            })?;
        }
        let mut counts = vec![0u64; self.width as usize];
        // Splits are independent files: written side by side, each with its latents' counts.
        let mut slices = Vec::with_capacity(self.ranges.len());
        let mut rest: &mut [u64] = &mut counts;
        for &(start, end) in &self.ranges {
            let (mine, after) = rest.split_at_mut((end - start) as usize + 1);
            slices.push(mine);
            rest = after;
        }
        let dir = &self.dir;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let mut jobs = self.spills.iter().zip(&self.ranges).zip(slices).peekable();
        let mut results: Vec<Result<PathBuf>> = Vec::with_capacity(self.spills.len());
        while jobs.peek().is_some() {
            let wave: Vec<_> = jobs.by_ref().take(threads).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = wave
                    .into_iter()
                    .map(|((spill, &(start, end)), counts)| {
                        scope.spawn(move || {
                            let target = dir.join(file_name(start, end));
                            let n = (spill.len / RECORD as u64) as usize;
                            write_split(&spill.path, n, tokens, &target, counts)?;
                            Ok(target)
                        })
                    })
                    .collect();
                results.extend(handles.into_iter().map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::InvalidRun("a split-writing thread panicked".into()))
                    })
                }));
            });
        }
        let files = results.into_iter().collect::<Result<Vec<_>>>()?;
        crate::run::fail_point("splits written")?;
        self.remove_other_splits()?;
        Ok(Finished { files, counts })
    }

    /// Removes the split files of `dir` whose latent ranges are not this spiller's: readers
    /// would take them for overlapping splits of this cache.
    fn remove_other_splits(&self) -> Result<()> {
        let io = |path: &Path, source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let path = entry.map_err(|e| io(&self.dir, e))?.path();
            let range = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_file_name);
            if range.is_some_and(|r| !self.ranges.contains(&r)) {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
        Ok(())
    }
}

/// One spilled nonzero, as [`RECORD`] bytes.
fn record(row: u32, position: u32, offset: u32, value: f32) -> [u8; RECORD] {
    let mut rec = [0u8; RECORD];
    rec[0..4].copy_from_slice(&row.to_le_bytes());
    rec[4..8].copy_from_slice(&position.to_le_bytes());
    rec[8..12].copy_from_slice(&offset.to_le_bytes());
    rec[12..14].copy_from_slice(&f16::from_f32(value).to_le_bytes());
    rec
}

/// Streams a spill file of `n` records into a split file: the layout is computed from the
/// count, then the spill is read three times (location widths, locations, activations), so
/// memory stays constant. `counts` (the split's latents) receives firing counts.
fn write_split(
    spill: &Path,
    n: usize,
    tokens: Option<&Tokens>,
    target: &Path,
    counts: &mut [u64],
) -> Result<()> {
    // The spill is read in chunks of records, three times over: sizes, locations, activations.
    const CHUNK: usize = 1 << 16;
    let for_each_chunk = |f: &mut dyn FnMut(&[u8]) -> Result<()>| -> Result<()> {
        let io = |source| Error::Io {
            path: spill.to_path_buf(),
            source,
        };
        let mut input = File::open(spill).map_err(io)?;
        let mut buf = vec![0u8; CHUNK * RECORD];
        let mut left = n;
        while left > 0 {
            let take = left.min(CHUNK);
            input.read_exact(&mut buf[..take * RECORD]).map_err(io)?;
            f(&buf[..take * RECORD])?;
            left -= take;
        }
        Ok(())
    };
    let field = |rec: &[u8], i: usize| {
        u32::from_le_bytes([rec[4 * i], rec[4 * i + 1], rec[4 * i + 2], rec[4 * i + 3]])
    };
    let mut max = 0;
    for_each_chunk(&mut |chunk| {
        for rec in chunk.chunks_exact(RECORD) {
            max = max.max(field(rec, 0)).max(field(rec, 1)).max(field(rec, 2));
            if let Some(c) = counts.get_mut(field(rec, 2) as usize) {
                *c += 1;
            }
        }
        Ok(())
    })?;

    let layout = SplitLayout {
        len: n,
        locations: LocationDtype::fitting(max),
        tokens: tokens.map(|t| (t.rows, t.ctx_len)),
    };
    let mut out = SplitWriter::create(target, layout)?;
    let mut locations = Vec::with_capacity(CHUNK);
    for_each_chunk(&mut |chunk| {
        locations.clear();
        locations.extend(
            chunk
                .chunks_exact(RECORD)
                .map(|rec| [field(rec, 0), field(rec, 1), field(rec, 2)]),
        );
        Ok(out.write_locations(&locations)?)
    })?;
    let mut values = Vec::with_capacity(CHUNK);
    for_each_chunk(&mut |chunk| {
        values.clear();
        values.extend(
            chunk
                .chunks_exact(RECORD)
                .map(|rec| f16::from_le_bytes([rec[12], rec[13]])),
        );
        Ok(out.write_activations(&values)?)
    })?;
    if let Some(t) = tokens {
        out.write_tokens(&t.ids)?;
    }
    out.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_core::split::{Location, Split};

    /// A batch big enough to be staged by several threads writes the same files as the same
    /// latents pushed one token at a time.
    #[test]
    fn batches_staged_in_parallel_write_what_single_tokens_write() {
        let (width, k, ctx_len, rows) = (300u32, 8usize, 64usize, 200usize);
        let n_tokens = rows * ctx_len;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut indices = Vec::with_capacity(n_tokens * k);
        let mut values = Vec::with_capacity(n_tokens * k);
        for _ in 0..n_tokens {
            let mut chosen: Vec<i64> = Vec::new();
            while chosen.len() < k {
                let l = (next() % u64::from(width)) as i64;
                if !chosen.contains(&l) {
                    chosen.push(l);
                }
            }
            indices.extend(chosen);
            // Some padding zeros, as a TopK coder with fewer than k positive latents gives.
            values.extend((0..k).map(|_| (next() % 5) as f32 * 0.25));
        }
        let tokens = Tokens {
            rows,
            ctx_len,
            ids: (0..n_tokens as u32).collect(),
        };
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut batched = SplitSpiller::create(dirs[0].path(), width, 3, "fp").unwrap();
        batched
            .push_rows(0, ctx_len, k, &indices, &values, true)
            .unwrap();
        let mut single = SplitSpiller::create(dirs[1].path(), width, 3, "fp").unwrap();
        for t in 0..n_tokens {
            if t % ctx_len == 0 {
                continue;
            }
            let pairs: Vec<(u32, f32)> = (0..k)
                .map(|j| (indices[t * k + j] as u32, values[t * k + j]))
                .collect();
            single
                .push_token((t / ctx_len) as u32, (t % ctx_len) as u32, &pairs)
                .unwrap();
        }
        let a = batched.finish(Some(&tokens)).unwrap();
        let b = single.finish(Some(&tokens)).unwrap();
        assert_eq!(a.counts, b.counts);
        for (x, y) in a.files.iter().zip(&b.files) {
            assert_eq!(
                std::fs::read(x).unwrap(),
                std::fs::read(y).unwrap(),
                "{}",
                x.display()
            );
        }
        assert!(a.counts.iter().sum::<u64>() > 0);
    }

    /// Deterministic pseudo-random firing pattern with unsorted latents and some zeros.
    fn fired(row: u32, pos: u32, width: u32) -> Vec<(u32, f32)> {
        (0..width)
            .rev()
            .filter(|l| (row * 7 + pos * 3 + l * 5).is_multiple_of(4))
            .map(|l| {
                (
                    l,
                    if l == 9 {
                        0.0
                    } else {
                        (row + pos + l) as f32 * 0.25
                    },
                )
            })
            .collect()
    }

    #[test]
    fn spilled_splits_equal_in_memory_splits() {
        let dir = tempfile::tempdir().unwrap();
        let width = 10;
        let mut spiller = SplitSpiller::create(dir.path(), width, 3, "run").unwrap();
        let mut want: Vec<(Location, f32)> = Vec::new();
        for row in 0..4u32 {
            for pos in 0..5u32 {
                let lat = fired(row, pos, width);
                spiller.push_token(row, pos, &lat).unwrap();
                let mut sorted = lat.clone();
                sorted.sort_by_key(|x| x.0);
                want.extend(
                    sorted
                        .into_iter()
                        .filter(|x| x.1 != 0.0)
                        .map(|(latent, v)| {
                            (
                                Location {
                                    row,
                                    position: pos,
                                    latent,
                                },
                                v,
                            )
                        }),
                );
            }
        }
        let tokens = Tokens {
            rows: 4,
            ctx_len: 5,
            ids: (0..20).collect(),
        };
        let done = spiller.finish(Some(&tokens)).unwrap();
        assert_eq!(done.files.len(), 3);
        assert!(!dir.path().join(".spill").exists());
        for latent in 0..width {
            let n = want.iter().filter(|(l, _)| l.latent == latent).count() as u64;
            assert_eq!(done.counts[latent as usize], n, "latent {latent}");
        }
        for (file, (start, end)) in done.files.iter().zip(split_ranges(width, 3)) {
            let split = Split::read(file).unwrap();
            let expect: Vec<_> = want
                .iter()
                .filter(|(l, _)| l.latent >= start && l.latent <= end)
                .collect();
            assert_eq!(
                split.locations,
                expect.iter().map(|x| x.0).collect::<Vec<_>>()
            );
            assert_eq!(
                split.activations,
                expect.iter().map(|x| x.1).collect::<Vec<_>>()
            );
            assert_eq!(split.tokens.as_ref(), Some(&tokens));
        }
    }

    #[test]
    fn resuming_from_a_checkpoint_gives_identical_files() {
        let width = 10;
        let tokens = Tokens {
            rows: 6,
            ctx_len: 5,
            ids: (0..30).collect(),
        };
        let push_rows = |s: &mut SplitSpiller, rows: std::ops::Range<u32>| {
            for row in rows {
                for pos in 0..5 {
                    s.push_token(row, pos, &fired(row, pos, width)).unwrap();
                }
            }
        };
        let straight = tempfile::tempdir().unwrap();
        let mut s = SplitSpiller::create(straight.path(), width, 2, "run").unwrap();
        push_rows(&mut s, 0..6);
        let want = s.finish(Some(&tokens)).unwrap();

        let resumed = tempfile::tempdir().unwrap();
        let mut s = SplitSpiller::create(resumed.path(), width, 2, "run").unwrap();
        push_rows(&mut s, 0..3);
        s.checkpoint(3).unwrap();
        push_rows(&mut s, 3..5); // spilled but never checkpointed: lost in the "crash"
        drop(s);
        // Another run's checkpoint is not resumed.
        let (_, rows) = SplitSpiller::open(resumed.path(), width, 2, "other").unwrap();
        assert_eq!(rows, 0);
        let mut s = SplitSpiller::create(resumed.path(), width, 2, "run").unwrap();
        push_rows(&mut s, 0..3);
        s.checkpoint(3).unwrap();
        push_rows(&mut s, 3..5);
        drop(s);
        let (mut s, rows) = SplitSpiller::open(resumed.path(), width, 2, "run").unwrap();
        assert_eq!(rows, 3);
        push_rows(&mut s, 3..6);
        let got = s.finish(Some(&tokens)).unwrap();
        assert_eq!(got.counts, want.counts);
        for (a, b) in want.files.iter().zip(&got.files) {
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        }
    }

    #[test]
    fn out_of_range_latents_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut spiller = SplitSpiller::create(dir.path(), 4, 2, "run").unwrap();
        let err = spiller
            .push_token(0, 0, &[(4, 1.0)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("latent 4") && err.contains("width 4"), "{err}");
    }
}
