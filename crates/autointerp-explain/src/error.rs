use std::path::PathBuf;

use autointerp_core::LatentId;

/// Errors from parsing explainer answers and reading or writing explanation files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The explainer's answer held no usable explanation. The latent has no explanation: record
    /// it as a failure, never as an explanation.
    #[error(
        "no explanation in the answer ({reason}); answer: {}",
        crate::parse::preview(answer)
    )]
    ParseFailure {
        /// What was wrong with the answer.
        reason: String,
        /// The answer as received.
        answer: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An explanation file starts like a JSON string but is not one.
    #[error("{path}: not a JSON string: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// An explanation file whose name is not `<latent id>.txt`.
    #[error("{path}: file name is not `<hookpoint>_latent<index>.txt`: {source}")]
    BadFileName {
        /// The file.
        path: PathBuf,
        /// Why the stem is not a latent id.
        source: autointerp_core::Error,
    },
    /// Two entries of a list of explanations for the same latent.
    #[error("two explanations for latent {latent}")]
    DuplicateLatent {
        /// The latent explained twice.
        latent: LatentId,
    },
    /// Two files of a folder name the same latent (e.g. `model.layers.6_latent1.txt` and
    /// `layers.6_latent1.txt`).
    #[error("{} and {} both explain latent {latent}", first.display(), second.display())]
    DuplicateFiles {
        /// The latent explained twice.
        latent: LatentId,
        /// The file read first.
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },
    /// The random-explanation control needs explanations of at least two latents.
    #[error("the random-explanation control needs at least 2 explanations, got {n}")]
    TooFewExplanations {
        /// How many were given.
        n: usize,
    },
    /// A record without train examples cannot be explained.
    #[error("latent {latent} has no train examples to explain")]
    NoTrainExamples {
        /// The latent.
        latent: LatentId,
    },
    /// The output-centric explainer has nothing to show: no vocabulary projection in the
    /// record and no model to steer.
    #[error(
        "latent {latent}: nothing to show of its output (no vocabulary projection in its record, \
         and no model in this process to steer)"
    )]
    NoOutputData {
        /// The latent.
        latent: LatentId,
    },
    /// A prompt template failed to render (see [`crate::prompts`]).
    #[error(transparent)]
    Prompt(#[from] crate::prompts::PromptError),
    /// The request to the LLM failed (after the client's own retries).
    #[error("LLM request failed: {0}")]
    Client(#[from] autointerp_client::Error),
    /// A shared-type operation failed (e.g. an atomic write).
    #[error(transparent)]
    Core(#[from] autointerp_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
