/// Errors from loading and running models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device string that is not `cpu`, `cuda` or `cuda:N`, or a CUDA device that is absent.
    #[error("bad device {given:?}: {problem}")]
    Device {
        /// The string given.
        given: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A dtype string that is not `f32`, `bf16` or `f16`.
    #[error("unknown dtype {0:?}: expected f32, bf16 or f16")]
    DType(String),
    /// An error from libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A file that could not be opened, read or memory-mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A GGUF file that is malformed: bad magic, unsupported version, truncated, an absurd count
    /// or length, a tensor whose data runs past the end of the file, and the like.
    #[error("GGUF file {path}: {problem}")]
    Gguf {
        /// The file (or the label given to an in-memory buffer).
        path: std::path::PathBuf,
        /// What is wrong, with the byte offset where it was found.
        problem: String,
    },
    /// A metadata key that a GGUF file lacks.
    #[error("GGUF file {path}: missing metadata key {key:?}")]
    MissingMetadata {
        /// The file.
        path: std::path::PathBuf,
        /// The key, e.g. `llama.block_count`.
        key: String,
    },
    /// A metadata key whose value has another type than the one asked for.
    #[error("GGUF file {path}: metadata key {key:?} holds {found}, expected {expected}")]
    MetadataType {
        /// The file.
        path: std::path::PathBuf,
        /// The key.
        key: String,
        /// The type asked for.
        expected: String,
        /// The type found.
        found: String,
    },
    /// A tensor name that a checkpoint lacks.
    #[error("{path}: no tensor named {tensor:?}")]
    MissingTensor {
        /// The file.
        path: std::path::PathBuf,
        /// The tensor asked for.
        tensor: String,
    },
    /// A tensor stored in a ggml type that cannot be dequantised here.
    #[error("tensor {tensor:?} has ggml type {ggml_type}, which cannot be dequantised")]
    UnsupportedQuant {
        /// The tensor.
        tensor: String,
        /// The ggml type's name (or `unknown(N)`).
        ggml_type: String,
    },
    /// A tokenizer that cannot be built from GGUF metadata (unsupported model or pre-tokenizer,
    /// inconsistent vocabulary or merges).
    #[error("tokenizer in {path}: {problem}")]
    Tokenizer {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
