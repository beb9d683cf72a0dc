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
    /// A setting or an input the run cannot work with (no tokens, a coder without latents, more
    /// splits than latents); the message names it.
    #[error("{0}")]
    InvalidRun(String),
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
    /// A dataset that is neither a local path nor a Hub dataset id.
    #[error(
        "dataset {spec:?} not found: pass a .txt/.jsonl/.parquet file or a folder of them, or a \
         Hub dataset id (owner/name)"
    )]
    DatasetNotFound {
        /// The dataset as given.
        spec: String,
    },
    /// A Hub config or split given for a local dataset.
    #[error(
        "dataset_name and dataset_split choose part of a Hub dataset, but {spec:?} is a local path"
    )]
    NotAHubDataset {
        /// The dataset as given.
        spec: String,
    },
    /// A split spec that does not parse (`train[:x%]`).
    #[error("{problem}")]
    BadSplit {
        /// The split as given.
        split: String,
        /// What is wrong, naming the split.
        problem: String,
    },
    /// A text dataset and no tokenizer to tokenize it.
    #[error(
        "the text dataset {dataset:?} cannot be tokenized: the model has no tokenizer (no \
         tokenizer.json, or a GGUF file without tokenizer metadata); add a tokenizer.json to the \
         model, pass --tokenizer, or pass a pre-tokenized .safetensors dataset"
    )]
    NoTokenizer {
        /// The dataset as given.
        dataset: String,
    },
    /// A shard spec that is not `I/N` with `I < N`.
    #[error("shard {spec:?}: expected I/N with 0 <= I < N, e.g. 0/4")]
    BadShard {
        /// The spec as given.
        spec: String,
    },
    /// A shard that gets no rows.
    #[error("shard {index} of {count} gets no rows ({rows} rows in all)")]
    EmptyShard {
        /// Which shard.
        index: usize,
        /// How many shards.
        count: usize,
        /// Rows in all.
        rows: usize,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] autointerp_model::Error),
    /// A sparse coder or the SAE trainer failed.
    #[error(transparent)]
    Sae(#[from] autointerp_sae::Error),
    /// The forward pass or an encoder failed, or returned tensors of the wrong shape.
    #[error("forward pass: {0}")]
    Forward(String),
    /// A split file could not be written or read, or the output folder is in use by another
    /// process (`autointerp_core::Error::Locked`, naming it).
    #[error(transparent)]
    Split(#[from] autointerp_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
