//! The streaming writer of split files.

use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;

use crate::fs::AtomicFile;
use crate::{Error, Result};

/// How a split file stores its locations: delphi picks `u16` when every row, position and latent
/// offset fits, else `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationDtype {
    /// 2 bytes a value.
    U16,
    /// 4 bytes a value.
    U32,
}

impl LocationDtype {
    /// The type delphi stores values up to `max` in.
    pub fn fitting(max: u32) -> Self {
        if max < 1 << 16 {
            Self::U16
        } else {
            Self::U32
        }
    }

    fn size(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::U16 => "U16",
            Self::U32 => "U32",
        }
    }
}

/// What a split file will hold, known before its data is written: the header is computed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLayout {
    /// Nonzero activations in the split.
    pub len: usize,
    /// How the locations are stored.
    pub locations: LocationDtype,
    /// `(rows, ctx_len)` of the token grid, when the file holds it.
    pub tokens: Option<(usize, usize)>,
}

impl SplitLayout {
    /// The safetensors header: its length (u64, little endian), then the JSON, padded with
    /// spaces so the data starts 8-byte aligned. Tensors lie in the order locations, activations,
    /// tokens; the JSON lists them, and their fields, alphabetically.
    fn header(&self) -> Vec<u8> {
        let entry = |dtype: &str, shape: &str, begin: usize, len: usize| {
            format!(
                r#"{{"data_offsets":[{begin},{}],"dtype":"{dtype}","shape":[{shape}]}}"#,
                begin + len
            )
        };
        let n = self.len;
        let loc_bytes = n * 3 * self.locations.size();
        let mut json = format!(
            r#"{{"activations":{},"locations":{}"#,
            entry("F16", &n.to_string(), loc_bytes, n * 2),
            entry(self.locations.name(), &format!("{n},3"), 0, loc_bytes),
        );
        if let Some((rows, ctx_len)) = self.tokens {
            json += &format!(
                r#","tokens":{}"#,
                entry(
                    "I64",
                    &format!("{rows},{ctx_len}"),
                    loc_bytes + n * 2,
                    rows * ctx_len * 8
                )
            );
        }
        json.push('}');
        while !json.len().is_multiple_of(8) {
            json.push(' ');
        }
        let mut header = (json.len() as u64).to_le_bytes().to_vec();
        header.extend(json.into_bytes());
        header
    }
}

/// Writes one split file in delphi's layout without holding its data: the header comes from a
/// [`SplitLayout`], then the caller streams every location, then every activation, then the
/// token ids. Writing out of that order, more or fewer values than the layout says, or a value
/// that does not fit the location dtype is an error naming the file and tensor.
///
/// [`SplitWriter::create`] writes a file atomically: it appears, complete, at
/// [`SplitWriter::commit`], and not at all if the writer is dropped before.
///
/// ```
/// use autointerp_core::split::{LocationDtype, SplitLayout, SplitReader, SplitWriter};
/// use half::f16;
///
/// # fn main() -> autointerp_core::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("0_9.safetensors");
/// let layout = SplitLayout { len: 2, locations: LocationDtype::U16, tokens: Some((1, 4)) };
/// let mut w = SplitWriter::create(&path, layout)?;
/// w.write_location(0, 1, 7)?; // row 0, position 1, latent 0 + 7
/// w.write_location(0, 3, 2)?;
/// w.write_activation(f16::from_f32(1.5))?;
/// w.write_activation(f16::from_f32(0.5))?;
/// w.write_tokens(&[10, 11, 12, 13])?;
/// w.commit()?;
///
/// let split = SplitReader::open(&path)?;
/// assert_eq!(split.len(), 2);
/// assert_eq!(split.activations().get(1), 0.5);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SplitWriter<W: Write = AtomicFile> {
    out: W,
    path: PathBuf,
    layout: SplitLayout,
    /// Values written to each tensor, in file order (see [`TENSORS`]).
    written: [usize; 3],
}

/// The tensors of a split, in the order their data is written.
const TENSORS: [&str; 3] = ["locations", "activations", "tokens"];

impl SplitWriter<AtomicFile> {
    /// Starts writing the split file `path` (atomically; see [`SplitWriter::commit`]).
    pub fn create(path: &Path, layout: SplitLayout) -> Result<Self> {
        Self::new(AtomicFile::create(path)?, path, layout)
    }

    /// Checks that everything the layout promised was written, then syncs the file and moves it
    /// into place.
    pub fn commit(self) -> Result<()> {
        self.finish()?.commit()
    }
}

impl<W: Write> SplitWriter<W> {
    /// Writes the header of a split of `layout` to `out`; `path` names the file in errors.
    pub fn new(out: W, path: &Path, layout: SplitLayout) -> Result<Self> {
        let mut w = Self {
            out,
            path: path.to_path_buf(),
            layout,
            written: [0; 3],
        };
        w.write(&layout.header())?;
        Ok(w)
    }

    /// Appends the next location: `row`, `position`, and the latent's offset from the split's
    /// first latent.
    pub fn write_location(&mut self, row: u32, position: u32, offset: u32) -> Result<()> {
        self.admit(0, 1)?;
        match self.layout.locations {
            LocationDtype::U32 => {
                let mut b = [0u8; 12];
                b[..4].copy_from_slice(&row.to_le_bytes());
                b[4..8].copy_from_slice(&position.to_le_bytes());
                b[8..].copy_from_slice(&offset.to_le_bytes());
                self.write(&b)
            }
            LocationDtype::U16 => {
                let narrow = |v: u32| u16::try_from(v).map(u16::to_le_bytes);
                match (narrow(row), narrow(position), narrow(offset)) {
                    (Ok(r), Ok(p), Ok(o)) => self.write(&[r[0], r[1], p[0], p[1], o[0], o[1]]),
                    _ => {
                        Err(self.bad(0, format!("({row}, {position}, {offset}) does not fit U16")))
                    }
                }
            }
        }
    }

    /// Appends the next locations, `[row, position, offset]` each: [`SplitWriter::write_location`]
    /// for many at once, in one write.
    pub fn write_locations(&mut self, locations: &[[u32; 3]]) -> Result<()> {
        self.admit(0, locations.len())?;
        let mut buf = Vec::with_capacity(locations.len() * 12);
        match self.layout.locations {
            LocationDtype::U32 => {
                for l in locations {
                    for v in l {
                        buf.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            LocationDtype::U16 => {
                for l in locations {
                    for &v in l {
                        let narrow = u16::try_from(v).map_err(|_| {
                            self.bad(
                                0,
                                format!("({}, {}, {}) does not fit U16", l[0], l[1], l[2]),
                            )
                        })?;
                        buf.extend_from_slice(&narrow.to_le_bytes());
                    }
                }
            }
        }
        self.write(&buf)
    }

    /// Appends the next activations: [`SplitWriter::write_activation`] for many at once.
    pub fn write_activations(&mut self, values: &[f16]) -> Result<()> {
        self.admit(1, values.len())?;
        let buf: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(&buf)
    }

    /// Appends the next activation; every location must be written first.
    pub fn write_activation(&mut self, value: f16) -> Result<()> {
        self.admit(1, 1)?;
        self.write(&value.to_le_bytes())
    }

    /// Appends token ids, row-major (in one call or several); every activation must be written
    /// first.
    pub fn write_tokens(&mut self, ids: &[u32]) -> Result<()> {
        if self.layout.tokens.is_none() {
            return Err(self.bad(2, "the layout holds no token grid".into()));
        }
        self.admit(2, ids.len())?;
        let mut buf = Vec::with_capacity(ids.len().min(1 << 16) * 8);
        for chunk in ids.chunks(1 << 16) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|&id| i64::from(id).to_le_bytes()));
            self.write(&buf)?;
        }
        Ok(())
    }

    /// Checks that everything the layout promised was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        let capacity = self.capacity();
        if let Some(t) = (0..3).find(|&t| self.written[t] != capacity[t]) {
            let (got, want) = (self.written[t], capacity[t]);
            return Err(self.bad(t, format!("{got} values written, the layout holds {want}")));
        }
        self.out.flush().map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.out)
    }

    /// Values each tensor holds.
    fn capacity(&self) -> [usize; 3] {
        let n = self.layout.len;
        [n, n, self.layout.tokens.map_or(0, |(r, c)| r * c)]
    }

    /// Counts `count` more values of tensor `t`, refusing them when the tensors before it are
    /// incomplete or `t` would hold more than its layout.
    fn admit(&mut self, t: usize, count: usize) -> Result<()> {
        let capacity = self.capacity();
        if let Some(p) = (0..t).find(|&p| self.written[p] < capacity[p]) {
            let problem = format!(
                "written after {} of the {} {}",
                self.written[p], capacity[p], TENSORS[p]
            );
            return Err(self.bad(t, problem));
        }
        if self.written[t] + count > capacity[t] {
            let problem = format!("more than the {} values the layout holds", capacity[t]);
            return Err(self.bad(t, problem));
        }
        self.written[t] += count;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn bad(&self, t: usize, problem: String) -> Error {
        Error::BadTensor {
            path: self.path.clone(),
            tensor: TENSORS[t].into(),
            problem,
        }
    }
}
