use std::path::PathBuf;

/// Errors from caching latents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A latent index outside the coder's width.
    #[error("latent {latent} is outside the sparse coder's width {width}")]
    LatentOutOfRange {
        /// The index.
        latent: u32,
        /// The width.
        width: u32,
    },
    /// A dataset that cannot be read or is unusable.
    #[error("{path}: {problem}")]
    Dataset {
        /// The dataset file or folder.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A Hub dataset that cannot be listed, downloaded or used.
    #[error("Hub dataset {repo} ({url}): {problem}")]
    Hub {
        /// The dataset id (`owner/name`).
        repo: String,
        /// The URL that failed or was examined.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The forward pass or an encoder failed, or returned tensors of the wrong shape.
    #[error("forward pass: {0}")]
    Forward(String),
    /// A split file could not be written or read.
    #[error(transparent)]
    Split(#[from] autointerp_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
