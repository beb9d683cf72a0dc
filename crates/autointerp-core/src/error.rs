use std::path::PathBuf;

/// Errors from parsing shared types and reading or writing split files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A hook point name that is neither canonical nor a known alias.
    #[error("unknown hook point {name:?}; valid forms: {}", valid.join(", "))]
    UnknownHookPoint {
        /// The name as given.
        name: String,
        /// The accepted forms.
        valid: Vec<String>,
    },
    /// A latent id that is not `<hookpoint>_latent<index>`.
    #[error(
        "malformed latent id {0:?}: expected `<hookpoint>_latent<index>`, e.g. `layers.6_latent12`"
    )]
    MalformedLatentId(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A safetensors file could not be parsed or written.
    #[error("{path}: not a valid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: safetensors::SafeTensorError,
    },
    /// A split file holds a tensor of the wrong name, dtype or shape.
    #[error("{path}: tensor `{tensor}`: {problem}")]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
