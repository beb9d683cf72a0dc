use std::path::PathBuf;

/// Errors from reading a latent cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A cache folder or file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A folder with no split files.
    #[error("{0}: no split files (`<start>_<end>.safetensors`); is this a hook point's cache folder?")]
    NoSplits(PathBuf),
    /// No split holds the latent asked for.
    #[error("latent {latent} is in no split under {dir} (the cache covers latents 0..={max})")]
    LatentNotCached {
        /// The latent.
        latent: u32,
        /// The folder.
        dir: PathBuf,
        /// The largest cached latent.
        max: u32,
    },
    /// A split file without the token grid.
    #[error("{0}: the split holds no `tokens`, so examples cannot be built")]
    NoTokens(PathBuf),
    /// A split file is malformed.
    #[error(transparent)]
    Split(#[from] autointerp_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
