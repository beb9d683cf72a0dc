use std::path::PathBuf;

/// Errors from loading and running sparse coders.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A config file is malformed.
    #[error("{path}: {problem}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A weight is missing or has the wrong shape.
    #[error("{path}: tensor `{tensor}`: {problem}")]
    Weight {
        /// The weights file.
        path: PathBuf,
        /// The tensor's key.
        tensor: String,
        /// What is wrong.
        problem: String,
    },
    /// The input's last dimension does not match the coder's.
    #[error("input has dimension {got} but the sparse coder expects d_in = {expected}")]
    InputDim {
        /// The input's last dimension.
        got: i64,
        /// The coder's `d_in`.
        expected: i64,
    },
    /// An error from libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
