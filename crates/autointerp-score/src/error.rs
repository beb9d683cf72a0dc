use std::path::PathBuf;

use autointerp_core::LatentId;

/// Errors from building scorer prompts, parsing answers, and reading or writing score files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A scorer's answer could not be read. The examples it concerned are recorded as failed
    /// (prediction `None`) and excluded from metrics.
    #[error("unparseable scorer answer ({reason}); answer: {}", preview(answer))]
    ParseFailure {
        /// What was wrong with the answer.
        reason: String,
        /// The answer as received.
        answer: String,
    },
    /// A record lacks the examples a scorer needs.
    #[error("latent {latent}: {what}")]
    NotEnoughExamples {
        /// The latent scored.
        latent: LatentId,
        /// What is missing.
        what: String,
    },
    /// A latent has too few examples for a scorer to measure anything: the scorer skips it
    /// rather than give it a score that says nothing (e.g. intruder trials of two excerpts,
    /// which a perfect judge passes by coin flip). A skip, not a failure: see
    /// [`Error::is_skip`].
    #[error("latent {latent}: too few {what} for {scorer}: {have}, at least {need} needed")]
    TooFewExamples {
        /// The latent scored.
        latent: LatentId,
        /// The scorer (its folder name, e.g. `intruder`).
        scorer: &'static str,
        /// Which examples: `test examples`, `non-activating examples`, ….
        what: &'static str,
        /// How many the record has.
        have: usize,
        /// How many the scorer needs.
        need: usize,
    },
    /// A scorer option out of range.
    #[error("invalid scorer configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A score file is not valid JSON of the expected shape, or a value could not be serialised.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A prompt template failed to render (see [`autointerp_explain::prompts`]).
    #[error(transparent)]
    Prompt(#[from] autointerp_explain::PromptError),
    /// A request to the LLM, embedder or token scorer failed (after the client's own retries).
    #[error("request failed: {0}")]
    Client(#[from] autointerp_client::Error),
    /// An embedder returned something unusable: the wrong number of vectors, or vectors of
    /// different lengths.
    #[error("unusable embeddings: {reason}")]
    Embedder {
        /// What is wrong.
        reason: String,
    },
    /// A shared-type operation failed (e.g. an atomic write).
    #[error(transparent)]
    Core(#[from] autointerp_core::Error),
}

impl Error {
    /// Whether the error says the latent was skipped for lack of examples
    /// ([`Error::TooFewExamples`], [`Error::NotEnoughExamples`]) rather than that scoring
    /// failed: a run reports such a latent as skipped by that scorer, with no score.
    pub fn is_skip(&self) -> bool {
        matches!(
            self,
            Self::TooFewExamples { .. } | Self::NotEnoughExamples { .. }
        )
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The first 200 characters of an answer, quoted, for error messages.
fn preview(answer: &str) -> String {
    let mut s: String = answer.chars().take(200).collect();
    if s.len() < answer.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// A [`Error::ParseFailure`].
pub(crate) fn parse_failure(reason: impl Into<String>, answer: &str) -> Error {
    Error::ParseFailure {
        reason: reason.into(),
        answer: answer.to_string(),
    }
}
