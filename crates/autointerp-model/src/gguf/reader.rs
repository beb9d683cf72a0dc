//! Parsing of the GGUF container: header, metadata, tensor infos.
//!
//! Layout (ggml `docs/gguf.md`, versions 2 and 3, little-endian):
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | metadata_kv_count u64
//! metadata_kv_count × (key: string, value_type: u32, value)
//! tensor_count × (name: string, n_dims: u32, dims: [u64; n_dims], type: u32, offset: u64)
//! padding to `general.alignment` (default 32) | tensor data
//! ```
//!
//! A string is a `u64` byte length and that many UTF-8 bytes; an array is an element type
//! (`u32`), a `u64` count and the elements. Tensor offsets are relative to the start of the data
//! section and are multiples of the alignment.
//!
//! Nothing read from the file is trusted: every length and count is checked against the bytes
//! that remain before anything is allocated, so a corrupt file yields an error, never a panic
//! or a huge allocation.

use std::collections::{BTreeMap, HashSet};

use super::metadata::{Array, Value, ValueType};
use super::quant::{data_size, GgmlType};
use super::TensorInfo;

/// The four bytes every GGUF file starts with.
pub(crate) const MAGIC: &[u8; 4] = b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// How deep arrays may nest (`[[[..]]]`); real files nest at most once.
const MAX_ARRAY_DEPTH: usize = 8;

/// What [`parse`] finds in a file.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

/// A parsing problem; the caller adds the file name.
pub(crate) type ParseResult<T> = std::result::Result<T, String>;

/// A forward-only reader over the file's bytes that never reads past the end.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes, or an error naming `what` was being read.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> ParseResult<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(format!(
                "truncated: {} needs {n} bytes at offset {} but only {} remain",
                what(),
                self.pos,
                self.remaining()
            ));
        }
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> ParseResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> ParseResult<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> ParseResult<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> ParseResult<String> {
        let at = self.pos;
        let len = self.u64(&|| format!("the length of {}", what()))?;
        if len > self.remaining() as u64 {
            return Err(format!(
                "{} at offset {at} claims {len} bytes but only {} remain",
                what(),
                self.remaining()
            ));
        }
        let bytes = self.take(len, what)?;
        // Vocabularies of some models hold pieces that are not valid UTF-8 on their own;
        // replacing the bad bytes keeps the rest of the file readable.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    /// A count of items that take at least `min_size` bytes each, checked against the bytes
    /// that remain so that no caller allocates for items that cannot be there.
    fn count(&mut self, min_size: u64, what: &dyn Fn() -> String) -> ParseResult<u64> {
        let at = self.pos;
        let n = self.u64(&|| format!("the count of {}", what()))?;
        let need = n.checked_mul(min_size);
        if need.is_none_or(|need| need > self.remaining() as u64) {
            return Err(format!(
                "count of {} at offset {at} is {n}, which cannot fit in the {} bytes that remain",
                what(),
                self.remaining()
            ));
        }
        Ok(n)
    }

    fn value(&mut self, ty: u32, depth: usize, what: &dyn Fn() -> String) -> ParseResult<Value> {
        let ty = value_type(ty, self.pos, what)?;
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => Value::Bool(self.bool(what)?),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => Value::Array(self.array_value(depth, what)?),
        })
    }

    fn bool(&mut self, what: &dyn Fn() -> String) -> ParseResult<bool> {
        let at = self.pos;
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("{} at offset {at} is a bool of value {b}", what())),
        }
    }

    fn array_value(&mut self, depth: usize, what: &dyn Fn() -> String) -> ParseResult<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(format!(
                "{} nests arrays deeper than {MAX_ARRAY_DEPTH} levels (offset {})",
                what(),
                self.pos
            ));
        }
        let at = self.pos;
        let elem = self.u32(&|| format!("the element type of {}", what()))?;
        let elem = value_type(elem, at, what)?;
        let n = self.count(elem.min_size(), what)?;
        let item = |i: u64| move || format!("element {i} of {}", what());
        // `count` checked that n elements fit in the rest of the file, so n is bounded by the
        // file size and collecting n items cannot exhaust memory.
        macro_rules! fixed {
            ($variant:ident, $t:ty, $n:literal) => {{
                let bytes = self.take(n * $n, what)?;
                Array::$variant(
                    bytes
                        .chunks_exact($n)
                        .map(|c| {
                            let mut a = [0u8; $n];
                            a.copy_from_slice(c);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n, what)?.to_vec()),
            ValueType::I8 => Array::I8(self.take(n, what)?.iter().map(|&b| b as i8).collect()),
            ValueType::U16 => fixed!(U16, u16, 2),
            ValueType::I16 => fixed!(I16, i16, 2),
            ValueType::U32 => fixed!(U32, u32, 4),
            ValueType::I32 => fixed!(I32, i32, 4),
            ValueType::F32 => fixed!(F32, f32, 4),
            ValueType::U64 => fixed!(U64, u64, 8),
            ValueType::I64 => fixed!(I64, i64, 8),
            ValueType::F64 => fixed!(F64, f64, 8),
            ValueType::Bool => Array::Bool(
                (0..n)
                    .map(|i| self.bool(&item(i)))
                    .collect::<ParseResult<_>>()?,
            ),
            ValueType::String => Array::String(
                (0..n)
                    .map(|i| self.string(&item(i)))
                    .collect::<ParseResult<_>>()?,
            ),
            ValueType::Array => Array::Array(
                (0..n)
                    .map(|i| self.array_value(depth + 1, &item(i)))
                    .collect::<ParseResult<_>>()?,
            ),
        })
    }
}

fn value_type(ty: u32, at: usize, what: &dyn Fn() -> String) -> ParseResult<ValueType> {
    ValueType::from_id(ty)
        .ok_or_else(|| format!("{} at offset {at} has unknown value type {ty}", what()))
}

/// Parses the header, metadata and tensor infos of a GGUF file held in `buf`, and checks that
/// every tensor's data lies inside `buf`.
pub(crate) fn parse(buf: &[u8]) -> ParseResult<Parsed> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.array::<4>(&|| "the magic number".into())?;
    if &magic != MAGIC {
        return Err(format!(
            "not a GGUF file: starts with {magic:02x?}, expected {:02x?} (\"GGUF\")",
            MAGIC
        ));
    }
    let version = c.u32(&|| "the version".into())?;
    match version {
        2 | 3 => {}
        1 => return Err("GGUF version 1 is not supported (only versions 2 and 3)".into()),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(format!(
                "big-endian GGUF (version {}) is not supported",
                v.swap_bytes()
            ))
        }
        v => return Err(format!("unsupported GGUF version {v} (only 2 and 3)")),
    }
    // Smallest on-disk sizes: a tensor info is a name length, n_dims, type and offset; a
    // metadata pair is a key length, a value type and at least one byte of value.
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.count(8 + 4 + 1, &|| "metadata pairs".into())?;
    if n_tensors
        .checked_mul(8 + 4 + 4 + 8)
        .is_none_or(|n| n > c.remaining() as u64)
    {
        return Err(format!(
            "tensor count {n_tensors} cannot fit in the {} bytes of the file",
            buf.len()
        ));
    }

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&|| format!("the key of metadata pair {i}"))?;
        let ty = c.u32(&|| format!("the value type of metadata key {key:?}"))?;
        let value = c.value(ty, 0, &|| format!("metadata key {key:?}"))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(format!("metadata key {key:?} appears twice"));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => a,
            _ => {
                return Err(format!(
                    "general.alignment is {v:?}, expected a power of two as u32"
                ))
            }
        },
    };

    let mut tensors = Vec::new();
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor {i}"))?;
        let what = || format!("tensor {name:?}");
        let n_dims = c.u32(&|| format!("the number of dimensions of {}", what()))?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "{} has {n_dims} dimensions, more than ggml's {MAX_DIMS}",
                what()
            ));
        }
        let mut dims = Vec::new();
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of {}", what()))?);
        }
        let ty = GgmlType::from_id(c.u32(&|| format!("the type of {}", what()))?);
        let offset = c.u64(&|| format!("the data offset of {}", what()))?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| format!("{} has dimensions {dims:?} whose product overflows", what()))?;
        if offset % alignment != 0 {
            return Err(format!(
                "{} has data offset {offset}, not a multiple of the alignment {alignment}",
                what()
            ));
        }
        let size = match ty.block_layout() {
            None => None,
            Some((block, _)) => Some(data_size(ty, n_elements).ok_or_else(|| {
                format!(
                    "{} of type {ty} has {n_elements} elements (dimensions {dims:?}), not a \
                     whole number of {block}-element blocks",
                    what()
                )
            })?),
        };
        if !names.insert(name.clone()) {
            return Err(format!("{} appears twice", what()));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type: ty,
            offset,
            size,
        });
    }

    let end_of_infos = c.pos as u64;
    let data_offset = end_of_infos.div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    for t in &tensors {
        let Some(size) = t.size else { continue };
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|start| start.checked_add(size));
        if end.is_none_or(|end| end > file_len) {
            return Err(format!(
                "tensor {:?} ({} bytes at data offset {}, file offset {}) runs past the end of \
                 the file ({file_len} bytes)",
                t.name,
                size,
                t.offset,
                data_offset.saturating_add(t.offset)
            ));
        }
    }

    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}
