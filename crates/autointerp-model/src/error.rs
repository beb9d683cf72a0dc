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
    /// A `config.json` (or GGUF metadata) that cannot be turned into a model: malformed JSON, a
    /// missing or inconsistent field, an unsupported option.
    #[error("model config {path}: {problem}")]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A `model_type` (or GGUF `general.architecture`) this crate does not implement.
    #[error("{path}: unsupported model type {model_type:?}; supported: {}", supported.join(", "))]
    UnknownModelType {
        /// The file that names it.
        path: std::path::PathBuf,
        /// The type found.
        model_type: String,
        /// The types this crate implements.
        supported: Vec<String>,
    },
    /// A safetensors file that cannot be parsed (truncated, bad header, ...).
    #[error("{path}: not a valid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: safetensors::SafeTensorError,
    },
    /// A checkpoint tensor whose shape is not the one the config implies.
    #[error("{path}: tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The file.
        path: std::path::PathBuf,
        /// The tensor.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<i64>,
        /// The shape in the file.
        found: Vec<i64>,
    },
    /// A checkpoint tensor stored in a dtype that is not a float type.
    #[error("{path}: tensor {tensor:?} has dtype {dtype}, expected a float type")]
    TensorDType {
        /// The file.
        path: std::path::PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// Checkpoint tensors that the model does not use (a sign of a wrong config or architecture).
    #[error("{path}: unexpected tensor(s) {}", tensors.join(", "))]
    UnexpectedTensors {
        /// The file (the first one holding such a tensor).
        path: std::path::PathBuf,
        /// The tensor names (at most 20).
        tensors: Vec<String>,
    },
    /// A hook point whose layer the model does not have.
    #[error("hook point {hook} is out of range: the model has {n_layers} layers (0..={})", n_layers.saturating_sub(1))]
    HookLayer {
        /// The hook point.
        hook: autointerp_core::HookPoint,
        /// The model's layer count.
        n_layers: usize,
    },
    /// An intervention that returned a tensor of another shape, dtype or device than it was given.
    #[error("intervention at {hook} returned {found}, expected {expected}")]
    Intervention {
        /// The hook point.
        hook: autointerp_core::HookPoint,
        /// Shape, dtype and device of the tensor given to it.
        expected: String,
        /// Shape, dtype and device of the tensor it returned.
        found: String,
    },
    /// An intervention that failed (e.g. an edit whose width is not the hook point's).
    #[error("intervention at {hook} failed: {source}")]
    InterventionFailed {
        /// The hook point.
        hook: autointerp_core::HookPoint,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A token id outside the model's vocabulary.
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenId {
        /// The id given.
        id: i64,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// A file that could not be written (or renamed into place).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Model inputs of the wrong rank, dtype or shape (input ids, masks, positions, KV cache).
    #[error("bad model input: {0}")]
    Input(String),
    /// A path that does not exist and is not a Hugging Face Hub id, or a folder that holds no model.
    #[error("{path}: {problem}")]
    ModelPath {
        /// The path given.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Downloading from the Hugging Face Hub failed, or is impossible offline.
    #[error("Hugging Face Hub, {repo}: {problem}")]
    Hub {
        /// The repository id.
        repo: String,
        /// What went wrong, and what to do instead.
        problem: String,
    },
    /// An error from autointerp-core (e.g. an unknown hook point name).
    #[error(transparent)]
    Core(#[from] autointerp_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
