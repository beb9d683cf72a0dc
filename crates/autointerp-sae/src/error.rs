use std::path::PathBuf;

use autointerp_core::HookPoint;

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
    /// A weight is missing, unexpected or has the wrong shape.
    #[error("{path}: tensor `{tensor}`: {problem}")]
    Weight {
        /// The weights file.
        path: PathBuf,
        /// The tensor's key.
        tensor: String,
        /// What is wrong.
        problem: String,
    },
    /// A `.npz` archive (or one of its `.npy` members) could not be read.
    #[error("{path}: not a valid .npz archive{}: {problem}", entry_suffix(entry))]
    Npz {
        /// The archive.
        path: PathBuf,
        /// The member, when the problem is inside one.
        entry: Option<String>,
        /// What is wrong.
        problem: String,
    },
    /// A config names an architecture or activation this crate does not implement.
    #[error("{path}: unknown {field} {name:?}; supported: {}", known.join(", "))]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// The config field (`architecture`, `activation`, ...).
        field: String,
        /// The value found.
        name: String,
        /// The values this crate implements.
        known: Vec<String>,
    },
    /// A folder holds no checkpoint in a known format.
    #[error(
        "{path}: no sparse coder found (looked for cfg.json + sae.safetensors (sparsify), \
         cfg.json + sae_weights.safetensors (SAE-Lens) or params.npz (GemmaScope), in the folder \
         and up to {depth} levels of sub-folders)"
    )]
    NoCoder {
        /// The folder searched.
        path: PathBuf,
        /// How deep the search went.
        depth: usize,
    },
    /// A requested hook point matches none of the coders found.
    #[error("no sparse coder for hook point {requested:?} in {source_name}; available: {}", available.join(", "))]
    UnknownHookPoint {
        /// The hook point as requested.
        requested: String,
        /// The folder or hub repo searched.
        source_name: String,
        /// The names of the coders found.
        available: Vec<String>,
    },
    /// A hook point matches several coders: name one of them.
    #[error("hook point {requested:?} matches several sparse coders in {source_name}: {}; name one", matches.join(", "))]
    AmbiguousHookPoint {
        /// The hook point as requested.
        requested: String,
        /// The folder or hub repo searched.
        source_name: String,
        /// The names of the matching coders.
        matches: Vec<String>,
    },
    /// Downloading from the Hugging Face Hub failed, or hub support is not compiled in.
    #[error("Hugging Face Hub repo {repo:?}: {problem}; download the checkpoint and pass its local folder instead")]
    Hub {
        /// The repo id.
        repo: String,
        /// What went wrong.
        problem: String,
    },
    /// The input's last dimension does not match the coder's.
    #[error(
        "input has dimension {got} but the sparse coder{} expects d_in = {expected}",
        hook_suffix(hook)
    )]
    InputDim {
        /// The input's last dimension.
        got: i64,
        /// The coder's `d_in`.
        expected: i64,
        /// The hook point the input comes from, when known.
        hook: Option<HookPoint>,
    },
    /// The input is not a `[tokens, d_in]` matrix.
    #[error(
        "input of shape {shape:?} is not [tokens, {d_in}]{}",
        hook_suffix(hook)
    )]
    InputShape {
        /// The input's shape.
        shape: Vec<i64>,
        /// The coder's `d_in`.
        d_in: i64,
        /// The hook point the input comes from, when known.
        hook: Option<HookPoint>,
    },
    /// A sparse-coder source spec that does not parse (`neurons:x`).
    #[error("sparse coder {spec:?}: {problem}")]
    BadCoderSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        problem: String,
    },
    /// Neurons asked for at a hook point other than an MLP's hidden activations.
    #[error("neurons are read at `layers.{{i}}.mlp.hidden`, not at {hook}")]
    NeuronsAt {
        /// The hook point asked for.
        hook: HookPoint,
    },
    /// The coder for a hook point could not be loaded.
    #[error("loading the sparse coder for {hook} from {source_name:?}")]
    CoderFor {
        /// The hook point.
        hook: HookPoint,
        /// The folder or Hub repo.
        source_name: String,
        /// Why it failed.
        source: Box<Error>,
    },
    /// A coder reads activations of another width than the model's.
    #[error("the sparse coder from {source_name:?} does not fit the model")]
    DoesNotFit {
        /// The folder or Hub repo.
        source_name: String,
        /// The mismatch.
        source: Box<Error>,
    },
    /// The model could not say its width at a hook point.
    #[error("the model's hook point {hook}")]
    HookDim {
        /// The hook point.
        hook: HookPoint,
        /// The model's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The activations fed to the training loop could not be produced.
    #[error("reading activations for training")]
    Activations {
        /// The activation source's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No rows were left to train on.
    #[error("no training tokens: the dataset is smaller than one row")]
    NoTrainingData,
    /// An operation the coder cannot perform (no decoder, a missing argument, ...).
    #[error("{0}")]
    Unsupported(String),
    /// An error from libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Writing a file through the core crate failed.
    #[error(transparent)]
    Core(#[from] autointerp_core::Error),
}

fn entry_suffix(entry: &Option<String>) -> String {
    entry
        .as_ref()
        .map(|e| format!(" (member {e})"))
        .unwrap_or_default()
}

fn hook_suffix(hook: &Option<HookPoint>) -> String {
    hook.map(|h| format!(" at {h}")).unwrap_or_default()
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
