use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use autointerp_core::split::{file_name, split_ranges, Tokens};
use half::f16;

use crate::{Error, Result};

/// Bytes of one spilled nonzero: row, position, latent − split start (u32 each), value (f16).
const RECORD: usize = 14;

/// Accumulates the nonzero latents of one hook point on disk, one spill file per split, and
/// writes delphi's split files from them at the end.
///
/// Tokens must be pushed in (row, position) order, as a forward pass produces them; the split
/// files then list nonzeros sorted by (row, position, latent), exactly as delphi's do.
#[derive(Debug)]
pub struct SplitSpiller {
    dir: PathBuf,
    width: u32,
    ranges: Vec<(u32, u32)>,
    spills: Vec<Spill>,
    scratch: Vec<(u32, f32)>,
}

#[derive(Debug)]
struct Spill {
    path: PathBuf,
    out: BufWriter<File>,
    count: u64,
    /// Whether every location value fits in u16 (then delphi stores locations as u16).
    small: bool,
}

impl SplitSpiller {
    /// Starts spilling a coder of `width` latents into `n_splits` splits under `dir`.
    pub fn create(dir: &Path, width: u32, n_splits: u32) -> Result<Self> {
        let spill_dir = dir.join(".spill");
        std::fs::create_dir_all(&spill_dir).map_err(|source| Error::Io {
            path: spill_dir.clone(),
            source,
        })?;
        let ranges = split_ranges(width, n_splits);
        let spills = ranges
            .iter()
            .map(|&(start, end)| {
                let path = spill_dir.join(format!("{start}_{end}.bin"));
                let file = File::create(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok(Spill {
                    path,
                    out: BufWriter::with_capacity(1 << 20, file),
                    count: 0,
                    small: true,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            width,
            ranges,
            spills,
            scratch: Vec::new(),
        })
    }

    /// Records the nonzero latents `(latent, value)` of one token; zeros are skipped.
    pub fn push_token(&mut self, row: u32, position: u32, latents: &[(u32, f32)]) -> Result<()> {
        self.scratch.clear();
        self.scratch
            .extend(latents.iter().copied().filter(|&(_, v)| v != 0.0));
        self.scratch.sort_unstable_by_key(|&(l, _)| l);
        for &(latent, value) in &self.scratch {
            if latent >= self.width {
                return Err(Error::LatentOutOfRange {
                    latent,
                    width: self.width,
                });
            }
            let s = self.ranges.partition_point(|&(_, end)| end < latent);
            let offset = latent - self.ranges[s].0;
            let spill = &mut self.spills[s];
            let mut rec = [0u8; RECORD];
            rec[0..4].copy_from_slice(&row.to_le_bytes());
            rec[4..8].copy_from_slice(&position.to_le_bytes());
            rec[8..12].copy_from_slice(&offset.to_le_bytes());
            rec[12..14].copy_from_slice(&f16::from_f32(value).to_le_bytes());
            spill.out.write_all(&rec).map_err(|source| Error::Io {
                path: spill.path.clone(),
                source,
            })?;
            spill.count += 1;
            spill.small &= row < 1 << 16 && position < 1 << 16 && offset < 1 << 16;
        }
        Ok(())
    }

    /// Writes every split file (atomically) and removes the spill files; returns the split paths.
    pub fn finish(self, tokens: Option<&Tokens>) -> Result<Vec<PathBuf>> {
        let mut written = Vec::with_capacity(self.spills.len());
        for (spill, &(start, end)) in self.spills.into_iter().zip(&self.ranges) {
            let Spill {
                path,
                out,
                count,
                small,
            } = spill;
            out.into_inner()
                .map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e.into_error(),
                })?
                .sync_all()
                .map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
            let target = self.dir.join(file_name(start, end));
            write_split(&path, count, small, tokens, &target)?;
            std::fs::remove_file(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            written.push(target);
        }
        let spill_dir = self.dir.join(".spill");
        // Only removes the folder when empty: anything else in it is not ours to delete.
        let _ = std::fs::remove_dir(spill_dir);
        Ok(written)
    }
}

/// Streams a spill file into a safetensors split file: the header is computed from the count, then
/// the spill is read twice (locations, then activations), so memory stays constant.
fn write_split(
    spill: &Path,
    count: u64,
    small: bool,
    tokens: Option<&Tokens>,
    target: &Path,
) -> Result<()> {
    let n = count as usize;
    let loc_width = if small { 2 } else { 4 };
    let loc_bytes = n * 3 * loc_width;
    let act_bytes = n * 2;
    let mut header = serde_json::Map::new();
    let mut entry = |name: &str, dtype: &str, shape: Vec<usize>, begin: usize, len: usize| {
        header.insert(
            name.into(),
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [begin, begin + len] }),
        );
        begin + len
    };
    let mut end = entry(
        "locations",
        if small { "U16" } else { "U32" },
        vec![n, 3],
        0,
        loc_bytes,
    );
    end = entry("activations", "F16", vec![n], end, act_bytes);
    if let Some(t) = tokens {
        entry(
            "tokens",
            "I64",
            vec![t.rows, t.ctx_len],
            end,
            t.ids.len() * 8,
        );
    }
    let mut header = serde_json::to_vec(&header).unwrap_or_default();
    // Pad so the data starts 8-byte aligned, as the safetensors writer does.
    while header.len() % 8 != 0 {
        header.push(b' ');
    }

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let tmp = target.with_extension("safetensors.tmp");
    let result = (|| -> Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io(&tmp))?);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io(&tmp))?;
        out.write_all(&header).map_err(io(&tmp))?;
        for pass in 0..2 {
            let mut input =
                BufReader::with_capacity(1 << 20, File::open(spill).map_err(io(spill))?);
            let mut rec = [0u8; RECORD];
            for _ in 0..n {
                input.read_exact(&mut rec).map_err(io(spill))?;
                if pass == 1 {
                    out.write_all(&rec[12..14]).map_err(io(&tmp))?;
                } else if small {
                    for field in rec[..12].chunks_exact(4) {
                        out.write_all(&field[..2]).map_err(io(&tmp))?;
                    }
                } else {
                    out.write_all(&rec[..12]).map_err(io(&tmp))?;
                }
            }
        }
        if let Some(t) = tokens {
            for &id in &t.ids {
                out.write_all(&i64::from(id).to_le_bytes())
                    .map_err(io(&tmp))?;
            }
        }
        let file = out.into_inner().map_err(|e| Error::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, target).map_err(io(target))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_core::split::{Location, Split};

    #[test]
    fn spilled_splits_equal_in_memory_splits() {
        let dir = tempfile::tempdir().unwrap();
        let width = 10;
        let mut spiller = SplitSpiller::create(dir.path(), width, 3).unwrap();
        let mut want: Vec<(Location, f32)> = Vec::new();
        for row in 0..4u32 {
            for pos in 0..5u32 {
                // Deterministic pseudo-random firing pattern, unsorted latents, some zeros.
                let lat: Vec<(u32, f32)> = (0..width)
                    .rev()
                    .filter(|l| (row * 7 + pos * 3 + l * 5) % 4 == 0)
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
                    .collect();
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
        let files = spiller.finish(Some(&tokens)).unwrap();
        assert_eq!(files.len(), 3);
        assert!(!dir.path().join(".spill").exists());
        for (file, (start, end)) in files.iter().zip(split_ranges(width, 3)) {
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
            // The streamed file must be exactly what the in-memory writer produces.
            let same = Split {
                start,
                end,
                ..split.clone()
            }
            .to_bytes()
            .unwrap();
            assert_eq!(Split::from_bytes(&same, start, end, file).unwrap(), split);
        }
    }

    #[test]
    fn out_of_range_latents_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut spiller = SplitSpiller::create(dir.path(), 4, 2).unwrap();
        let err = spiller
            .push_token(0, 0, &[(4, 1.0)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("latent 4") && err.contains("width 4"), "{err}");
    }
}
