use std::path::PathBuf;

/// Errors from opening a latent cache and building records from it.
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
    /// A folder that holds no cache in any of the accepted layouts.
    #[error("{path}: not a latent cache: {reason}")]
    NotACache {
        /// The folder.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// A hook point folder whose cache run has not finished: it may lack split files or hold
    /// those of an older cache, so it is refused rather than read as a narrower cache.
    #[error(
        "{path}: unfinished cache: {problem}. The cache command that writes it is still running \
         or was stopped: rerun it (it resumes where it stopped) and wait for it to end"
    )]
    UnfinishedCache {
        /// The hook point folder, or the `latents` folder of its checkpoint.
        path: PathBuf,
        /// What shows it unfinished.
        problem: String,
    },
    /// A hook point's folder with no split files.
    #[error(
        "{0}: no split files (`<start>_<end>.safetensors`); is this a hook point's cache folder?"
    )]
    NoSplits(PathBuf),
    /// A split file that should be there is not: a gap in the latent ranges, or a shard that lacks
    /// a file the other shards have.
    #[error("{path}: missing split file: {reason}")]
    MissingSplit {
        /// The file expected (for a gap, the folder and the first missing latent).
        path: PathBuf,
        /// Why it is expected.
        reason: String,
    },
    /// A split file that cannot be read as one: not safetensors, a missing tensor, a wrong dtype
    /// or shape, or values outside the token grid.
    #[error("{path}: corrupt split file: {problem}")]
    CorruptSplit {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A set of shards that does not form one cache, or a malformed `shard.json`.
    #[error("{path}: {problem}")]
    Shard {
        /// The shard folder or its `shard.json`.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A hook point folder whose name is no hook point.
    #[error("{dir}: the folder name is not a hook point: {source}")]
    HookName {
        /// The folder.
        dir: PathBuf,
        /// The parse error.
        source: autointerp_core::Error,
    },
    /// A hook point asked for that the cache does not hold.
    #[error("hook point {hook} is not in the cache; cached: {}", cached.join(", "))]
    HookNotCached {
        /// The hook point asked for.
        hook: String,
        /// The hook points the cache holds.
        cached: Vec<String>,
    },
    /// A latent asked for that no split holds.
    #[error("latent {latent} of {hook} is in no split (the cache covers latents 0..{width})")]
    LatentNotCached {
        /// The hook point.
        hook: String,
        /// The latent.
        latent: u32,
        /// Number of cached latents.
        width: u32,
    },
    /// No split file of a hook point (in some shard) holds the token grid.
    #[error("{0}: no split file holds `tokens`, so examples cannot be built")]
    NoTokens(PathBuf),
    /// A configuration value that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Neighbour-based non-activating examples were asked for a hook point without neighbour lists.
    #[error("non_activating_source = \"neighbours\" needs neighbour lists for {0}: pass them with `DatasetBuilder::neighbours`")]
    MissingNeighbours(String),
    /// Embedding-based non-activating examples were asked for without an embedder.
    #[error("non_activating_source = \"embedding\" needs an embedder: pass one with `DatasetBuilder::embedder`")]
    MissingEmbedder,
    /// The embedder failed or returned vectors of the wrong number or size.
    #[error("embedder: {0}")]
    Embedder(String),
    /// Weight rows whose length is not `width * dim`.
    #[error("weight matrix of {len} values is not {width} rows of {dim}")]
    WeightShape {
        /// Values given.
        len: usize,
        /// Rows expected.
        width: usize,
        /// Values per row.
        dim: usize,
    },
    /// Writing a file through the core crate failed.
    #[error(transparent)]
    Core(#[from] autointerp_core::Error),
    /// A hook point's `firing_counts.json` that cannot be read as one.
    #[error("{path}: not the firing counts of this cache: {problem}")]
    FiringCounts {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A neighbour-list file that cannot be parsed.
    #[error("{path}: not a neighbour list: {problem}")]
    Neighbours {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
