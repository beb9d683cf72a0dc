//! The run engine's error: settings at fault, files that cannot be read or written, and the
//! errors of the crates a run drives.

use std::fmt::Display;

/// Why a run could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing, malformed or contradicts another; the message names it.
    #[error("{0}")]
    Config(String),
    /// A file or folder could not be read, written or removed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not the JSON or TOML it should be.
    #[error("{what}: {reason}")]
    Parse {
        /// The file.
        what: String,
        /// What is wrong, as the parser says it.
        reason: String,
    },
    /// Shared types (split files, atomic writes, hook point names).
    #[error(transparent)]
    Core(#[from] autointerp_core::Error),
    /// Loading the model or its tokenizer.
    #[error(transparent)]
    Model(#[from] autointerp_model::Error),
    /// Building the latent cache.
    #[error(transparent)]
    Cache(#[from] autointerp_cache::Error),
    /// Loading the sparse coders.
    #[error(transparent)]
    Sae(#[from] autointerp_sae::Error),
    /// The latent cache or record building.
    #[error(transparent)]
    Latents(#[from] autointerp_latents::Error),
    /// A client could not be built.
    #[error(transparent)]
    Client(#[from] autointerp_client::Error),
    /// Explanation files.
    #[error(transparent)]
    Explain(#[from] autointerp_explain::Error),
    /// Score files.
    #[error(transparent)]
    Score(#[from] autointerp_score::Error),
    /// Another error, with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// The cause.
        source: Box<Error>,
    },
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Self::Io {
            what: "I/O".into(),
            source,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Parse {
            what: "JSON".into(),
            reason: e.to_string(),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an error, as `anyhow::Context` does, keeping the typed cause.
pub(crate) trait Context<T> {
    fn context(self, context: impl Display) -> Result<T>;
    fn with_context<D: Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.to_string(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<D: Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Display) -> Result<T> {
        self.ok_or_else(|| Error::Config(context.to_string()))
    }
    fn with_context<D: Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.ok_or_else(|| Error::Config(f().to_string()))
    }
}

/// Returns a [`Error::Config`] with a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Config(format!($($arg)*)))
    };
}

/// Returns a [`Error::Config`] unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::error::bail!($($arg)*);
        }
    };
}

pub(crate) use {bail, ensure};
