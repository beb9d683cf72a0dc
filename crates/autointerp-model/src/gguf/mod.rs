//! GGUF files: the container of llama.cpp/ggml models.
//!
//! [`GgufFile::open`] memory-maps a file and reads its header, metadata and tensor table
//! (versions 2 and 3); tensors are dequantised to `f32` on request ([`GgufFile::dequantize`],
//! [`GgufFile::to_tensor`]); [`GgufFile::hparams`] reads the usual transformer
//! hyperparameters and [`GgufFile::tokenizer`] builds a `tokenizers::Tokenizer` from the
//! `tokenizer.ggml.*` metadata.
//!
//! ```no_run
//! use autointerp_model::gguf::GgufFile;
//!
//! # fn main() -> autointerp_model::Result<()> {
//! let gguf = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let hp = gguf.hparams()?;
//! println!("{} layers, d_model {}", hp.block_count, hp.embedding_length);
//! let (embed, shape) = gguf.dequantize("token_embd.weight")?; // shape [vocab, d_model]
//! assert_eq!(embed.len(), shape.iter().product::<usize>());
//! let tok = gguf.tokenizer()?;
//! let ids = tok.encode("Hello world", true)?;
//! # Ok(()) }
//! ```
//!
//! Everything read from a file is bounds-checked: a truncated or corrupt file gives an
//! [`Error::Gguf`] naming the file and the problem, never a panic.

mod metadata;
mod quant;
mod reader;
mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

pub use metadata::{Array, Value};
pub use quant::{data_size, dequantize as dequantize_bytes, GgmlType};
pub use tokenizer::GgufTokenizer;

use crate::{Error, Result};

/// One tensor's entry in a GGUF file's tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions as GGUF lists them: innermost (contiguous) first, the reverse of PyTorch.
    pub dims: Vec<u64>,
    /// The storage type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the file's data section.
    pub offset: u64,
    /// Size of the data in bytes; `None` when the type is unknown.
    pub size: Option<u64>,
}

impl TensorInfo {
    /// The shape in PyTorch order (outermost first), i.e. `dims` reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// The number of elements (1 for a tensor without dimensions).
    pub fn n_elements(&self) -> u64 {
        // The reader checked that this product does not overflow.
        self.dims.iter().product()
    }
}

/// The bytes of a file: memory-mapped, or owned for files built in memory.
enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file whose tensor data stays memory-mapped until it is asked for.
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the GGUF file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or mapped; [`Error::Gguf`] if it is not a
    /// well-formed GGUF v2/v3 file (the message says what is wrong and where).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        #[allow(unsafe_code)]
        // SAFETY: the map is read-only and lives as long as `self`, which only hands out
        // borrows of it. Memory-mapping is only unsound if another process truncates or rewrites
        // the file while it is mapped; model files are not modified in place, and every other
        // loader of mmap'd weights (safetensors, candle, llama.cpp) accepts the same contract.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_storage(path, Storage::Mmap(map))
    }

    /// Parses a GGUF file held in memory; `label` stands for its path in error messages.
    ///
    /// # Errors
    /// As [`GgufFile::open`].
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::from_storage(label.into(), Storage::Owned(bytes))
    }

    fn from_storage(path: PathBuf, storage: Storage) -> Result<Self> {
        let parsed = reader::parse(storage.bytes()).map_err(|problem| Error::Gguf {
            path: path.clone(),
            problem,
        })?;
        let index = parsed
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        tracing::debug!(
            path = %path.display(),
            version = parsed.version,
            tensors = parsed.tensors.len(),
            metadata = parsed.metadata.len(),
            "opened GGUF"
        );
        Ok(Self {
            path,
            storage,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    /// The file's path (or the label given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts, in bytes from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The table entry of tensor `name`.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] if there is no such tensor.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_owned(),
            })
    }

    /// Whether the file has a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The raw (still quantised) bytes of tensor `name`.
    ///
    /// # Errors
    /// [`Error::MissingTensor`]; [`Error::UnsupportedQuant`] if its type is unknown, so that
    /// its size is too.
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        let size = info.size.ok_or_else(|| unsupported(info))?;
        // The reader checked that data_offset + offset + size lies inside the file.
        let start = (self.data_offset + info.offset) as usize;
        Ok(&self.storage.bytes()[start..start + size as usize])
    }

    /// Dequantises tensor `name` to `f32`, returning the values (row-major) and the shape in
    /// PyTorch order (GGUF's dimensions reversed): a `[n_out, n_in]` weight is `dims = [n_in,
    /// n_out]` in the file and `[n_out, n_in]` here.
    ///
    /// # Errors
    /// [`Error::MissingTensor`]; [`Error::UnsupportedQuant`] for a type this crate cannot
    /// dequantise (supported: F32, F16, BF16, F64, I8, I16, I32, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q4_K, Q5_K, Q6_K).
    pub fn dequantize(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self.tensor_info(name)?;
        if !info.ggml_type.can_dequantize() {
            return Err(unsupported(info));
        }
        let shape = info
            .shape()
            .into_iter()
            .map(usize::try_from)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| self.problem(format!("tensor {name:?} is too large for this machine")))?;
        let data = self.tensor_data(name)?;
        let values = quant::dequantize(info.ggml_type, data).ok_or_else(|| {
            self.problem(format!(
                "tensor {name:?}: {} bytes are not whole {} blocks",
                data.len(),
                info.ggml_type
            ))
        })?;
        debug_assert_eq!(values.len() as u64, info.n_elements());
        Ok((values, shape))
    }

    /// Tensor `name` dequantised into an `f32` tch tensor on the CPU.
    ///
    /// # Shapes
    /// PyTorch order, as [`GgufFile::dequantize`]: `token_embd.weight` is `[vocab, d_model]`.
    ///
    /// # Errors
    /// As [`GgufFile::dequantize`], and [`Error::Torch`] if libtorch fails.
    pub fn to_tensor(&self, name: &str) -> Result<tch::Tensor> {
        let (values, shape) = self.dequantize(name)?;
        let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        Ok(tch::Tensor::from_slice(&values).f_reshape(&shape)?)
    }

    /// The metadata value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn problem(&self, problem: String) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            problem,
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingMetadata {
            path: self.path.clone(),
            key: key.to_owned(),
        }
    }

    /// `Ok(None)` when `key` is absent, `Ok(Some(_))` when `convert` accepts its value, and
    /// [`Error::MetadataType`] when it does not.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some(value) = self.metadata.get(key) else {
            return Ok(None);
        };
        convert(value).map(Some).ok_or_else(|| Error::MetadataType {
            path: self.path.clone(),
            key: key.to_owned(),
            expected: expected.to_owned(),
            found: format!("{} {value}", value.type_name()),
        })
    }

    /// The string under `key`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not a string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "string", Value::as_str)
    }

    /// The string under `key`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] or [`Error::MetadataType`].
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// The non-negative integer (of any width) under `key`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not a non-negative integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "non-negative integer", Value::as_u64)
    }

    /// The non-negative integer under `key`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] or [`Error::MetadataType`].
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }

    /// The non-negative integer under `key` as `usize`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not a non-negative integer that fits `usize`.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.typed(key, "non-negative integer", |v| {
            v.as_u64().and_then(|v| usize::try_from(v).ok())
        })
    }

    /// The non-negative integer under `key` as `usize`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] or [`Error::MetadataType`].
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    /// The signed integer (of any width) under `key`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not an integer that fits `i64`.
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>> {
        self.typed(key, "integer", Value::as_i64)
    }

    /// The float (`f32` or `f64`) under `key` as `f32`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not a float.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.typed(key, "float", |v| v.as_f64().map(|x| x as f32))
    }

    /// The float under `key` as `f32`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] or [`Error::MetadataType`].
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.opt_f32(key)?.ok_or_else(|| self.missing(key))
    }

    /// The bool under `key`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not a bool.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "bool", Value::as_bool)
    }

    /// The bool under `key`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] or [`Error::MetadataType`].
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.opt_bool(key)?.ok_or_else(|| self.missing(key))
    }

    /// The array under `key`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not an array.
    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>> {
        self.typed(key, "array", Value::as_array)
    }

    /// The array of strings under `key`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not an array of strings.
    pub fn opt_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        self.typed(key, "array of string", |v| match v {
            Value::Array(Array::String(s)) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// The array of strings under `key`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] or [`Error::MetadataType`].
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        self.opt_str_array(key)?.ok_or_else(|| self.missing(key))
    }

    /// The array of integers under `key`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not an array of integers that fit `i64`.
    pub fn opt_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        self.typed(key, "array of integer", |v| v.as_array()?.to_i64_vec())
    }

    /// The array of floats under `key` as `f32`, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::MetadataType`] if the value is not an array of floats.
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        self.typed(key, "array of float", |v| v.as_array()?.to_f32_vec())
    }

    /// `general.architecture`, e.g. `llama`, `qwen2`, `gemma3`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] or [`Error::MetadataType`].
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// Reads the transformer hyperparameters under `{arch}.*` (written for llama, qwen2,
    /// gemma2 and gemma3; other decoder-only architectures use the same keys).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] naming the first required key that is absent (e.g.
    /// `llama.block_count`), or [`Error::MetadataType`].
    pub fn hparams(&self) -> Result<GgufHparams> {
        let arch = self.architecture()?.to_owned();
        let k = |suffix: &str| format!("{arch}.{suffix}");
        let head_count = self.get_usize(&k("attention.head_count"))?;
        let vocab_size = match self.opt_usize(&k("vocab_size"))? {
            Some(v) => Some(v),
            None => self.opt_str_array("tokenizer.ggml.tokens")?.map(<[_]>::len),
        };
        let tied_embeddings = !self.has_tensor("output.weight");
        Ok(GgufHparams {
            context_length: self.get_usize(&k("context_length"))?,
            embedding_length: self.get_usize(&k("embedding_length"))?,
            block_count: self.get_usize(&k("block_count"))?,
            feed_forward_length: self.get_usize(&k("feed_forward_length"))?,
            head_count,
            head_count_kv: self
                .opt_usize(&k("attention.head_count_kv"))?
                .unwrap_or(head_count),
            rms_norm_eps: self.get_f32(&k("attention.layer_norm_rms_epsilon"))?,
            rope_freq_base: self.opt_f32(&k("rope.freq_base"))?,
            rope_dimension_count: self.opt_usize(&k("rope.dimension_count"))?,
            rope_scaling_type: self.opt_str(&k("rope.scaling.type"))?.map(str::to_owned),
            rope_scaling_factor: self.opt_f32(&k("rope.scaling.factor"))?,
            key_length: self.opt_usize(&k("attention.key_length"))?,
            value_length: self.opt_usize(&k("attention.value_length"))?,
            sliding_window: self.opt_usize(&k("attention.sliding_window"))?,
            attn_logit_softcapping: self.opt_f32(&k("attn_logit_softcapping"))?,
            final_logit_softcapping: self.opt_f32(&k("final_logit_softcapping"))?,
            vocab_size,
            tied_embeddings,
            architecture: arch,
        })
    }

    /// Builds the tokenizer described by the `tokenizer.*` metadata.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`]/[`Error::MetadataType`] for absent or mistyped keys;
    /// [`Error::Tokenizer`] for an unsupported `tokenizer.ggml.model` or `tokenizer.ggml.pre`
    /// or an inconsistent vocabulary.
    pub fn tokenizer(&self) -> Result<GgufTokenizer> {
        tokenizer::build(self)
    }
}

fn unsupported(info: &TensorInfo) -> Error {
    Error::UnsupportedQuant {
        tensor: info.name.clone(),
        ggml_type: info.ggml_type.name(),
    }
}

/// Transformer hyperparameters read from `{arch}.*` metadata, as the file states them.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHparams {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// `{arch}.context_length`: the context the model was trained with.
    pub context_length: usize,
    /// `{arch}.embedding_length`: d_model.
    pub embedding_length: usize,
    /// `{arch}.block_count`: the number of transformer blocks.
    pub block_count: usize,
    /// `{arch}.feed_forward_length`: the MLP's hidden width.
    pub feed_forward_length: usize,
    /// `{arch}.attention.head_count`.
    pub head_count: usize,
    /// `{arch}.attention.head_count_kv`; `head_count` when absent (no GQA).
    pub head_count_kv: usize,
    /// `{arch}.attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f32,
    /// `{arch}.rope.freq_base` (llama.cpp uses 10000 when absent).
    pub rope_freq_base: Option<f32>,
    /// `{arch}.rope.dimension_count`: rotary dimensions per head, when not the full head.
    pub rope_dimension_count: Option<usize>,
    /// `{arch}.rope.scaling.type`, e.g. `linear` or `yarn`.
    pub rope_scaling_type: Option<String>,
    /// `{arch}.rope.scaling.factor`.
    pub rope_scaling_factor: Option<f32>,
    /// `{arch}.attention.key_length`: head dimension of queries and keys, when not
    /// `embedding_length / head_count` (gemma).
    pub key_length: Option<usize>,
    /// `{arch}.attention.value_length`: head dimension of values.
    pub value_length: Option<usize>,
    /// `{arch}.attention.sliding_window` (gemma2/3 local layers).
    pub sliding_window: Option<usize>,
    /// `{arch}.attn_logit_softcapping` (gemma2).
    pub attn_logit_softcapping: Option<f32>,
    /// `{arch}.final_logit_softcapping` (gemma2).
    pub final_logit_softcapping: Option<f32>,
    /// `{arch}.vocab_size`, else the length of `tokenizer.ggml.tokens`.
    pub vocab_size: Option<usize>,
    /// Whether the unembedding reuses `token_embd.weight` (the file has no `output.weight`).
    pub tied_embeddings: bool,
}

impl GgufHparams {
    /// The head dimension of queries and keys: `key_length`, else `embedding_length /
    /// head_count`.
    pub fn head_dim(&self) -> usize {
        self.key_length
            .unwrap_or(self.embedding_length / self.head_count.max(1))
    }
}
