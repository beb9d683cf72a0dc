//! The split files of a latent cache, byte-compatible with delphi's `LatentCache.save_splits`.
//!
//! A cache of one hook point is a folder of files `<start>_<end>.safetensors`, each holding the
//! nonzero activations of latents `start..=end`:
//! - `locations`: `[n, 3]` of (row, position, latent − start), `u16` when every value fits, else
//!   `u32`;
//! - `activations`: `[n]`, `f16`;
//! - `tokens` (optional): `[rows, ctx_len]` token ids, `i64`.

use std::path::{Path, PathBuf};

use half::f16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Error, Result};

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
    /// Serialises the split to safetensors bytes in delphi's layout.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bad = |problem: String| Error::BadTensor {
            path: PathBuf::from(file_name(self.start, self.end)),
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
        let mut flat = Vec::with_capacity(self.locations.len() * 3);
        for l in &self.locations {
            if l.latent < self.start || l.latent > self.end {
                return Err(bad(format!(
                    "latent {} outside split {}..={}",
                    l.latent, self.start, self.end
                )));
            }
            flat.extend([l.row, l.position, l.latent - self.start]);
        }
        let n = self.locations.len();
        let small = flat.iter().all(|&v| v < 1 << 16);
        let loc_bytes: Vec<u8> = if small {
            flat.iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect()
        } else {
            flat.iter().flat_map(|&v| v.to_le_bytes()).collect()
        };
        let act_bytes: Vec<u8> = self
            .activations
            .iter()
            .flat_map(|&a| f16::from_f32(a).to_le_bytes())
            .collect();
        let tok_bytes: Option<Vec<u8>> = self.tokens.as_ref().map(|t| {
            t.ids
                .iter()
                .flat_map(|&id| i64::from(id).to_le_bytes())
                .collect()
        });

        fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>, String> {
            TensorView::new(dtype, shape, data).map_err(|e| e.to_string())
        }
        let mut tensors = vec![
            (
                "locations",
                view(
                    if small { Dtype::U16 } else { Dtype::U32 },
                    vec![n, 3],
                    &loc_bytes,
                )
                .map_err(bad)?,
            ),
            (
                "activations",
                view(Dtype::F16, vec![n], &act_bytes).map_err(bad)?,
            ),
        ];
        if let (Some(t), Some(bytes)) = (&self.tokens, &tok_bytes) {
            tensors.push((
                "tokens",
                view(Dtype::I64, vec![t.rows, t.ctx_len], bytes).map_err(bad)?,
            ));
        }
        safetensors::serialize(tensors, None).map_err(|source| Error::Safetensors {
            path: PathBuf::from(file_name(self.start, self.end)),
            source,
        })
    }

    /// Writes the split into `dir` under its delphi file name, atomically (temp file + rename), so
    /// a reader never sees a half-written split.
    pub fn write_to_dir(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(file_name(self.start, self.end));
        let bytes = self.to_bytes()?;
        crate::fs::write_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// Reads a split file; its latent range comes from the file name.
    pub fn read(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let (start, end) = parse_file_name(name).ok_or_else(|| Error::BadTensor {
            path: path.to_path_buf(),
            tensor: String::new(),
            problem: "file name is not `<start>_<end>.safetensors`".into(),
        })?;
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, start, end, path)
    }

    /// Parses split bytes for latents `start..=end`; `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], start: u32, end: u32, path: &Path) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|source| Error::Safetensors {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |tensor: &str, problem: String| Error::BadTensor {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            problem,
        };
        let get = |name: &str| st.tensor(name).map_err(|_| bad(name, "missing".into()));

        let loc = get("locations")?;
        let n = match loc.shape() {
            [n, 3] => *n,
            s => return Err(bad("locations", format!("shape {s:?}, expected [n, 3]"))),
        };
        let flat =
            read_uints(&loc).ok_or_else(|| bad("locations", format!("dtype {:?}", loc.dtype())))?;
        let width = end - start;
        let mut locations = Vec::with_capacity(n);
        for c in flat.chunks_exact(3) {
            if c[2] > width {
                return Err(bad(
                    "locations",
                    format!("latent offset {} beyond split {start}_{end}", c[2]),
                ));
            }
            locations.push(Location {
                row: c[0],
                position: c[1],
                latent: start + c[2],
            });
        }

        let act = get("activations")?;
        if act.shape() != [n] {
            return Err(bad(
                "activations",
                format!("shape {:?}, expected [{n}]", act.shape()),
            ));
        }
        let activations = read_floats(&act)
            .ok_or_else(|| bad("activations", format!("dtype {:?}", act.dtype())))?;

        let tokens = match st.tensor("tokens") {
            Err(_) => None,
            Ok(t) => {
                let (rows, ctx_len) = match t.shape() {
                    [r, c] => (*r, *c),
                    s => {
                        return Err(bad(
                            "tokens",
                            format!("shape {s:?}, expected [rows, ctx_len]"),
                        ))
                    }
                };
                let ids = read_uints(&t)
                    .ok_or_else(|| bad("tokens", format!("dtype {:?}", t.dtype())))?;
                Some(Tokens { rows, ctx_len, ids })
            }
        };
        if let Some(t) = &tokens {
            if let Some(l) = locations
                .iter()
                .find(|l| l.row as usize >= t.rows || l.position as usize >= t.ctx_len)
            {
                return Err(bad(
                    "locations",
                    format!(
                        "({}, {}) outside the {}×{} token grid",
                        l.row, l.position, t.rows, t.ctx_len
                    ),
                ));
            }
        }
        Ok(Self {
            start,
            end,
            locations,
            activations,
            tokens,
        })
    }
}

/// Integer tensors as u32 (token ids and locations are never negative nor above u32).
fn read_uints(t: &TensorView<'_>) -> Option<Vec<u32>> {
    let d = t.data();
    Some(match t.dtype() {
        Dtype::U16 => d
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
            .collect(),
        Dtype::U32 => d
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|b| u32::try_from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok())
            .collect::<Option<_>>()?,
        Dtype::I64 | Dtype::U64 => d
            .chunks_exact(8)
            .map(|b| {
                let v = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                u32::try_from(v).ok()
            })
            .collect::<Option<_>>()?,
        _ => return None,
    })
}

fn read_floats(t: &TensorView<'_>) -> Option<Vec<f32>> {
    let d = t.data();
    Some(match t.dtype() {
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(big: bool) -> Split {
        let row = if big { 70_000 } else { 1 };
        Split {
            start: 100,
            end: 199,
            locations: vec![
                Location {
                    row: 0,
                    position: 3,
                    latent: 100,
                },
                Location {
                    row,
                    position: 0,
                    latent: 199,
                },
            ],
            activations: vec![1.5, 0.25],
            tokens: (!big).then(|| Tokens {
                rows: 2,
                ctx_len: 4,
                ids: vec![5, 6, 7, 8, 9, 10, 11, 12],
            }),
        }
    }

    #[test]
    fn ranges_match_delphi_linspace() {
        // torch.linspace(0, 10, 4).long() == [0, 3, 6, 10]
        assert_eq!(split_ranges(10, 3), vec![(0, 2), (3, 5), (6, 9)]);
        assert_eq!(split_ranges(131_072, 5)[4], (104_857, 131_071));
        assert_eq!(parse_file_name("3_5.safetensors"), Some((3, 5)));
        assert_eq!(parse_file_name("5_3.safetensors"), None);
        assert_eq!(parse_file_name("config.json"), None);
    }

    #[test]
    fn round_trip_small_and_wide_locations() {
        let dir = tempfile::tempdir().unwrap();
        for big in [false, true] {
            let split = sample(big);
            let path = split.write_to_dir(dir.path()).unwrap();
            let st_bytes = std::fs::read(&path).unwrap();
            let st = SafeTensors::deserialize(&st_bytes).unwrap();
            let want = if big { Dtype::U32 } else { Dtype::U16 };
            assert_eq!(st.tensor("locations").unwrap().dtype(), want);
            assert_eq!(Split::read(&path).unwrap(), split);
        }
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(false).write_to_dir(dir.path()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let msg = Split::read(&path).unwrap_err().to_string();
        assert!(msg.contains("100_199.safetensors"), "{msg}");

        let mut split = sample(false);
        split.locations[0].latent = 5;
        assert!(split
            .to_bytes()
            .unwrap_err()
            .to_string()
            .contains("outside split"));
    }
}
