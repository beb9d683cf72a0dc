//! The memory-mapped reader of split files.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;

use super::{parse_file_name, Tokens};
use crate::{Error, Result};

/// An integer dtype a split file may store locations or tokens in (delphi writes `u16` or
/// `i32`/`i64` depending on its version and the values; we write `u16`/`u32` and `i64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Int {
    U16,
    U32,
    I32,
    I64,
    U64,
}

/// A float dtype activations may be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Float {
    F16,
    Bf16,
    F32,
}

impl Int {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "U16" => Self::U16,
            "U32" => Self::U32,
            "I32" => Self::I32,
            "I64" => Self::I64,
            "U64" => Self::U64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 | Self::I32 => 4,
            Self::I64 | Self::U64 => 8,
        }
    }

    /// Calls `f(i, values)` for each group `i` of `N` values in `data` (stored as `self`), as
    /// `i64`s (a `u64` beyond `i64` reads as `i64::MAX`, out of every range anyway); the first
    /// error stops the walk.
    #[inline]
    fn walk<const N: usize, E>(
        self,
        data: &[u8],
        f: impl FnMut(usize, [i64; N]) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Self::U16 => walk(data, |b| i64::from(u16::from_le_bytes(b)), f),
            Self::U32 => walk(data, |b| i64::from(u32::from_le_bytes(b)), f),
            Self::I32 => walk(data, |b| i64::from(i32::from_le_bytes(b)), f),
            Self::I64 => walk(data, i64::from_le_bytes, f),
            Self::U64 => walk(
                data,
                |b| i64::try_from(u64::from_le_bytes(b)).unwrap_or(i64::MAX),
                f,
            ),
        }
    }
}

/// [`Int::walk`] for values of `W` bytes, each decoded by `conv`.
#[inline]
fn walk<const W: usize, const N: usize, E>(
    data: &[u8],
    conv: impl Fn([u8; W]) -> i64,
    mut f: impl FnMut(usize, [i64; N]) -> Result<(), E>,
) -> Result<(), E> {
    for (i, group) in data.chunks_exact(W * N).enumerate() {
        let values = std::array::from_fn(|k| {
            let mut b = [0u8; W];
            b.copy_from_slice(&group[k * W..(k + 1) * W]);
            conv(b)
        });
        f(i, values)?;
    }
    Ok(())
}

impl Float {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "F16" => Self::F16,
            "BF16" => Self::Bf16,
            "F32" => Self::F32,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F16 | Self::Bf16 => 2,
            Self::F32 => 4,
        }
    }
}

/// One header entry of a safetensors file.
#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// Where the tensors of a split lie in its bytes, checked against the file.
#[derive(Debug, Clone)]
struct Layout {
    len: usize,
    locations: (Int, Range<usize>),
    activations: (Float, Range<usize>),
    /// `rows, ctx_len` and the ids.
    tokens: Option<(usize, usize, Int, Range<usize>)>,
}

/// A split file read in place: its bytes are memory-mapped (or borrowed) and each value is
/// decoded when asked for, whatever dtype the file stores it in.
///
/// Opening checks everything but the values: the header's sizes against the file's length, that
/// `locations` `[n, 3]` (any integer dtype), `activations` `[n]` (f16, bf16 or f32) and the
/// optional `tokens` `[rows, ctx_len]` (any integer dtype) are there with the right dtypes and
/// shapes. Values are checked as they are read ([`SplitReader::for_each_location`],
/// [`TokenIds::append_to`]). A malformed or truncated file is an error naming the file and the
/// tensor, never a panic.
///
/// ```
/// use autointerp_core::split::{Location, Split, SplitReader, Tokens};
///
/// # fn main() -> autointerp_core::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let locations = vec![Location { row: 0, position: 2, latent: 5 }];
/// let tokens = Some(Tokens { rows: 1, ctx_len: 3, ids: vec![7, 8, 9] });
/// let split = Split { start: 4, end: 7, locations, activations: vec![2.0], tokens };
/// let path = split.write_to_dir(dir.path())?;
///
/// let reader = SplitReader::open(&path)?;
/// assert_eq!((reader.start(), reader.end(), reader.len()), (4, 7, 1));
/// reader.for_each_location(1, 3, |i, row, position, offset| {
///     assert_eq!((i, row, position, offset), (0, 0, 2, 1));
/// })?;
/// assert_eq!(reader.activations().get(0), 2.0);
/// assert_eq!(reader.tokens().unwrap().to_tokens()?.ids, vec![7, 8, 9]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SplitReader<B = Mmap> {
    bytes: B,
    path: PathBuf,
    start: u32,
    end: u32,
    layout: Layout,
}

impl SplitReader {
    /// Maps the split file `path`; its latent range comes from its name,
    /// `<start>_<end>.safetensors`.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let (start, end) = parse_file_name(name).ok_or_else(|| Error::BadSplit {
            path: path.to_path_buf(),
            problem: "the file name is not `<start>_<end>.safetensors`".into(),
        })?;
        Self::from_bytes(map(path)?, start, end, path)
    }
}

/// Maps a file into memory.
#[allow(unsafe_code)]
fn map(path: &Path) -> Result<Mmap> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is only read, and split files are never modified in place: delphi writes
    // each one once, and autointerp writes them to a temporary file renamed into place, so a
    // writer replaces the directory entry, not the bytes mapped here. Truncating a split file
    // while it is being read (outside both tools) would fault this process, the known limit of
    // reading files through a memory map.
    unsafe { Mmap::map(&file) }.map_err(io)
}

impl<B: AsRef<[u8]>> SplitReader<B> {
    /// Reads the split of latents `start..=end` held in `bytes`; `path` names it in errors.
    pub fn from_bytes(bytes: B, start: u32, end: u32, path: &Path) -> Result<Self> {
        let layout = parse(bytes.as_ref(), path)?;
        Ok(Self {
            bytes,
            path: path.to_path_buf(),
            start,
            end,
            layout,
        })
    }

    /// The file, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// First latent of the split.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Last latent of the split (inclusive).
    pub fn end(&self) -> u32 {
        self.end
    }

    /// Number of nonzero activations.
    pub fn len(&self) -> usize {
        self.layout.len
    }

    /// Whether the split holds no activation.
    pub fn is_empty(&self) -> bool {
        self.layout.len == 0
    }

    /// Calls `f(index, row, position, latent_offset)` for every location, in file order,
    /// checking each against the `rows × ctx_len` token grid and the split's latent range; the
    /// first location outside them is an error.
    pub fn for_each_location(
        &self,
        rows: u64,
        ctx_len: u64,
        mut f: impl FnMut(usize, u64, u32, u32),
    ) -> Result<()> {
        let (dtype, range) = &self.layout.locations;
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        let ctx = i64::try_from(ctx_len).unwrap_or(i64::MAX).min(1 << 32);
        let max_off = i64::from(self.end.saturating_sub(self.start));
        let visit = |i: usize, [row, pos, off]: [i64; 3]| {
            if !(0..rows).contains(&row) || !(0..ctx).contains(&pos) {
                return Err(format!(
                    "location {i} at ({row}, {pos}) is outside the {rows}×{ctx_len} token grid"
                ));
            }
            if !(0..=max_off).contains(&off) {
                return Err(format!(
                    "location {i} holds latent offset {off}, outside the split's 0..={max_off}"
                ));
            }
            f(i, row as u64, pos as u32, off as u32);
            Ok(())
        };
        dtype
            .walk(&self.bytes.as_ref()[range.clone()], visit)
            .map_err(|problem| self.bad("locations", problem))
    }

    /// The activations, decoded on access.
    pub fn activations(&self) -> Activations<'_> {
        let (dtype, range) = &self.layout.activations;
        Activations {
            dtype: *dtype,
            data: &self.bytes.as_ref()[range.clone()],
        }
    }

    /// The token grid, when the file holds one.
    pub fn tokens(&self) -> Option<TokenIds<'_>> {
        let (rows, ctx_len, dtype, range) = self.layout.tokens.clone()?;
        Some(TokenIds {
            rows,
            ctx_len,
            dtype,
            data: &self.bytes.as_ref()[range],
            path: &self.path,
        })
    }

    fn bad(&self, tensor: &str, problem: String) -> Error {
        Error::BadTensor {
            path: self.path.clone(),
            tensor: tensor.into(),
            problem,
        }
    }
}

/// The activations of a split, decoded to `f32` on access.
#[derive(Debug, Clone, Copy)]
pub struct Activations<'a> {
    dtype: Float,
    data: &'a [u8],
}

impl Activations<'_> {
    /// Number of activations.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Activation `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        let d = self.data;
        match self.dtype {
            Float::F16 => f16::from_le_bytes([d[2 * i], d[2 * i + 1]]).to_f32(),
            Float::Bf16 => bf16::from_le_bytes([d[2 * i], d[2 * i + 1]]).to_f32(),
            Float::F32 => f32::from_le_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]]),
        }
    }

    /// Every activation, in file order.
    pub fn to_vec(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// The token grid of a split file, as stored.
#[derive(Debug, Clone, Copy)]
pub struct TokenIds<'a> {
    rows: usize,
    ctx_len: usize,
    dtype: Int,
    data: &'a [u8],
    path: &'a Path,
}

impl TokenIds<'_> {
    /// Rows of the grid.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Tokens per row.
    pub fn ctx_len(&self) -> usize {
        self.ctx_len
    }

    /// Appends the ids, row-major, to `out`; a negative id or one beyond `u32` is an error.
    pub fn append_to(&self, out: &mut Vec<u32>) -> Result<()> {
        out.reserve(self.data.len() / self.dtype.size());
        self.dtype.walk(self.data, |_, [id]| {
            out.push(u32::try_from(id).map_err(|_| Error::BadTensor {
                path: self.path.to_path_buf(),
                tensor: "tokens".into(),
                problem: format!("holds {id}, not a token id"),
            })?);
            Ok(())
        })
    }

    /// The grid as [`Tokens`].
    pub fn to_tokens(&self) -> Result<Tokens> {
        let mut ids = Vec::new();
        self.append_to(&mut ids)?;
        Ok(Tokens {
            rows: self.rows,
            ctx_len: self.ctx_len,
            ids,
        })
    }
}

/// Checks a split file's header against its length and finds its tensors.
fn parse(bytes: &[u8], path: &Path) -> Result<Layout> {
    let bad_split = |problem: String| Error::BadSplit {
        path: path.to_path_buf(),
        problem,
    };
    let bad = |tensor: &str, problem: String| Error::BadTensor {
        path: path.to_path_buf(),
        tensor: tensor.into(),
        problem,
    };
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(bad_split(format!(
            "{} bytes, too short for a safetensors file (truncated?)",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    let header_len = usize::try_from(header_len)
        .ok()
        .filter(|&n| n <= rest.len())
        .ok_or_else(|| {
            bad_split(format!(
                "the header claims {header_len} bytes, but only {} follow its length (truncated?)",
                rest.len()
            ))
        })?;
    let (header, data) = rest.split_at(header_len);
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| bad_split(format!("the header is not a safetensors header: {e}")))?;
    // Every tensor's bytes must lie in the data, and the data must end with the last tensor.
    let mut parsed = BTreeMap::new();
    let mut data_end = 0;
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let entry: Entry = serde_json::from_value(value)
            .map_err(|e| bad(&name, format!("malformed header entry: {e}")))?;
        let [begin, end] = entry.data_offsets;
        if begin > end || end > data.len() {
            return Err(bad(
                &name,
                format!(
                    "data_offsets [{begin}, {end}] lie outside the file's {} bytes of data (truncated?)",
                    data.len()
                ),
            ));
        }
        data_end = data_end.max(end);
        parsed.insert(name, entry);
    }
    if data_end != data.len() {
        return Err(bad_split(format!(
            "{} bytes of data, but the tensors end at byte {data_end}",
            data.len()
        )));
    }
    let data_start = 8 + header_len;

    // The bytes of tensor `name`, checked against its dtype and shape.
    let tensor = |name: &str, size: usize, entry: &Entry| {
        let [begin, end] = entry.data_offsets;
        let need = entry
            .shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d));
        if need != Some(end - begin) {
            return Err(bad(
                name,
                format!(
                    "shape {:?} of {} does not fill data_offsets [{begin}, {end}] ({} bytes)",
                    entry.shape,
                    entry.dtype,
                    end - begin
                ),
            ));
        }
        Ok(data_start + begin..data_start + end)
    };
    let get = |name: &str| parsed.get(name).ok_or_else(|| bad(name, "missing".into()));
    let int = |name: &str, entry: &Entry| {
        Int::parse(&entry.dtype).ok_or_else(|| {
            bad(
                name,
                format!(
                    "dtype {}, expected an integer type (U16, U32, I32, I64 or U64)",
                    entry.dtype
                ),
            )
        })
    };

    let loc = get("locations")?;
    let len = match loc.shape[..] {
        [n, 3] => n,
        ref s => return Err(bad("locations", format!("shape {s:?}, expected [n, 3]"))),
    };
    let loc_dtype = int("locations", loc)?;
    let locations = (loc_dtype, tensor("locations", loc_dtype.size(), loc)?);

    let act = get("activations")?;
    if act.shape != [len] {
        return Err(bad(
            "activations",
            format!("shape {:?}, expected [{len}]", act.shape),
        ));
    }
    let act_dtype = Float::parse(&act.dtype).ok_or_else(|| {
        bad(
            "activations",
            format!("dtype {}, expected F16, BF16 or F32", act.dtype),
        )
    })?;
    let activations = (act_dtype, tensor("activations", act_dtype.size(), act)?);

    let tokens = match parsed.get("tokens") {
        None => None,
        Some(t) => {
            let (rows, ctx_len) = match t.shape[..] {
                [rows, ctx_len] if ctx_len > 0 => (rows, ctx_len),
                ref s => {
                    return Err(bad(
                        "tokens",
                        format!("shape {s:?}, expected [rows, ctx_len]"),
                    ))
                }
            };
            let dtype = int("tokens", t)?;
            Some((rows, ctx_len, dtype, tensor("tokens", dtype.size(), t)?))
        }
    };
    Ok(Layout {
        len,
        locations,
        activations,
        tokens,
    })
}
