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
    /// A split file that cannot be read as one: too short, a header that is not safetensors JSON
    /// or whose sizes disagree with the file's length, or a name that is not
    /// `<start>_<end>.safetensors`.
    #[error("{path}: corrupt split file: {problem}")]
    BadSplit {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A split file's tensor that is missing, of the wrong dtype or shape, whose bytes do not lie
    /// in the file, or that holds values outside the split or the token grid; or, when writing,
    /// values that break the split's layout.
    #[error("{path}: tensor `{tensor}`: {problem}")]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A folder that another autointerp process is writing (see [`crate::fs::DirLock`]).
    #[error(
        "{path}: the folder is in use by {holder}; two commands writing one folder would delete \
         each other's files: wait for that one to end, stop it, or choose another output folder"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it: pid and host, as the holder recorded them.
        holder: String,
    },
    /// A vocabulary projection file (`vocab_projection.json`) that does not parse or whose
    /// lists disagree with each other.
    #[error("{path}: bad vocabulary projection: {problem}")]
    BadVocabProjection {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
