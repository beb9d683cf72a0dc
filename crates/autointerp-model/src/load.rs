//! Loading models: HF folders, lone GGUF files and Hugging Face Hub ids.

use std::path::{Path, PathBuf};

use tch::Device;

use crate::config::Config;
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;
use crate::{DType, Error, Result};

impl Model {
    /// Loads a model and its tokenizer from a local path or a Hugging Face Hub id:
    ///
    /// - a `.gguf` file (or any file starting with the GGUF magic): a complete model, tokenizer
    ///   included (architectures llama, qwen2, gemma2, gemma3);
    /// - a folder with `config.json` and `model.safetensors` (or shards listed by
    ///   `model.safetensors.index.json`), and `tokenizer.json` when it has one; a folder holding
    ///   a single `.gguf` file and no `config.json` loads that file;
    /// - otherwise, `owner/name` is downloaded from the Hub (cached under `HF_HOME`); with
    ///   `HF_HUB_OFFLINE=1` only the cache is used.
    ///
    /// The tokenizer is `None` for a folder without `tokenizer.json` (or a GGUF file without
    /// `tokenizer.*` metadata).
    ///
    /// # Errors
    /// [`Error::ModelPath`] for a path that does not exist and is no Hub id; [`Error::Hub`]
    /// when downloading fails (offline: pass a local path instead); and the errors of
    /// [`Model::from_hf_dir`] and [`Model::from_gguf`].
    pub fn load(source: &str, device: Device, dtype: DType) -> Result<(Model, Option<Tokenizer>)> {
        let path = Path::new(source);
        if path.is_file() && path.file_name().is_some_and(|n| n == "config.json") {
            let dir = path.parent().unwrap_or(Path::new("."));
            return Self::load(&dir.to_string_lossy(), device, dtype);
        }
        if path.is_file() {
            return Self::load_gguf_with_tokenizer(path, device, dtype);
        }
        if path.is_dir() {
            if !path.join("config.json").is_file() {
                if let Some(gguf) = single_gguf(path) {
                    return Self::load_gguf_with_tokenizer(&gguf, device, dtype);
                }
            }
            let model = Self::from_hf_dir(path, device, dtype)?;
            let tokenizer = if path.join("tokenizer.json").is_file() {
                Some(Tokenizer::from_hf_dir(path)?)
            } else {
                None
            };
            return Ok((model, tokenizer));
        }
        if !autointerp_core::is_hub_repo_id(source) {
            return Err(Error::ModelPath {
                path: path.to_path_buf(),
                problem: "no such file or folder (and not a Hugging Face Hub id like owner/name)"
                    .into(),
            });
        }
        let dir = hub_download(source)?;
        Self::load(&dir.to_string_lossy(), device, dtype)
    }

    fn load_gguf_with_tokenizer(
        path: &Path,
        device: Device,
        dtype: DType,
    ) -> Result<(Model, Option<Tokenizer>)> {
        let gguf = GgufFile::open(path)?;
        // A file without tokenizer metadata is still a model.
        let tokenizer = match gguf.get("tokenizer.ggml.model") {
            Some(_) => Some(Tokenizer::from(gguf.tokenizer()?)),
            None => None,
        };
        let model = Self::from_gguf_file(gguf, device, dtype)?;
        Ok((model, tokenizer))
    }

    /// Loads `config.json` and the safetensors weights of an HF folder.
    ///
    /// # Errors
    /// [`Error::Config`]/[`Error::UnknownModelType`] for the config; [`Error::Safetensors`] for
    /// an unreadable (e.g. truncated) file; [`Error::MissingTensor`], [`Error::TensorShape`],
    /// [`Error::TensorDType`] and [`Error::UnexpectedTensors`] naming the tensor and file.
    pub fn from_hf_dir(dir: impl AsRef<Path>, device: Device, dtype: DType) -> Result<Model> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::ModelPath {
                path: dir.to_path_buf(),
                problem: "no config.json".into(),
            });
        }
        let config = Config::from_hf_file(&config_path)?;
        let weights = Weights::from_hf_dir(dir, device, dtype.kind())?;
        tracing::info!(path = %dir.display(), arch = ?config.arch, "loading HF model");
        Model::build(config, weights)
    }

    /// Loads a GGUF file as a complete model (dequantised to `dtype`).
    ///
    /// # Errors
    /// [`Error::Gguf`] for a malformed file, [`Error::UnknownModelType`] for an architecture
    /// other than llama, qwen2, gemma2, gemma3, and the tensor errors of [`Model::from_hf_dir`].
    pub fn from_gguf(path: impl AsRef<Path>, device: Device, dtype: DType) -> Result<Model> {
        Self::from_gguf_file(GgufFile::open(path)?, device, dtype)
    }

    /// Like [`Model::from_gguf`], for a file already opened.
    ///
    /// # Errors
    /// As [`Model::from_gguf`].
    pub fn from_gguf_file(gguf: GgufFile, device: Device, dtype: DType) -> Result<Model> {
        let config = Config::from_gguf(&gguf)?;
        tracing::info!(path = %gguf.path().display(), arch = ?config.arch, "loading GGUF model");
        let weights = Weights::from_gguf(gguf, &config, device, dtype.kind());
        Model::build(config, weights)
    }
}

impl Tokenizer {
    /// Loads a tokenizer from wherever a model can come from, for commands that decode tokens
    /// but run no model:
    ///
    /// - a `tokenizer.json` file (with `tokenizer_config.json` beside it when present);
    /// - a `.gguf` file (its `tokenizer.*` metadata);
    /// - an HF folder with `tokenizer.json`, or a folder holding a single `.gguf` file;
    /// - otherwise a Hub id `owner/name`, whose `tokenizer.json` and `tokenizer_config.json`
    ///   are downloaded (cached under `HF_HOME`; only the cache with `HF_HUB_OFFLINE=1`).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] for a folder or GGUF file without a tokenizer (the message says
    /// how to name one), [`Error::ModelPath`] for a path that does not exist and is no Hub id,
    /// [`Error::Hub`] when the download fails.
    pub fn load(source: &str) -> Result<Self> {
        let path = Path::new(source);
        let missing = |path: PathBuf, what: &str| Error::Tokenizer {
            path,
            problem: format!(
                "{what}; a model cached from pre-tokenized ids may have none: name one with \
                 --tokenizer (a tokenizer.json, an HF folder with one, a .gguf file or a Hub id)"
            ),
        };
        if path.is_file() {
            if path.extension().is_some_and(|e| e == "json") {
                let dir = path.parent().unwrap_or(Path::new("."));
                if path.file_name().is_some_and(|n| n == "tokenizer.json") {
                    return Self::from_hf_dir(dir);
                }
                let inner =
                    tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
                        path: path.to_path_buf(),
                        problem: e.to_string(),
                    })?;
                return Ok(Self::from_tokenizer(inner));
            }
            let gguf = GgufFile::open(path)?;
            if gguf.get("tokenizer.ggml.model").is_none() {
                return Err(missing(
                    path.to_path_buf(),
                    "no tokenizer.* metadata in this GGUF file",
                ));
            }
            return Ok(Self::from(gguf.tokenizer()?));
        }
        if path.is_dir() {
            if path.join("tokenizer.json").is_file() {
                return Self::from_hf_dir(path);
            }
            if !path.join("config.json").is_file() {
                if let Some(gguf) = single_gguf(path) {
                    return Self::load(&gguf.to_string_lossy());
                }
            }
            return Err(missing(
                path.join("tokenizer.json"),
                "no tokenizer.json in this folder",
            ));
        }
        if !autointerp_core::is_hub_repo_id(source) {
            return Err(Error::ModelPath {
                path: path.to_path_buf(),
                problem: "no such file or folder (and not a Hugging Face Hub id like owner/name)"
                    .into(),
            });
        }
        let dir = hub_tokenizer_download(source)?;
        Self::from_hf_dir(dir)
    }
}

/// Downloads (or finds in the cache) a Hub model's `tokenizer.json` and `tokenizer_config.json`.
fn hub_tokenizer_download(repo: &str) -> Result<PathBuf> {
    let hub_err = |problem: String| Error::Hub {
        repo: repo.to_owned(),
        problem,
    };
    let tokenizer = if offline() {
        let cache = hf_hub::Cache::from_env().model(repo.to_owned());
        let _ = cache.get("tokenizer_config.json");
        cache.get("tokenizer.json").ok_or_else(|| {
            hub_err(format!(
                "HF_HUB_OFFLINE is set and the cache ({}) has no tokenizer.json of it; pass a \
                 local tokenizer.json, HF folder or .gguf file",
                hf_hub::Cache::from_env().path().display()
            ))
        })?
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| hub_err(format!("cannot set up the Hub client: {e}")))?;
        let model = api.model(repo.to_owned());
        let tokenizer = model
            .get("tokenizer.json")
            .map_err(|e| hub_err(format!("cannot fetch tokenizer.json ({e})")))?;
        if let Err(e) = model.get("tokenizer_config.json") {
            tracing::debug!(repo, error = %e, "tokenizer_config.json not fetched");
        }
        tokenizer
    };
    parent(&tokenizer).ok_or_else(|| hub_err("bad cache path".into()))
}

/// The only `.gguf` file in `dir`, if there is exactly one.
fn single_gguf(dir: &Path) -> Option<PathBuf> {
    let mut found = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

const LOCAL_HINT: &str =
    "pass a local path instead: an HF folder (config.json + model.safetensors) or a .gguf file";

/// Downloads (or finds in the cache) the files of a Hub model; returns its snapshot folder.
fn hub_download(repo: &str) -> Result<PathBuf> {
    let hub_err = |problem: String| Error::Hub {
        repo: repo.to_owned(),
        problem,
    };
    if offline() {
        let cache = hf_hub::Cache::from_env().model(repo.to_owned());
        let config = cache.get("config.json").ok_or_else(|| {
            hub_err(format!(
                "HF_HUB_OFFLINE is set and the model is not in the cache ({}); {LOCAL_HINT}",
                hf_hub::Cache::from_env().path().display()
            ))
        })?;
        let has_weights = cache.get("model.safetensors").is_some()
            || cache.get("model.safetensors.index.json").is_some();
        if !has_weights {
            return Err(hub_err(format!(
                "HF_HUB_OFFLINE is set and the cache lacks the model's weights; {LOCAL_HINT}"
            )));
        }
        for extra in ["tokenizer.json", "tokenizer_config.json"] {
            let _ = cache.get(extra);
        }
        return parent(&config).ok_or_else(|| hub_err("bad cache path".into()));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| hub_err(format!("cannot set up the Hub client: {e}; {LOCAL_HINT}")))?;
    let model = api.model(repo.to_owned());
    let config = model.get("config.json").map_err(|e| {
        hub_err(format!(
            "cannot fetch config.json ({e}); without network access (or with HF_HUB_OFFLINE=1 and \
             nothing cached), {LOCAL_HINT}"
        ))
    })?;
    if let Err(single) = model.get("model.safetensors") {
        let index = model.get("model.safetensors.index.json").map_err(|e| {
            hub_err(format!(
                "no model.safetensors ({single}) and no model.safetensors.index.json ({e}); {LOCAL_HINT}"
            ))
        })?;
        let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
            path: index.clone(),
            source,
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: index.clone(),
            problem: e.to_string(),
        })?;
        let mut shards: Vec<&str> = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| m.values().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            model
                .get(shard)
                .map_err(|e| hub_err(format!("cannot fetch {shard}: {e}")))?;
        }
    }
    for optional in ["tokenizer.json", "tokenizer_config.json"] {
        if let Err(e) = model.get(optional) {
            tracing::debug!(repo, file = optional, error = %e, "optional file not fetched");
        }
    }
    parent(&config).ok_or_else(|| hub_err("bad cache path".into()))
}

fn parent(p: &Path) -> Option<PathBuf> {
    p.parent().map(Path::to_path_buf)
}
