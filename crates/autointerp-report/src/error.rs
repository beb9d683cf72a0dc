use std::path::PathBuf;

/// Errors that stop a report from being written.
///
/// Problems with the results themselves — missing, unreadable or malformed files, undefined
/// scores — are never errors: they are listed in [`Summary::problems`](crate::Summary::problems)
/// and the report goes on without them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The results directory does not exist or is not a folder.
    #[error("{}: not a results directory (expected a folder with explanations/, scores/, latents/)", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// Writing an output file or creating an output folder failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The summary could not be serialised.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// An export found no usable explanation in the results directory.
    #[error("{}: no usable explanation to export (every explanation file is missing, empty or a failure placeholder)", path.display())]
    NoExplanations {
        /// The results directory's `explanations/` folder.
        path: PathBuf,
    },
    /// An export option is invalid, or does not fit the results (e.g. a hook point that the
    /// Neuronpedia source template cannot name).
    #[error("{}: invalid {option}: {message}", path.display())]
    InvalidOption {
        /// The results directory being exported.
        path: PathBuf,
        /// The option, as the CLI names its flag (e.g. `source-template`).
        option: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
