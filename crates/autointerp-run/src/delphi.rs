//! delphi's `run_config.json`, read and written.
//!
//! delphi (`python -m delphi`) saves its `RunConfig` with `save_json` at the top of its results
//! folder: the settings of its `CacheConfig`, `ConstructorConfig` and `SamplerConfig` nested under
//! `cache_cfg`, `constructor_cfg` and `sampler_cfg`, the rest at the top level. Three forms of the
//! file are read here:
//!
//! - ours without delphi's keys (autointerp before it wrote them): read as [`RunConfig`];
//! - delphi's own: read as [`DelphiRunConfig`] and converted, every setting to ours (the table
//!   is [`DelphiRunConfig::into_run_config`]'s documentation); a setting autointerp cannot honour
//!   is an error that names it, one that changes nothing here is noted;
//! - ours with delphi's keys beside our own (what [`crate::save_config`] writes, so that delphi's
//!   `log_results` finds `constructor_cfg.min_examples`): our keys are the settings, and delphi's
//!   must repeat them (a file edited in one place only is an error naming the key).

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::config::RunConfig;
use crate::NonActivatingSource;
use crate::{Error, Result};

/// The keys of delphi's `run_config.json` that are not ours, written beside ours.
const DELPHI_ONLY: [&str; 8] = [
    "cache_cfg",
    "constructor_cfg",
    "sampler_cfg",
    "hf_token",
    "pipeline_num_proc",
    "num_gpus",
    "max_memory",
    "verbose",
];

/// delphi's top-level keys (its `main` branch, and the 0.1.1 release, which lacks `fuzz_type`
/// and `max_memory`).
const DELPHI_TOP: [&str; 25] = [
    "cache_cfg",
    "constructor_cfg",
    "sampler_cfg",
    "model",
    "sparse_model",
    "hookpoints",
    "explainer_model",
    "explainer_model_max_len",
    "explainer_provider",
    "explainer",
    "scorers",
    "fuzz_type",
    "name",
    "max_latents",
    "filter_bos",
    "log_probs",
    "load_in_8bit",
    "hf_token",
    "pipeline_num_proc",
    "num_gpus",
    "max_memory",
    "seed",
    "verbose",
    "num_examples_per_scorer_prompt",
    "overwrite",
];

/// delphi's `CacheConfig` (`cache_cfg`), with delphi's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DelphiCacheConfig {
    /// Dataset repository of the cached text.
    pub dataset_repo: String,
    /// Dataset split, optionally sliced (`train[:1%]`).
    pub dataset_split: String,
    /// Dataset config name (`""`: none).
    pub dataset_name: String,
    /// Column holding the text (`dataset_row` in older delphi).
    #[serde(alias = "dataset_row")]
    pub dataset_column: String,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Tokens per cached sequence.
    pub cache_ctx_len: usize,
    /// Tokens to cache.
    pub n_tokens: usize,
    /// Split files per hook point.
    pub n_splits: u32,
}

impl Default for DelphiCacheConfig {
    fn default() -> Self {
        Self {
            dataset_repo: "EleutherAI/SmolLM2-135M-10B".into(),
            dataset_split: "train[:1%]".into(),
            dataset_name: String::new(),
            dataset_column: "text".into(),
            batch_size: 32,
            cache_ctx_len: 256,
            n_tokens: 10_000_000,
            n_splits: 5,
        }
    }
}

/// delphi's `ConstructorConfig` (`constructor_cfg`), with delphi's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DelphiConstructorConfig {
    /// Embedding model of the `FAISS` source.
    pub faiss_embedding_model: String,
    /// Embedding cache folder of the `FAISS` source.
    pub faiss_embedding_cache_dir: String,
    /// Whether the `FAISS` source caches its embeddings.
    pub faiss_embedding_cache_enabled: bool,
    /// Tokens per example.
    pub example_ctx_len: usize,
    /// Latents with fewer activating examples are skipped.
    pub min_examples: usize,
    /// Non-activating examples per latent.
    pub n_non_activating: usize,
    /// delphi's flag, wired the other way round from its name: `true` gives aligned windows.
    pub center_examples: bool,
    /// `random`, `neighbours` or `FAISS`.
    pub non_activating_source: String,
    /// `co-occurrence`, `decoder_similarity` or `encoder_similarity` (with `neighbours`).
    pub neighbours_type: String,
}

impl Default for DelphiConstructorConfig {
    fn default() -> Self {
        Self {
            faiss_embedding_model: "sentence-transformers/all-MiniLM-L6-v2".into(),
            faiss_embedding_cache_dir: ".embedding_cache".into(),
            faiss_embedding_cache_enabled: true,
            example_ctx_len: 32,
            min_examples: 200,
            n_non_activating: 50,
            center_examples: true,
            non_activating_source: "random".into(),
            neighbours_type: "co-occurrence".into(),
        }
    }
}

/// delphi's `SamplerConfig` (`sampler_cfg`), with delphi's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DelphiSamplerConfig {
    /// Examples shown to the explainer.
    pub n_examples_train: usize,
    /// Examples held out for scoring.
    pub n_examples_test: usize,
    /// Activation quantiles.
    pub n_quantiles: usize,
    /// `top`, `random`, `quantiles` or `mix`.
    pub train_type: String,
    /// `quantiles` (delphi's only choice).
    pub test_type: String,
    /// With `mix`: fraction of train examples from the very top.
    pub ratio_top: f64,
}

impl Default for DelphiSamplerConfig {
    fn default() -> Self {
        Self {
            n_examples_train: 40,
            n_examples_test: 50,
            n_quantiles: 10,
            train_type: "quantiles".into(),
            test_type: "quantiles".into(),
            ratio_top: 0.2,
        }
    }
}

/// delphi's `RunConfig` as its `run_config.json` holds it, with delphi's defaults (of its `main`
/// branch) for keys a hand-written file leaves out. Read it with [`RunConfig::from_json_file`],
/// which recognises the form; convert it with [`DelphiRunConfig::into_run_config`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DelphiRunConfig {
    /// `CacheConfig`.
    pub cache_cfg: DelphiCacheConfig,
    /// `ConstructorConfig`.
    pub constructor_cfg: DelphiConstructorConfig,
    /// `SamplerConfig`.
    pub sampler_cfg: DelphiSamplerConfig,
    /// The model explained.
    pub model: String,
    /// The sparse coders.
    pub sparse_model: String,
    /// Hook points.
    pub hookpoints: Vec<String>,
    /// The explainer and scorer model.
    pub explainer_model: String,
    /// The explainer model's context length (vLLM's `max_model_len`).
    pub explainer_model_max_len: usize,
    /// `offline` (vLLM in the process) or `openrouter`.
    pub explainer_provider: String,
    /// `default` or `none`.
    pub explainer: String,
    /// `fuzz`, `detection`, `simulation`.
    pub scorers: Vec<String>,
    /// `default` or `active` (not in delphi 0.1.1).
    pub fuzz_type: String,
    /// The run's folder name.
    pub name: String,
    /// Latents `0..max_latents` of each hook point.
    pub max_latents: Option<u32>,
    /// Drop BOS tokens before caching.
    pub filter_bos: bool,
    /// Ask for answer logprobs.
    pub log_probs: bool,
    /// Load the model in 8 bit.
    pub load_in_8bit: bool,
    /// Whether the file holds a Hugging Face token (delphi saves `null`); its value is never kept.
    #[serde(deserialize_with = "given")]
    pub hf_token: bool,
    /// Latents processed at once.
    pub pipeline_num_proc: usize,
    /// GPUs for the explainer model.
    pub num_gpus: usize,
    /// Fraction of GPU memory for the explainer model (not in delphi 0.1.1).
    pub max_memory: f64,
    /// Seed.
    pub seed: u64,
    /// Log statistics and call `log_results` at the end.
    pub verbose: bool,
    /// Examples per detection/fuzzing prompt.
    pub num_examples_per_scorer_prompt: usize,
    /// Stages to redo: `cache`, `neighbours`, `scores`.
    pub overwrite: Vec<String>,
}

impl Default for DelphiRunConfig {
    fn default() -> Self {
        Self {
            cache_cfg: DelphiCacheConfig::default(),
            constructor_cfg: DelphiConstructorConfig::default(),
            sampler_cfg: DelphiSamplerConfig::default(),
            model: "meta-llama/Meta-Llama-3-8B".into(),
            sparse_model: "EleutherAI/sae-llama-3-8b-32x".into(),
            hookpoints: Vec::new(),
            explainer_model: "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4".into(),
            explainer_model_max_len: 5120,
            explainer_provider: "offline".into(),
            explainer: "default".into(),
            scorers: vec!["fuzz".into(), "detection".into()],
            fuzz_type: "default".into(),
            name: String::new(),
            max_latents: None,
            filter_bos: true,
            log_probs: false,
            load_in_8bit: false,
            hf_token: false,
            pipeline_num_proc: 1,
            num_gpus: 0,
            max_memory: 0.7,
            seed: 22,
            verbose: true,
            num_examples_per_scorer_prompt: 5,
            overwrite: Vec::new(),
        }
    }
}

/// `true` for a value other than `null`, without keeping it.
fn given<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<IgnoredAny>::deserialize(d)?.is_some())
}

/// One of our enums from delphi's string for it, or the reason it is none.
fn parse<T: serde::de::DeserializeOwned>(value: &str) -> std::result::Result<T, String> {
    serde_json::from_value(Value::String(value.to_owned())).map_err(|e| e.to_string())
}

impl DelphiRunConfig {
    /// Our settings for delphi's, and notes on the delphi settings that change nothing here.
    ///
    /// | delphi | autointerp |
    /// |---|---|
    /// | `cache_cfg.dataset_repo`, `dataset_split`, `dataset_name` | `dataset`, `dataset_split`, `dataset_name` (`""`: unset) |
    /// | `cache_cfg.dataset_column`, `batch_size`, `n_tokens`, `n_splits` | the same names |
    /// | `cache_cfg.cache_ctx_len` | `ctx_len` |
    /// | `constructor_cfg.example_ctx_len`, `min_examples`, `n_non_activating` | the same names |
    /// | `constructor_cfg.center_examples` | `center_examples`, negated: delphi's `true` gives aligned windows, ours `false` does |
    /// | `constructor_cfg.non_activating_source` | `non_activating_source`: `random`, `neighbours`, `FAISS` → `embedding` |
    /// | `constructor_cfg.neighbours_type` | `neighbours_type` (used with `neighbours`; noted as no effect otherwise) |
    /// | `constructor_cfg.faiss_embedding_model` | `embedding_model` with `FAISS` (a name sent to an `/embeddings` server, noted; `local:PATH` runs a folder here); no effect otherwise |
    /// | `constructor_cfg.faiss_embedding_cache_dir`, `faiss_embedding_cache_enabled` | no effect on results: embeddings are kept in memory for one run (noted) |
    /// | `sampler_cfg.*` | the same names; `test_type` must be `quantiles` |
    /// | `model`, `sparse_model`, `hookpoints`, `explainer_model`, `scorers`, `name`, `max_latents`, `filter_bos`, `log_probs`, `seed`, `num_examples_per_scorer_prompt`, `fuzz_type` | the same names |
    /// | `load_in_8bit` | `load_in_8bit`: `true` is refused when the cache is to be built, and changes nothing once it exists |
    /// | `explainer_model_max_len` | `explainer_model_max_len` (used with the local engine) |
    /// | `explainer_provider` | `offline` → `local`, `openrouter` → `openrouter` |
    /// | `explainer` | `default`, `none` |
    /// | `pipeline_num_proc` | `max_concurrency` (latents in flight) |
    /// | `overwrite` | `overwrite` (`cache`, `neighbours`, `scores`) |
    /// | `hf_token` | not kept: autointerp reads `HF_TOKEN` (noted when set) |
    /// | `num_gpus`, `max_memory`, `verbose` | no effect on results (noted) |
    ///
    /// # Errors
    /// [`Error::Config`] listing every setting autointerp cannot honour, each by name and value.
    pub fn into_run_config(self) -> Result<(RunConfig, Vec<String>)> {
        let mut refused: Vec<String> = Vec::new();
        let mut ignored: Vec<&str> = vec![
            "num_gpus",
            "max_memory",
            "verbose",
            "constructor_cfg.faiss_embedding_cache_dir",
            "constructor_cfg.faiss_embedding_cache_enabled",
        ];
        let mut notes = Vec::new();
        let mut cfg = RunConfig::default();
        let nonempty = |s: String| (!s.is_empty()).then_some(s);

        let c = self.cache_cfg;
        cfg.dataset = nonempty(c.dataset_repo);
        cfg.dataset_split = nonempty(c.dataset_split);
        cfg.dataset_name = nonempty(c.dataset_name);
        cfg.dataset_column = c.dataset_column;
        cfg.batch_size = c.batch_size;
        cfg.ctx_len = c.cache_ctx_len;
        cfg.n_tokens = c.n_tokens;
        cfg.n_splits = c.n_splits;

        let k = self.constructor_cfg;
        cfg.example_ctx_len = k.example_ctx_len;
        cfg.min_examples = k.min_examples;
        cfg.n_non_activating = k.n_non_activating;
        cfg.center_examples = !k.center_examples;
        match parse(&k.non_activating_source) {
            Ok(source) => cfg.non_activating_source = source,
            Err(e) => refused.push(format!(
                "constructor_cfg.non_activating_source = {:?}: {e}",
                k.non_activating_source
            )),
        }
        match parse(&k.neighbours_type) {
            Ok(t) => cfg.neighbours_type = t,
            Err(e) => refused.push(format!(
                "constructor_cfg.neighbours_type = {:?}: {e}",
                k.neighbours_type
            )),
        }
        if cfg.non_activating_source != NonActivatingSource::Neighbours {
            ignored.push("constructor_cfg.neighbours_type");
        }
        if cfg.non_activating_source == NonActivatingSource::Embedding {
            if !k.faiss_embedding_model.starts_with("local:") {
                notes.push(format!(
                    "constructor_cfg.faiss_embedding_model = {:?} is asked of an /embeddings \
                     server (--embedding-base-url); to run a sentence-transformers folder here \
                     as delphi does, pass --embedding-model local:PATH",
                    k.faiss_embedding_model
                ));
            }
            cfg.embedding_model = Some(k.faiss_embedding_model);
        } else {
            ignored.push("constructor_cfg.faiss_embedding_model");
        }

        let s = self.sampler_cfg;
        cfg.n_examples_train = s.n_examples_train;
        cfg.n_examples_test = s.n_examples_test;
        cfg.n_quantiles = s.n_quantiles;
        match parse(&s.train_type) {
            Ok(t) => cfg.train_type = t,
            Err(e) => refused.push(format!("sampler_cfg.train_type = {:?}: {e}", s.train_type)),
        }
        if s.test_type != "quantiles" {
            refused.push(format!(
                "sampler_cfg.test_type = {:?}: test examples are drawn by quantile only \
                 (\"quantiles\")",
                s.test_type
            ));
        }
        cfg.ratio_top = s.ratio_top;

        cfg.model = self.model;
        cfg.sparse_model = self.sparse_model;
        cfg.hookpoints = self.hookpoints;
        cfg.explainer_model = self.explainer_model;
        cfg.explainer_model_max_len = Some(self.explainer_model_max_len);
        match self.explainer_provider.as_str() {
            "offline" | "openrouter" => {
                cfg.explainer_provider = parse(&self.explainer_provider)
                    .map_err(|e| Error::Config(format!("explainer_provider: {e}")))?;
            }
            other => refused.push(format!(
                "explainer_provider = {other:?}: delphi's providers are \"offline\" and \
                 \"openrouter\""
            )),
        }
        match parse(&self.explainer) {
            Ok(e) => cfg.explainer = e,
            Err(e) => refused.push(format!("explainer = {:?}: {e}", self.explainer)),
        }
        cfg.scorers = Vec::new();
        for name in &self.scorers {
            match parse(name) {
                Ok(k) => cfg.scorers.push(k),
                Err(e) => refused.push(format!("scorers: {name:?}: {e}")),
            }
        }
        match parse(&self.fuzz_type) {
            Ok(f) => cfg.fuzz_type = f,
            Err(e) => refused.push(format!("fuzz_type = {:?}: {e}", self.fuzz_type)),
        }
        cfg.name = self.name;
        cfg.max_latents = self.max_latents;
        cfg.filter_bos = self.filter_bos;
        cfg.log_probs = self.log_probs;
        cfg.load_in_8bit = self.load_in_8bit;
        cfg.max_concurrency = self.pipeline_num_proc.max(1);
        cfg.seed = self.seed;
        cfg.num_examples_per_scorer_prompt = self.num_examples_per_scorer_prompt;
        cfg.overwrite = Vec::new();
        for stage in &self.overwrite {
            match parse(stage) {
                Ok(o) => cfg.overwrite.push(o),
                Err(e) => refused.push(format!("overwrite: {stage:?}: {e}")),
            }
        }
        if self.hf_token {
            notes.push(
                "hf_token is not used: autointerp reads the Hugging Face token from HF_TOKEN"
                    .into(),
            );
        }
        notes.push(format!(
            "delphi settings that change nothing here: {}",
            ignored.join(", ")
        ));
        if !refused.is_empty() {
            return Err(Error::Config(format!(
                "delphi settings autointerp does not support:\n  - {}",
                refused.join("\n  - ")
            )));
        }
        Ok((cfg, notes))
    }
}

/// `run_config.json` as [`crate::save_config`] writes it: our keys, and delphi's that are not ours
/// beside them. `explainer_model_max_len` is left out when unset: delphi's `RunConfig` reads it
/// as a number (`null` stops its `load_json`), and takes its default when it is missing; ours
/// reads a missing key as unset.
pub(crate) fn saved_form(cfg: &RunConfig) -> Result<Map<String, Value>> {
    let Value::Object(mut map) = serde_json::to_value(cfg)? else {
        return Err(Error::Config("a run config serialises to a map".into()));
    };
    if map.get("explainer_model_max_len") == Some(&Value::Null) {
        map.remove("explainer_model_max_len");
    }
    map.extend(delphi_keys(cfg));
    Ok(map)
}

/// delphi's keys that are not ours, for `cfg`: what [`crate::save_config`] writes beside our
/// keys. The keys both have (`model`, `hookpoints`, `scorers`, …) are ours as they are.
pub(crate) fn delphi_keys(cfg: &RunConfig) -> Map<String, Value> {
    let cache = DelphiCacheConfig {
        dataset_repo: cfg.dataset.clone().unwrap_or_default(),
        dataset_split: cfg.dataset_split.clone().unwrap_or_default(),
        dataset_name: cfg.dataset_name.clone().unwrap_or_default(),
        dataset_column: cfg.dataset_column.clone(),
        batch_size: cfg.batch_size,
        cache_ctx_len: cfg.ctx_len,
        n_tokens: cfg.n_tokens,
        n_splits: cfg.n_splits,
    };
    let defaults = DelphiConstructorConfig::default();
    let embedding = cfg.non_activating_source == NonActivatingSource::Embedding;
    let constructor = DelphiConstructorConfig {
        faiss_embedding_model: match &cfg.embedding_model {
            Some(m) if embedding => m.clone(),
            _ => defaults.faiss_embedding_model.clone(),
        },
        example_ctx_len: cfg.example_ctx_len,
        min_examples: cfg.min_examples,
        n_non_activating: cfg.n_non_activating,
        center_examples: !cfg.center_examples,
        non_activating_source: match cfg.non_activating_source {
            NonActivatingSource::Random => "random",
            NonActivatingSource::Neighbours => "neighbours",
            NonActivatingSource::Embedding => "FAISS",
        }
        .into(),
        neighbours_type: cfg.neighbours_type.name().into(),
        ..defaults
    };
    let sampler = DelphiSamplerConfig {
        n_examples_train: cfg.n_examples_train,
        n_examples_test: cfg.n_examples_test,
        n_quantiles: cfg.n_quantiles,
        train_type: word(&cfg.train_type),
        test_type: "quantiles".into(),
        ratio_top: cfg.ratio_top,
    };
    let on_gpu = cfg.device.starts_with("cuda");
    let mut map = Map::new();
    map.insert("cache_cfg".into(), to_value(&cache));
    map.insert("constructor_cfg".into(), to_value(&constructor));
    map.insert("sampler_cfg".into(), to_value(&sampler));
    map.insert("hf_token".into(), Value::Null);
    map.insert("pipeline_num_proc".into(), cfg.max_concurrency.into());
    map.insert("num_gpus".into(), usize::from(on_gpu).into());
    map.insert("max_memory".into(), 0.7.into());
    map.insert("verbose".into(), true.into());
    map
}

/// A struct of plain fields as JSON (cannot fail).
fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The string a unit enum serialises to.
fn word(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Reads a `run_config.json` in any of the three forms (see the module docs); `what` names it
/// in errors. Returns the settings and the notes for the user.
pub(crate) fn from_json_value(value: Value, what: &str) -> Result<(RunConfig, Vec<String>)> {
    let parse_error = |reason: String| Error::Parse {
        what: what.to_string(),
        reason,
    };
    let Value::Object(mut map) = value else {
        return Err(parse_error("not a JSON object of settings".into()));
    };
    let nested = ["cache_cfg", "constructor_cfg", "sampler_cfg"]
        .iter()
        .any(|k| map.contains_key(*k));
    if !nested {
        let cfg =
            serde_json::from_value(Value::Object(map)).map_err(|e| parse_error(e.to_string()))?;
        return Ok((cfg, Vec::new()));
    }
    let ours = our_keys();
    let has_ours = map
        .keys()
        .any(|k| ours.contains(k) && !DELPHI_TOP.contains(&k.as_str()));
    if !has_ours {
        let delphi: DelphiRunConfig = serde_json::from_value(Value::Object(map))
            .map_err(|e| parse_error(format!("a delphi run config, but {e}")))?;
        return delphi
            .into_run_config()
            .map_err(|e| parse_error(e.to_string()));
    }
    let mut theirs = Map::new();
    for key in DELPHI_ONLY {
        if let Some(v) = map.remove(key) {
            theirs.insert(key.to_string(), v);
        }
    }
    let cfg: RunConfig =
        serde_json::from_value(Value::Object(map)).map_err(|e| parse_error(e.to_string()))?;
    check_agreement(&cfg, &theirs).map_err(parse_error)?;
    Ok((cfg, Vec::new()))
}

/// The top-level keys of our own form.
fn our_keys() -> Vec<String> {
    match serde_json::to_value(RunConfig::default()) {
        Ok(Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// In a file of ours, delphi's keys must repeat our settings: the first one that does not is
/// named. `hf_token`, `num_gpus`, `max_memory` and `verbose` change nothing and are not compared.
fn check_agreement(
    cfg: &RunConfig,
    theirs: &Map<String, Value>,
) -> std::result::Result<(), String> {
    let want = delphi_keys(cfg);
    for key in [
        "cache_cfg",
        "constructor_cfg",
        "sampler_cfg",
        "pipeline_num_proc",
    ] {
        let (Some(have), Some(want)) = (theirs.get(key), want.get(key)) else {
            continue;
        };
        let differs = |name: String, have: &Value, want: &Value| {
            format!(
                "{name} is {have}, but autointerp's settings in this file give {want}: delphi's \
                 keys repeat autointerp's (edit both, or remove delphi's)"
            )
        };
        match (have, want) {
            (Value::Object(h), Value::Object(w)) => {
                for (k, hv) in h {
                    match w.get(k) {
                        Some(wv) if wv == hv => {}
                        Some(wv) => return Err(differs(format!("{key}.{k}"), hv, wv)),
                        None => return Err(format!("{key}.{k} is not a delphi setting")),
                    }
                }
            }
            (h, w) if h != w => return Err(differs(key.to_string(), h, w)),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use autointerp_core::layout::Layout;
    use autointerp_latents::TrainType;
    use autointerp_score::FuzzMode;

    use super::*;
    use crate::{NeighboursType, Overwrite, Provider, ScorerKind};

    const MAIN: &str = include_str!("../../../tests/fixtures/delphi/run_config.json");
    const V011: &str = include_str!("../../../tests/fixtures/delphi/run_config-0.1.1.json");

    fn read(text: &str) -> Result<(RunConfig, Vec<String>)> {
        from_json_value(serde_json::from_str(text).unwrap(), "test")
    }

    #[test]
    fn every_delphi_setting_maps_to_ours() {
        let (cfg, notes) = read(MAIN).unwrap();
        assert_eq!(
            cfg.dataset.as_deref(),
            Some("EleutherAI/fineweb-edu-dedup-10b")
        );
        assert_eq!(cfg.dataset_split.as_deref(), Some("train[:1%]"));
        assert_eq!(cfg.dataset_name, None);
        assert_eq!(cfg.dataset_column, "text");
        assert_eq!((cfg.batch_size, cfg.ctx_len), (16, 256));
        assert_eq!((cfg.n_tokens, cfg.n_splits), (1_000_000, 5));
        assert_eq!(cfg.example_ctx_len, 32);
        assert_eq!((cfg.min_examples, cfg.n_non_activating), (200, 50));
        // delphi's `center_examples = true` gives aligned windows: ours `false`.
        assert!(!cfg.center_examples);
        assert_eq!((cfg.n_examples_train, cfg.n_examples_test), (40, 50));
        assert_eq!(cfg.n_quantiles, 10);
        assert_eq!(cfg.train_type, TrainType::Quantiles);
        assert_eq!(cfg.ratio_top, 0.2);
        assert_eq!(cfg.non_activating_source, NonActivatingSource::Random);
        assert_eq!(cfg.neighbours_type, NeighboursType::CoOccurrence);
        assert_eq!(cfg.embedding_model, None);
        assert_eq!(cfg.model, "HuggingFaceTB/SmolLM2-135M");
        assert_eq!(cfg.sparse_model, "EleutherAI/sae-SmolLM2-135M-64x");
        assert_eq!(cfg.hookpoints, ["layers.6", "layers.9.mlp"]);
        assert_eq!(cfg.hooks().unwrap().len(), 2);
        assert_eq!(
            cfg.explainer_model,
            "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
        );
        assert_eq!(cfg.explainer_model_max_len, Some(5120));
        assert_eq!(cfg.explainer_provider, Provider::Local);
        assert_eq!(cfg.explainer, crate::ExplainerKind::Default);
        assert_eq!(cfg.scorers, [ScorerKind::Fuzz, ScorerKind::Detection]);
        assert_eq!(cfg.fuzz_type, FuzzMode::Active);
        assert_eq!(cfg.name, "smollm2");
        assert_eq!(cfg.max_latents, Some(100));
        assert!(cfg.filter_bos && !cfg.log_probs && !cfg.load_in_8bit);
        assert_eq!(cfg.max_concurrency, 8);
        assert_eq!(cfg.seed, 22);
        assert_eq!(cfg.num_examples_per_scorer_prompt, 5);
        assert!(cfg.overwrite.is_empty());
        cfg.validate().unwrap();
        let noted = notes.join("\n");
        for key in [
            "num_gpus",
            "max_memory",
            "verbose",
            "neighbours_type",
            "faiss_embedding_model",
            "faiss_embedding_cache_dir",
        ] {
            assert!(noted.contains(key), "{noted}");
        }
    }

    #[test]
    fn delphi_0_1_1_files_are_read() {
        let (main, _) = read(MAIN).unwrap();
        let (old, _) = read(V011).unwrap();
        // 0.1.1 has no `fuzz_type`: the default.
        assert_eq!(old.fuzz_type, FuzzMode::Default);
        assert_eq!(
            RunConfig {
                fuzz_type: FuzzMode::Active,
                ..old
            },
            main
        );
    }

    #[test]
    fn settings_we_cannot_honour_are_named() {
        let mut v: Value = serde_json::from_str(MAIN).unwrap();
        v["constructor_cfg"]["non_activating_source"] = "vector".into();
        v["sampler_cfg"]["test_type"] = "top".into();
        v["explainer_provider"] = "vllm".into();
        v["scorers"] = serde_json::json!(["detection", "simulaton"]);
        let err = from_json_value(v, "x.json").unwrap_err().to_string();
        for part in [
            "x.json",
            "constructor_cfg.non_activating_source = \"vector\"",
            "sampler_cfg.test_type = \"top\"",
            "explainer_provider = \"vllm\"",
            "\"simulaton\"",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
        // A key delphi does not have either.
        let mut v: Value = serde_json::from_str(MAIN).unwrap();
        v["constructor_cfg"]["n_non_activatin"] = 3.into();
        let err = from_json_value(v, "x.json").unwrap_err().to_string();
        assert!(err.contains("n_non_activatin"), "{err}");
    }

    #[test]
    fn delphi_sources_and_stages_map_to_ours() {
        let mut v: Value = serde_json::from_str(MAIN).unwrap();
        v["constructor_cfg"]["non_activating_source"] = "FAISS".into();
        v["overwrite"] = serde_json::json!(["neighbours", "scores"]);
        v["hf_token"] = "hf_secret".into();
        let (cfg, notes) = from_json_value(v, "x.json").unwrap();
        assert_eq!(cfg.non_activating_source, NonActivatingSource::Embedding);
        assert_eq!(
            cfg.embedding_model.as_deref(),
            Some("sentence-transformers/all-MiniLM-L6-v2")
        );
        assert_eq!(cfg.overwrite, [Overwrite::Neighbours, Overwrite::Scores]);
        let noted = notes.join("\n");
        assert!(
            noted.contains("HF_TOKEN") && noted.contains("local:PATH"),
            "{noted}"
        );
        assert!(!noted.contains("hf_secret"), "{noted}");
        assert!(noted.contains("constructor_cfg.neighbours_type"), "{noted}");

        let mut v: Value = serde_json::from_str(MAIN).unwrap();
        v["constructor_cfg"]["non_activating_source"] = "neighbours".into();
        v["constructor_cfg"]["neighbours_type"] = "decoder_similarity".into();
        let (cfg, notes) = from_json_value(v, "x.json").unwrap();
        assert_eq!(cfg.non_activating_source, NonActivatingSource::Neighbours);
        assert_eq!(cfg.neighbours_type, NeighboursType::DecoderSimilarity);
        assert_eq!(cfg.embedding_model, None);
        let noted = notes.join("\n");
        assert!(
            !noted.contains("constructor_cfg.neighbours_type"),
            "{noted}"
        );
        assert!(
            noted.contains("constructor_cfg.faiss_embedding_model"),
            "{noted}"
        );
    }

    /// What `save_config` writes reads back equal, delphi's keys beside ours say the same, and
    /// a file edited in delphi's keys only is refused by name.
    #[test]
    fn saved_configs_round_trip_and_carry_delphi_keys() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let cfg = RunConfig {
            model: "m".into(),
            hookpoints: vec!["layers.3".into(), "layers.4.mlp".into()],
            dataset: Some("data.jsonl".into()),
            n_tokens: 12_345,
            ctx_len: 64,
            min_examples: 7,
            center_examples: true,
            train_type: TrainType::Mix,
            fuzz_type: FuzzMode::Active,
            non_activating_source: NonActivatingSource::Neighbours,
            neighbours_type: NeighboursType::EncoderSimilarity,
            max_concurrency: 3,
            max_latents: Some(9),
            ..RunConfig::default()
        };
        crate::save_config(&cfg, &layout).unwrap();
        let path = layout.run_config();
        let back = RunConfig::from_json_file(&path).unwrap();
        assert_eq!(back, cfg);

        let saved: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(saved["constructor_cfg"]["min_examples"], 7);
        assert_eq!(saved["constructor_cfg"]["center_examples"], false);
        assert_eq!(saved["cache_cfg"]["dataset_repo"], "data.jsonl");
        assert_eq!(saved["cache_cfg"]["dataset_name"], "");
        assert_eq!(saved["cache_cfg"]["cache_ctx_len"], 64);
        assert_eq!(saved["cache_cfg"]["n_tokens"], 12_345);
        assert_eq!(
            saved["constructor_cfg"]["non_activating_source"],
            "neighbours"
        );
        assert_eq!(
            saved["constructor_cfg"]["neighbours_type"],
            "encoder_similarity"
        );
        assert_eq!(saved["sampler_cfg"]["train_type"], "mix");
        assert_eq!(saved["sampler_cfg"]["test_type"], "quantiles");
        assert_eq!(saved["pipeline_num_proc"], 3);
        assert_eq!(saved["fuzz_type"], "active");
        assert_eq!(saved["hf_token"], Value::Null);
        // Every key of delphi's (main) is there, so delphi's own `RunConfig` finds them all;
        // `explainer_model_max_len` only when set (delphi's `load_json` refuses `null` there).
        for key in DELPHI_TOP {
            let want = key != "explainer_model_max_len";
            assert_eq!(saved.get(key).is_some(), want, "{key}");
        }

        // Edited in delphi's keys only.
        let mut edited = saved.clone();
        edited["constructor_cfg"]["min_examples"] = 50.into();
        let err = from_json_value(edited, "run_config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("constructor_cfg.min_examples is 50") && err.contains("give 7"),
            "{err}"
        );
        // Our own keys are still checked by name.
        let mut edited = saved.clone();
        edited["n_tokenz"] = 1.into();
        let err = from_json_value(edited, "run_config.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("n_tokenz"), "{err}");
        // `merge` works on the config read back, and still refuses unknown keys.
        let merged = back
            .clone()
            .merge(&serde_json::json!({ "n_tokens": 5 }))
            .unwrap();
        assert_eq!(merged.n_tokens, 5);
        assert!(back.merge(&serde_json::json!({ "cache_cfg": {} })).is_err());
    }

    /// A `run_config.json` written before delphi's keys (and `fuzz_type`, `load_in_8bit`) were
    /// added still reads.
    #[test]
    fn older_files_of_ours_still_read() {
        let mut v = serde_json::to_value(RunConfig {
            model: "m".into(),
            n_tokens: 77,
            ..RunConfig::default()
        })
        .unwrap();
        let map = v.as_object_mut().unwrap();
        map.remove("fuzz_type");
        map.remove("load_in_8bit");
        let (cfg, notes) = from_json_value(v, "old.json").unwrap();
        assert_eq!(cfg.n_tokens, 77);
        assert_eq!(cfg.fuzz_type, FuzzMode::Default);
        assert!(notes.is_empty());
    }
}
