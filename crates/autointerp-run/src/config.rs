//! The settings of a run (`autointerp run`, `explain` and `score`): one serde struct, read from a
//! TOML file, then overridden (the CLI's flags), and saved as `run_config.json`.
//!
//! Names follow delphi's `RunConfig` (with its `cache_cfg`, `constructor_cfg` and `sampler_cfg`
//! flattened) where delphi has the setting: `n_tokens`, `batch_size`, `n_splits`,
//! `example_ctx_len`, `min_examples`, `n_non_activating`, `n_examples_train`, `n_examples_test`,
//! `n_quantiles`, `train_type`, `ratio_top`, `explainer`, `explainer_model`,
//! `explainer_provider`, `scorers`, `name`, `max_latents`, `filter_bos`, `log_probs`, `seed`,
//! `num_examples_per_scorer_prompt`, `overwrite`, `center_examples` (wired the other way round
//! from delphi's: see [`RunConfig::center_examples`]), `non_activating_source`, `neighbours_type`,
//! `fuzz_type`; delphi's `dataset_repo`, `cache_ctx_len`, `dataset_row`, `pipeline_num_proc`
//! and `faiss_embedding_model` are accepted as aliases of `dataset`, `ctx_len`,
//! `dataset_column`, `max_concurrency` and `embedding_model`. delphi's own nested
//! `run_config.json` is read too (see [`crate::DelphiRunConfig`]), and `run_config.json` is
//! written with delphi's nested keys beside ours ([`crate::save_config`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use autointerp_core::HookPoint;
pub use autointerp_explain::ExplainerKind;
use autointerp_explain::PromptSet;
pub use autointerp_latents::NonActivatingSource;
use autointerp_latents::{LatentsConfig, TrainType};
use autointerp_score::{AnswerMode, ScorerOptions, SimulationMode, WrongCount};
pub use autointerp_score::{FuzzMode, ScorerKind};
use serde::{Deserialize, Serialize};

use crate::error::{bail, ensure, Context};
use crate::{Error, Result};

/// Who answers the explainer's and the scorers' prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Any OpenAI-compatible server (`--explainer-base-url`; api.openai.com without it).
    Openai,
    /// OpenRouter (key in OPENROUTER_API_KEY unless `--api-key-env` names another variable).
    Openrouter,
    /// The in-process engine (delphi's `offline`).
    #[serde(alias = "offline")]
    #[cfg_attr(feature = "clap", value(alias = "offline"))]
    Local,
}

/// A stage to recompute although its outputs exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Overwrite {
    /// Cache the latents again.
    Cache,
    /// Explain every latent again (and so score it again).
    Explanations,
    /// Score every latent again.
    Scores,
    /// delphi's: recompute the neighbour lists. Accepted so that delphi's command lines run;
    /// autointerp computes neighbour lists afresh on every run, so there is nothing to redo.
    Neighbours,
}

/// How the neighbours of `--non-activating-source neighbours` are found (delphi's
/// `neighbours_type`, with its names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NeighboursType {
    /// The latents that fire on the most of the same tokens, by the Jaccard index of the sets
    /// of tokens they fire on (computed from the cache).
    #[default]
    #[serde(
        rename = "co-occurrence",
        alias = "co_occurrence",
        alias = "cooccurrence"
    )]
    CoOccurrence,
    /// The latents whose decoder directions (rows of `W_dec`) have the highest cosine
    /// similarity (read from the sparse coders).
    #[serde(rename = "decoder_similarity", alias = "decoder-similarity")]
    DecoderSimilarity,
    /// The latents whose encoder directions have the highest cosine similarity (read from the
    /// sparse coders).
    #[serde(rename = "encoder_similarity", alias = "encoder-similarity")]
    EncoderSimilarity,
}

impl NeighboursType {
    /// The name in delphi's spelling, as the config file and the flag take it.
    pub fn name(self) -> &'static str {
        match self {
            Self::CoOccurrence => "co-occurrence",
            Self::DecoderSimilarity => "decoder_similarity",
            Self::EncoderSimilarity => "encoder_similarity",
        }
    }
}

/// A config file as read by [`RunConfig::read_file`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConfigFile {
    /// The settings.
    pub config: RunConfig,
    /// Notes for the user: delphi settings the file holds that change nothing in autointerp.
    pub notes: Vec<String>,
}

/// Everything a run does, as saved in `run_config.json` (no secrets: API keys are only named,
/// by the environment variable that holds them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The model explained: HF folder, `.gguf` file or Hub id. Its tokenizer decodes the examples.
    pub model: String,
    /// Where the tokenizer that decodes the examples comes from when it is not the model's own
    /// (a model folder without `tokenizer.json`, cached from pre-tokenized ids): a
    /// `tokenizer.json`, an HF folder, a `.gguf` file or a Hub id.
    pub tokenizer: Option<String>,
    /// The sparse coders (see `autointerp cache --sparse-model`).
    pub sparse_model: String,
    /// Hook points; empty means every hook point of an existing cache.
    pub hookpoints: Vec<String>,

    /// Text dataset to cache: .txt/.jsonl/.parquet file or folder, or pre-tokenized .safetensors.
    #[serde(alias = "dataset_repo")]
    pub dataset: Option<String>,
    /// Config (subset) of a Hub dataset (delphi's `dataset_name`).
    pub dataset_name: Option<String>,
    /// Split of a Hub dataset, optionally sliced (`train[:10%]`; delphi's `dataset_split`).
    pub dataset_split: Option<String>,
    /// Column or key holding the text.
    #[serde(alias = "dataset_row")]
    pub dataset_column: String,
    /// Tokens to cache.
    pub n_tokens: usize,
    /// Tokens per cached row.
    #[serde(alias = "cache_ctx_len")]
    pub ctx_len: usize,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Split files per hook point.
    pub n_splits: u32,
    /// Drop BOS tokens from the token stream.
    pub filter_bos: bool,
    /// Record no latents at position 0 of each row.
    pub skip_first_token: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `f32`, `bf16` or `f16`.
    pub dtype: String,
    /// delphi's 8-bit model loading, which autointerp does not do: `true` is refused when the
    /// cache is to be built (`dtype` sets the precision), and changes nothing when it exists.
    pub load_in_8bit: bool,

    /// Only latents `0..max_latents` of each hook point.
    pub max_latents: Option<u32>,
    /// Only these latents of each hook point (takes precedence over `max_latents`).
    pub latents: Option<Vec<u32>>,
    /// Tokens per example.
    pub example_ctx_len: usize,
    /// Latents with fewer activating examples are skipped.
    pub min_examples: usize,
    /// Non-activating examples per latent.
    pub n_non_activating: usize,
    /// Centre example windows on the peak token (see `autointerp-latents`' `ConstructorConfig`).
    ///
    /// delphi's `center_examples` is wired the other way round: its default `true` cuts
    /// aligned windows (`false` here, the default), its `false` centres them (`true` here).
    pub center_examples: bool,
    /// Where non-activating examples come from: random silent windows, the windows where the
    /// latent's neighbours fire (`neighbours_type`), or silent windows whose text embeds
    /// closest to the latent's examples (`embedding`, delphi's `FAISS`; `embedding_model`
    /// embeds them).
    pub non_activating_source: NonActivatingSource,
    /// With `non_activating_source = "neighbours"`: how neighbours are found.
    pub neighbours_type: NeighboursType,
    /// Examples shown to the explainer.
    pub n_examples_train: usize,
    /// Examples held out for scoring.
    pub n_examples_test: usize,
    /// Activation quantiles.
    pub n_quantiles: usize,
    /// How train examples are drawn.
    pub train_type: TrainType,
    /// With `train_type = "mix"`: fraction of train examples from the very top.
    pub ratio_top: f64,

    /// The explainer.
    pub explainer: ExplainerKind,
    /// Longest explainer answer, in tokens (reasoning included).
    pub explainer_max_tokens: u32,
    /// Start the explainer's answer with the `[EXPLANATION]:` marker and let it complete one
    /// line (small models drift otherwise); needs the in-process engine or vLLM.
    pub explainer_prefill: bool,
    /// End the explainer's prompt with the tokens each latent promotes most (its decoder
    /// direction's logit lens, when the cache has a vocabulary projection).
    pub explainer_logits: bool,
    /// Explanations sampled per latent (best-of-K): with more than one, each latent's test and
    /// non-activating examples are split in two halves, every sample is scored on the
    /// validation half by `explainer_select`, and the best one is kept and scored on the test
    /// half (the first sample too, to measure the gain).
    pub explainer_samples: usize,
    /// Sampling temperature of the explainer [default: 0, or 0.7 with several samples].
    pub explainer_temperature: Option<f32>,
    /// The scorer that picks the best of several samples [default: the first scorer that
    /// reads the explanation].
    pub explainer_select: Option<ScorerKind>,
    /// Who answers prompts.
    pub explainer_provider: Provider,
    /// The explainer and scorer model.
    pub explainer_model: String,
    /// Base URL of an OpenAI-compatible server (the part before `/chat/completions`).
    pub explainer_base_url: Option<String>,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Price per million prompt tokens, to report the cost.
    pub prompt_price: Option<f64>,
    /// Price per million completion tokens, to report the cost.
    pub completion_price: Option<f64>,
    /// Attempts per request (retries on 429, 5xx, timeouts, dropped connections).
    pub max_attempts: u32,
    /// Requests in flight at once to the explainer's server (and, capped at 8 by default, to the
    /// embedding server); match it to what the server runs at once (vLLM's `--max-num-seqs`,
    /// llama.cpp's `--parallel`), so that requests wait on this side, not in the server's queue
    /// where their timeout runs.
    pub max_requests: usize,
    /// Longest time one request may take, from sending it to the answer's last byte (retried).
    pub request_timeout_secs: f64,
    /// Longest time one request may wait for a free slot before it is sent.
    pub queue_timeout_secs: f64,
    /// Fields added to every chat request body (e.g. `{"repeat_penalty": 1.0}` for llama.cpp,
    /// `{"chat_template_kwargs": {"enable_thinking": false}}` for vLLM); they replace the
    /// client's own fields of the same name, except `model`, `messages` and `stream`, which are
    /// refused.
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// With `explainer_provider = "local"`: the longest sequence the engine runs (default: the
    /// model's `max_position_embeddings`).
    pub explainer_model_max_len: Option<usize>,
    /// In-process engine: most padded prompt tokens per batch (bounds the memory of a batched
    /// prefill); default: the engine's.
    pub engine_max_batch_tokens: Option<usize>,
    /// In-process engine: bytes of shared-prompt-prefix KV kept for reuse (0 turns the prefix
    /// cache off); default: the engine's.
    pub engine_prefix_cache_bytes: Option<usize>,

    /// The scorers.
    pub scorers: Vec<ScorerKind>,
    /// Examples per detection/fuzzing prompt, excerpts per intruder trial.
    pub num_examples_per_scorer_prompt: usize,
    /// Ask detection and fuzzing for answer logprobs (for their AUC).
    pub log_probs: bool,
    /// Where fuzzing's wrongly highlighted excerpts come from: `default` (non-activating
    /// examples) or `active` (the activating test examples, other tokens highlighted); delphi's
    /// `fuzz_type`.
    pub fuzz_type: FuzzMode,
    /// How detection and fuzzing ask for answers: `list` (several excerpts per prompt, a parsed
    /// `[1,0,…]` answer, delphi's way) or `logprob` (one excerpt per prompt, the label read
    /// from the first answer token's logprobs; for small local models, which cannot keep the
    /// list format).
    pub classifier_answer: AnswerMode,
    /// How the simulation scorer gets predictions: `prompt_logprobs` (vLLM) or `json`.
    pub simulation_mode: SimulationMode,
    /// Longest detection/fuzzing answer in the `list` answer mode, in tokens.
    pub classifier_max_tokens: u32,
    /// Longest intruder answer, in tokens.
    pub intruder_max_tokens: u32,
    /// Longest simulation answer in the `json` mode, in tokens.
    pub simulation_max_tokens: u32,
    /// How many tokens a wrongly highlighted fuzzing excerpt highlights: `mean_nonzero`
    /// (delphi's: the mean count of nonzero activations per activating example, rounded up) or
    /// `match_highlighted` (as many as the correct excerpts highlight; see docs/SCORING.md).
    pub fuzz_wrong_count: WrongCount,
    /// Base URL of an OpenAI-compatible `/embeddings` server (api.openai.com without it).
    pub embedding_base_url: Option<String>,
    /// The embedding model of the embedding scorer and of `non_activating_source =
    /// "embedding"`: `local:PATH` (or an existing folder) runs a sentence-transformers folder
    /// in this process; otherwise the name sent to the server (delphi's
    /// `faiss_embedding_model`).
    #[serde(alias = "faiss_embedding_model")]
    pub embedding_model: Option<String>,
    /// Environment variable holding the embedding server's API key.
    pub embedding_api_key_env: Option<String>,
    /// The base language model of the surprisal scorer (HF folder, `.gguf` file or Hub id), run
    /// in this process.
    pub surprisal_model: Option<String>,
    /// The KL divergence (nats) of the next-token distribution after each neutral prompt that
    /// the intervention scorers calibrate a latent's steering strength to.
    pub intervention_kl: f64,
    /// Tokens of each continuation the intervention scorers generate (greedy).
    pub intervention_max_tokens: usize,
    /// Also score each latent with the explanation of another latent (`scores/random/`).
    pub random_control: bool,

    /// A folder of prompt templates (docs/PROMPTS.md) replacing the built-in ones file by file;
    /// read and checked when the run starts.
    pub prompt_dir: Option<PathBuf>,
    /// Latents in flight at once (delphi's `pipeline_num_proc`).
    #[serde(alias = "pipeline_num_proc")]
    pub max_concurrency: usize,
    /// The run's folder is `<results_dir>/<name>`.
    pub name: String,
    /// Stages to recompute although their outputs exist.
    pub overwrite: Vec<Overwrite>,
    /// Where runs are written.
    pub results_dir: PathBuf,
    /// Seed of the document order, the example sampling, the scorers and the random control.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        let latents = LatentsConfig::default();
        let (c, s) = (&latents.constructor, &latents.sampler);
        let scorer = ScorerOptions::default();
        Self {
            model: String::new(),
            tokenizer: None,
            sparse_model: String::new(),
            hookpoints: Vec::new(),
            dataset: None,
            dataset_name: None,
            dataset_split: None,
            dataset_column: "text".into(),
            n_tokens: 10_000_000,
            ctx_len: 256,
            batch_size: 8,
            n_splits: 5,
            filter_bos: false,
            skip_first_token: false,
            device: "cpu".into(),
            dtype: "f32".into(),
            load_in_8bit: false,
            max_latents: None,
            latents: None,
            example_ctx_len: c.example_ctx_len,
            min_examples: c.min_examples,
            n_non_activating: c.n_non_activating,
            center_examples: c.center_examples,
            non_activating_source: c.non_activating_source,
            neighbours_type: NeighboursType::default(),
            n_examples_train: s.n_examples_train,
            n_examples_test: s.n_examples_test,
            n_quantiles: s.n_quantiles,
            train_type: s.train_type,
            ratio_top: s.ratio_top,
            explainer: ExplainerKind::Default,
            explainer_max_tokens: 1000,
            explainer_prefill: false,
            explainer_samples: 1,
            explainer_temperature: None,
            explainer_select: None,
            explainer_logits: false,
            explainer_provider: Provider::Openai,
            explainer_model: String::new(),
            explainer_base_url: None,
            api_key_env: None,
            prompt_price: None,
            completion_price: None,
            max_attempts: 5,
            max_requests: autointerp_client::DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            request_timeout_secs: autointerp_client::DEFAULT_REQUEST_TIMEOUT.as_secs_f64(),
            queue_timeout_secs: autointerp_client::DEFAULT_QUEUE_TIMEOUT.as_secs_f64(),
            extra_body: serde_json::Map::new(),
            explainer_model_max_len: None,
            engine_max_batch_tokens: None,
            engine_prefix_cache_bytes: None,
            scorers: vec![ScorerKind::Fuzz, ScorerKind::Detection],
            num_examples_per_scorer_prompt: 5,
            log_probs: false,
            fuzz_type: FuzzMode::default(),
            classifier_answer: AnswerMode::List,
            simulation_mode: SimulationMode::default(),
            classifier_max_tokens: scorer.classifier_max_tokens,
            intruder_max_tokens: scorer.intruder_max_tokens,
            simulation_max_tokens: scorer.simulation_max_tokens,
            fuzz_wrong_count: scorer.fuzz_wrong_count,
            embedding_base_url: None,
            embedding_model: None,
            embedding_api_key_env: None,
            surprisal_model: None,
            intervention_kl: 1.0,
            intervention_max_tokens: 16,
            random_control: false,
            prompt_dir: None,
            max_concurrency: 8,
            name: String::new(),
            overwrite: Vec::new(),
            results_dir: PathBuf::from("results"),
            seed: 22,
        }
    }
}

impl RunConfig {
    /// Reads a TOML file; an unknown key is an error that names it.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::Parse {
            what: format!("config file {}", path.display()),
            reason: e.to_string(),
        })
    }

    /// Reads a `run_config.json`: ours (with or without delphi's keys beside our own), or
    /// delphi's (its `cache_cfg`, `constructor_cfg` and `sampler_cfg` nested; every setting is
    /// converted as [`crate::DelphiRunConfig::into_run_config`] says). A delphi setting
    /// autointerp cannot honour is an error that names it; notes on those that change nothing
    /// here are logged (`tracing`, info), and returned by [`RunConfig::read_file`].
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let file = Self::read_json(path)?;
        for note in &file.notes {
            tracing::info!(path = %path.display(), "{note}");
        }
        Ok(file.config)
    }

    /// The settings `explain` and `score` start from for the cache or results folder at `path`,
    /// writing into `layout`: `file` (the user's own `--config`) when given, else the folder's
    /// saved `run_config.json` (of `layout`, then of `path`), else the defaults. Each note names
    /// the file it is about.
    ///
    /// A results folder may come from anyone, so its saved config does not decide which of this
    /// machine's secrets go to which host: the API key variables it names are dropped (with a
    /// note), and keys are sent only when named by the caller.
    pub fn for_folder(
        file: Option<&Path>,
        path: &Path,
        layout: &crate::Layout,
    ) -> Result<ConfigFile> {
        let saved = [layout.run_config(), crate::Layout::new(path).run_config()];
        let Some(source) = file
            .map(Path::to_path_buf)
            .or_else(|| saved.into_iter().find(|p| p.is_file()))
        else {
            return Ok(ConfigFile {
                config: Self::default(),
                notes: Vec::new(),
            });
        };
        let mut read = Self::read_file(&source)?;
        if file.is_none() {
            let named = [
                read.config.api_key_env.take(),
                read.config.embedding_api_key_env.take(),
            ];
            if named.iter().any(Option::is_some) {
                read.notes.push(
                    "it names API key variables; they are not used (pass --api-key-env or \
                     --embedding-api-key-env to send a key)"
                        .into(),
                );
            }
        }
        for note in &mut read.notes {
            *note = format!("{}: {note}", source.display());
        }
        Ok(read)
    }

    /// Reads a config file: JSON (a `.json` name, or text that opens with `{`) as
    /// [`RunConfig::from_json_file`] does, else TOML as [`RunConfig::from_toml_file`] does.
    pub fn read_file(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            || text.trim_start().starts_with('{');
        if json {
            Self::parse_json(&text, path)
        } else {
            Ok(ConfigFile {
                config: Self::from_toml_file(path)?,
                notes: Vec::new(),
            })
        }
    }

    fn read_json(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        Self::parse_json(&text, path)
    }

    fn parse_json(text: &str, path: &Path) -> Result<ConfigFile> {
        let what = format!("{} is not a run config", path.display());
        let value = serde_json::from_str(text).map_err(|e| Error::Parse {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        let (config, notes) = crate::delphi::from_json_value(value, &what)?;
        Ok(ConfigFile { config, notes })
    }

    /// This config with every setting `overrides` gives replaced: a struct of
    /// [`crate::overrides`] or any map whose keys are config keys. A `None` (null) keeps the
    /// config's value; a key that is not a setting is an error that names it.
    pub fn merge(self, overrides: &impl Serialize) -> Result<Self> {
        let parse = |e: serde_json::Error| Error::Parse {
            what: "settings".into(),
            reason: e.to_string(),
        };
        let serde_json::Value::Object(given) = serde_json::to_value(overrides).map_err(parse)?
        else {
            bail!("overrides must be a struct or a map of settings");
        };
        let serde_json::Value::Object(mut merged) = serde_json::to_value(&self).map_err(parse)?
        else {
            bail!("a run config serialises to a map");
        };
        for (key, value) in given {
            if !value.is_null() {
                merged.insert(key, value);
            }
        }
        serde_json::from_value(serde_json::Value::Object(merged)).map_err(parse)
    }

    /// How the chat client uses its server: `max_requests`, the timeouts and `extra_body`.
    pub fn http_settings(&self) -> Result<autointerp_client::HttpSettings> {
        let secs = |name: &str, s: f64| {
            std::time::Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{name} must be a number of seconds above 0, not {s}"
                    ))
                })
        };
        ensure!(self.max_requests >= 1, "max_requests must be at least 1");
        Ok(autointerp_client::HttpSettings {
            max_requests_in_flight: self.max_requests,
            request_timeout: secs("request_timeout_secs", self.request_timeout_secs)?,
            queue_timeout: secs("queue_timeout_secs", self.queue_timeout_secs)?,
            extra_body: self.extra_body.clone(),
            ..autointerp_client::HttpSettings::default()
        })
    }

    /// The prompt templates: `prompt_dir`'s, over the built-in ones. A template that does not
    /// compile, or names a variable its prompt lacks, is an error naming its file and line.
    pub fn prompts(&self) -> Result<Arc<PromptSet>> {
        match &self.prompt_dir {
            None => Ok(PromptSet::embedded()),
            Some(dir) => PromptSet::from_dir(dir)
                .map(Arc::new)
                .map_err(|e| Error::Config(format!("--prompt-dir {}: {e}", dir.display()))),
        }
    }

    /// Whether `stage` is to be recomputed.
    pub fn overwrites(&self, stage: Overwrite) -> bool {
        self.overwrite.contains(&stage)
    }

    /// The hook points named, parsed (canonical names), without repeats.
    pub fn hooks(&self) -> Result<Vec<HookPoint>> {
        let mut hooks = Vec::new();
        for name in &self.hookpoints {
            let hook: HookPoint = name
                .parse()
                .with_context(|| format!("hook point {name:?}"))?;
            if !hooks.contains(&hook) {
                hooks.push(hook);
            }
        }
        Ok(hooks)
    }

    /// The scorers, without repeats, in the order given.
    pub fn scorer_kinds(&self) -> Vec<ScorerKind> {
        let mut out: Vec<ScorerKind> = Vec::new();
        for &s in &self.scorers {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// The latent indices of a hook point `width` latents wide: `latents`, else
    /// `0..max_latents`, else all.
    pub fn latent_indices(&self, hook: HookPoint, width: u32) -> Result<Vec<u32>> {
        if let Some(ls) = &self.latents {
            if let Some(bad) = ls.iter().find(|&&l| l >= width) {
                bail!("--latents: latent {bad} is out of range: {hook} has {width} latents");
            }
            let mut ls = ls.clone();
            ls.sort_unstable();
            ls.dedup();
            return Ok(ls);
        }
        Ok((0..self.max_latents.map_or(width, |m| m.min(width))).collect())
    }

    /// The record-building settings.
    pub fn latents_config(&self) -> Result<LatentsConfig> {
        let mut cfg = LatentsConfig::default();
        let c = &mut cfg.constructor;
        c.example_ctx_len = self.example_ctx_len;
        c.min_examples = self.min_examples;
        c.n_non_activating = self.n_non_activating;
        c.center_examples = self.center_examples;
        c.non_activating_source = self.non_activating_source;
        let s = &mut cfg.sampler;
        s.n_examples_train = self.n_examples_train;
        s.n_examples_test = self.n_examples_test;
        s.n_quantiles = self.n_quantiles;
        s.train_type = self.train_type;
        s.ratio_top = self.ratio_top;
        cfg.seed = self.seed;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what does not depend on the stage being run.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.max_concurrency >= 1,
            "max_concurrency must be at least 1"
        );
        ensure!(self.max_attempts >= 1, "max_attempts must be at least 1");
        self.http_settings()?;
        ensure!(
            self.engine_max_batch_tokens != Some(0),
            "engine_max_batch_tokens must be at least 1"
        );
        for (name, n) in [
            ("classifier_max_tokens", self.classifier_max_tokens),
            ("intruder_max_tokens", self.intruder_max_tokens),
            ("simulation_max_tokens", self.simulation_max_tokens),
        ] {
            ensure!(n >= 1, "{name} must be at least 1");
        }
        ensure!(
            self.intervention_kl.is_finite() && self.intervention_kl > 0.0,
            "intervention_kl must be a positive number of nats, got {}",
            self.intervention_kl
        );
        ensure!(
            self.intervention_max_tokens >= 1,
            "intervention_max_tokens must be at least 1"
        );
        ensure!(
            (1..=64).contains(&self.explainer_samples),
            "explainer_samples must be between 1 and 64, got {}",
            self.explainer_samples
        );
        if let Some(t) = self.explainer_temperature {
            ensure!(
                t.is_finite() && (0.0..=2.0).contains(&t),
                "explainer_temperature must be between 0 and 2, got {t}"
            );
        }
        ensure!(
            self.num_examples_per_scorer_prompt >= 1,
            "num_examples_per_scorer_prompt must be at least 1"
        );
        ensure!(
            !self.name.contains(['/', '\\']) && self.name != "..",
            "name {:?} must be a plain folder name",
            self.name
        );
        self.dtype
            .parse::<autointerp_model::DType>()
            .context("dtype")?;
        if self.prompt_price.is_some() != self.completion_price.is_some() {
            bail!("give both prompt_price and completion_price, or neither");
        }
        self.hooks()?;
        self.latents_config()?;
        self.prompts()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_reads_delphi_names_and_rejects_unknown_keys() {
        let cfg: RunConfig = toml::from_str(
            r#"
            model = "m"
            hookpoints = ["layers.3", "model.layers.3"]
            dataset_repo = "data.jsonl"
            dataset_name = "en"
            dataset_split = "train[:1%]"
            cache_ctx_len = 64
            classifier_answer = "logprob"
            train_type = "top"
            scorers = ["detection", "simulation"]
            simulation_mode = "json"
            explainer_provider = "offline"
            overwrite = ["scores", "neighbours"]
            dataset_row = "body"
            pipeline_num_proc = 3
            faiss_embedding_model = "local:minilm"
            non_activating_source = "FAISS"
            neighbours_type = "decoder_similarity"
            fuzz_type = "active"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.dataset_column, "body");
        assert_eq!(cfg.max_concurrency, 3);
        assert_eq!(cfg.embedding_model.as_deref(), Some("local:minilm"));
        assert_eq!(cfg.non_activating_source, NonActivatingSource::Embedding);
        assert_eq!(cfg.neighbours_type, NeighboursType::DecoderSimilarity);
        assert_eq!(cfg.fuzz_type, FuzzMode::Active);
        let latents = cfg.latents_config().unwrap();
        assert_eq!(
            latents.constructor.non_activating_source,
            NonActivatingSource::Embedding
        );
        // A run_config.json saved before these keys existed still loads, with their defaults.
        let old: RunConfig = serde_json::from_str(r#"{"model": "m", "n_tokens": 5}"#).unwrap();
        assert_eq!(old.neighbours_type, NeighboursType::CoOccurrence);
        assert_eq!(old.fuzz_type, FuzzMode::Default);
        assert_eq!(old.non_activating_source, NonActivatingSource::Random);
        assert_eq!(cfg.dataset.as_deref(), Some("data.jsonl"));
        assert_eq!(cfg.dataset_name.as_deref(), Some("en"));
        assert_eq!(cfg.dataset_split.as_deref(), Some("train[:1%]"));
        assert_eq!(cfg.classifier_answer, AnswerMode::Logprob);
        assert_eq!(cfg.ctx_len, 64);
        assert_eq!(cfg.train_type, TrainType::Top);
        assert_eq!(cfg.explainer_provider, Provider::Local);
        assert_eq!(cfg.hooks().unwrap().len(), 1);
        assert_eq!(cfg.n_examples_train, 40);
        let err = toml::from_str::<RunConfig>("n_tokenz = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("n_tokenz"), "{err}");
    }

    #[test]
    fn latent_selection() {
        let mut cfg = RunConfig::default();
        let h = HookPoint::Residual(0);
        assert_eq!(cfg.latent_indices(h, 3).unwrap(), vec![0, 1, 2]);
        cfg.max_latents = Some(2);
        assert_eq!(cfg.latent_indices(h, 3).unwrap(), vec![0, 1]);
        cfg.latents = Some(vec![2, 0, 2]);
        assert_eq!(cfg.latent_indices(h, 3).unwrap(), vec![0, 2]);
        cfg.latents = Some(vec![5]);
        assert!(cfg
            .latent_indices(h, 3)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }
}
