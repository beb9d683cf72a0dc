//! Settings given on top of a [`RunConfig`](crate::RunConfig): every field optional, `None` keeping the config's
//! value. They are what `autointerp run`, `explain` and `score` take as flags (with the `clap`
//! feature each group is a `clap::Args` to flatten into a command line), and any program can fill
//! them in and apply them with [`RunConfig::merge`](crate::RunConfig::merge), the same merge a flag goes through.
//!
//! Field names are [`RunConfig`](crate::RunConfig)'s, so a group serialises to the config keys it overrides; a test
//! keeps the two in step.

use autointerp_latents::{NonActivatingSource, TrainType};
use autointerp_score::{AnswerMode, FuzzMode, SimulationMode, WrongCount};
use serde::Serialize;

use crate::config::{ExplainerKind, NeighboursType, Provider, ScorerKind};

/// Caching (`run` only, and only when the cache is missing or `--overwrite cache`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Caching"))]
pub struct CacheOverrides {
    /// Text to cache: a .txt/.jsonl/.parquet file or folder of them, or a `.safetensors` of
    /// pre-tokenized `tokens` [required to build the cache].
    #[cfg_attr(feature = "clap", arg(long, visible_alias = "dataset-repo"))]
    pub dataset: Option<String>,
    /// Config (subset) of a Hub dataset, as delphi's `dataset_name` [default: `default`, or the
    /// only one].
    #[cfg_attr(feature = "clap", arg(long))]
    pub dataset_name: Option<String>,
    /// Split of a Hub dataset, optionally sliced (`train[:10%]`), as delphi's `dataset_split`
    /// [default: train].
    #[cfg_attr(feature = "clap", arg(long))]
    pub dataset_split: Option<String>,
    /// Column or key holding the text [default: text].
    #[cfg_attr(feature = "clap", arg(long, visible_alias = "dataset-row"))]
    pub dataset_column: Option<String>,
    /// Tokens to cache [default: 10000000].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub n_tokens: Option<usize>,
    /// Tokens per cached row [default: 256].
    #[cfg_attr(feature = "clap", arg(long, visible_alias = "cache-ctx-len", value_parser = number::<usize>))]
    pub ctx_len: Option<usize>,
    /// Rows per forward pass [default: 8].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub batch_size: Option<usize>,
    /// Split files per hook point [default: 5].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<u32>))]
    pub n_splits: Option<u32>,
    /// Drop BOS tokens from the token stream (`--filter-bos=false` undoes a config file's
    /// `true`) [default: false; delphi's is true].
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true))]
    pub filter_bos: Option<bool>,
    /// Record no latents at position 0 of each row (the attention sink).
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true))]
    pub skip_first_token: Option<bool>,
}

/// Where the models of a run compute: the model cached, and the models run in this process (the
/// in-process explainer, the surprisal scorer's base model, a `local:` embedding model).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Device"))]
pub struct DeviceOverrides {
    /// `cpu`, `cuda` or `cuda:N` [default: cpu].
    #[cfg_attr(feature = "clap", arg(long))]
    pub device: Option<String>,
    /// `f32`, `bf16` or `f16` (the cached model and the in-process explainer and surprisal
    /// models; embedding models run in f32) [default: f32].
    #[cfg_attr(feature = "clap", arg(long))]
    pub dtype: Option<String>,
}

/// Which latents, and how their examples are drawn.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Latents"))]
pub struct LatentOverrides {
    /// Hook points, space- or comma-separated (`--hookpoints layers.3 layers.6`)
    /// [default: all of the cache's; required to build a cache].
    #[cfg_attr(feature = "clap", arg(long, visible_alias = "hookpoint", num_args = 1.., value_delimiter = ','))]
    pub hookpoints: Option<Vec<String>>,
    /// Only latents 0..N of each hook point.
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<u32>))]
    pub max_latents: Option<u32>,
    /// Only these latents of each hook point, space- or comma-separated, e.g. `0,5,7` (takes
    /// precedence over --max-latents).
    #[cfg_attr(feature = "clap", arg(long, num_args = 1.., value_delimiter = ',', value_parser = number::<u32>))]
    pub latents: Option<Vec<u32>>,
    /// Tokens per example [default: 32].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub example_ctx_len: Option<usize>,
    /// Latents with fewer activating examples are skipped [default: 200].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub min_examples: Option<usize>,
    /// Non-activating examples per latent [default: 50].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub n_non_activating: Option<usize>,
    /// Where non-activating examples come from: `random` windows where the latent is silent;
    /// `neighbours`, windows where the latent's nearest latents fire (see --neighbours-type) and
    /// it does not; `embedding` (delphi's `FAISS`; `faiss` is accepted), silent windows whose
    /// text embeds closest to the latent's strongest examples, embedded by --embedding-model
    /// [default: random].
    #[cfg_attr(feature = "clap", arg(long, value_parser = serde_value::<NonActivatingSource>))]
    pub non_activating_source: Option<NonActivatingSource>,
    /// With `--non-activating-source neighbours`, how neighbours are found: `co-occurrence`
    /// (Jaccard index of the tokens two latents fire on, from the cache), `decoder_similarity`
    /// or `encoder_similarity` (cosine of the sparse coders' decoder or encoder directions,
    /// read from SPARSE_MODEL) [default: co-occurrence].
    #[cfg_attr(feature = "clap", arg(long, value_parser = serde_value::<NeighboursType>))]
    pub neighbours_type: Option<NeighboursType>,
    /// Centre each example window on its peak token (3/4 of the window before it) instead of
    /// cutting the rows into aligned windows [default: false]. delphi's `center_examples` is
    /// wired the other way round: its default `true` cuts aligned windows (this flag's default
    /// `false`), and its `false` centres them (`--center-examples` here).
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true))]
    pub center_examples: Option<bool>,
    /// Examples shown to the explainer [default: 40].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub n_examples_train: Option<usize>,
    /// Examples held out for scoring [default: 50].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub n_examples_test: Option<usize>,
    /// Activation quantiles [default: 10].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub n_quantiles: Option<usize>,
    /// How train examples are drawn: top, random, quantiles or mix [default: quantiles].
    #[cfg_attr(feature = "clap", arg(long, value_parser = serde_value::<TrainType>))]
    pub train_type: Option<TrainType>,
    /// With `--train-type mix`: fraction of train examples from the very top [default: 0.2].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<f64>))]
    pub ratio_top: Option<f64>,
    /// Seed of the document order, sampling, scorers and random control [default: 22].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<u64>))]
    pub seed: Option<u64>,
}

/// The explainer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Explainer"))]
pub struct ExplainOverrides {
    /// `default`, `contrastive`, or `none` to score the explanations in `explanations/`
    /// [default: default].
    #[cfg_attr(feature = "clap", arg(long))]
    pub explainer: Option<ExplainerKind>,
    /// Longest explainer answer, in tokens (reasoning included) [default: 1000].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<u32>))]
    pub explainer_max_tokens: Option<u32>,
    /// Start the explainer's answer with the `[EXPLANATION]:` marker and let it complete one
    /// line: for small models that drift instead of answering. Needs the in-process engine or
    /// vLLM (`continue_final_message`).
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true))]
    pub explainer_prefill: Option<bool>,
    /// End the explainer's prompt with the tokens each latent promotes most (the logit lens of
    /// its decoder direction, from the cache's `vocab_projection.json`), as Neuronpedia's
    /// max-activation + logits explainer does; latents without one get the plain prompt.
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true))]
    pub explainer_logits: Option<bool>,
    /// Best-of-K: sample K explanations per latent, keep the one `--explainer-select` scores
    /// best on half of the latent's held-out examples, and score it on the other half (with
    /// the first sample, to report the gain) [default: 1]. Needs scorers (`run`).
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub explainer_samples: Option<usize>,
    /// The explainer's sampling temperature [default: 0, or 0.7 with --explainer-samples > 1].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<f32>))]
    pub explainer_temperature: Option<f32>,
    /// The scorer that picks the best sample [default: the first scorer that reads the
    /// explanation].
    #[cfg_attr(feature = "clap", arg(long))]
    pub explainer_select: Option<ScorerKind>,
}

/// The scorers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Scorers"))]
pub struct ScoreOverrides {
    /// Space- or comma-separated: detection, fuzz, intruder, simulation, surprisal, embedding
    /// [default: fuzz detection].
    #[cfg_attr(feature = "clap", arg(long, num_args = 1.., value_delimiter = ','))]
    pub scorers: Option<Vec<ScorerKind>>,
    /// Examples per detection/fuzzing prompt and per intruder trial [default: 5].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub num_examples_per_scorer_prompt: Option<usize>,
    /// Ask detection and fuzzing for answer logprobs, for their AUC.
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true))]
    pub log_probs: Option<bool>,
    /// Fuzzing's wrongly highlighted excerpts: `default` (non-activating examples with random
    /// tokens highlighted) or `active` (the activating test examples again, with tokens where
    /// the latent is silent highlighted: harder, the text itself is on topic), as delphi's
    /// `fuzz_type` [default: default].
    #[cfg_attr(feature = "clap", arg(long, value_parser = serde_value::<FuzzMode>))]
    pub fuzz_type: Option<FuzzMode>,
    /// Detection and fuzzing answers: `list` (a parsed `[1,0,…]` per prompt of several
    /// excerpts, delphi's way) or `logprob` (one excerpt per prompt, the label read from the
    /// first token's logprobs: for small local scorers) [default: list].
    #[cfg_attr(feature = "clap", arg(long, value_parser = serde_value::<AnswerMode>))]
    pub classifier_answer: Option<AnswerMode>,
    /// Simulation: `prompt_logprobs` (vLLM, delphi's way) or `json` (any chat API)
    /// [default: prompt_logprobs].
    #[cfg_attr(feature = "clap", arg(long, value_parser = serde_value::<SimulationMode>))]
    pub simulation_mode: Option<SimulationMode>,
    /// Longest detection/fuzzing answer in the `list` mode, in tokens [default: 200].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<u32>))]
    pub classifier_max_tokens: Option<u32>,
    /// Longest intruder answer, in tokens [default: 500].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<u32>))]
    pub intruder_max_tokens: Option<u32>,
    /// Longest simulation answer in the `json` mode, in tokens: a model that never stops costs
    /// this much per sequence [default: 4000].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<u32>))]
    pub simulation_max_tokens: Option<u32>,
    /// Tokens a wrongly highlighted fuzzing excerpt highlights: `mean_nonzero` (delphi's) or
    /// `match_highlighted` (as many as the correct excerpts show) [default: mean_nonzero].
    #[cfg_attr(feature = "clap", arg(long, value_parser = serde_value::<WrongCount>))]
    pub fuzz_wrong_count: Option<WrongCount>,
    /// Base language model of the surprisal scorer, run in this process: HF folder, `.gguf` file
    /// or Hub id [required by it].
    #[cfg_attr(feature = "clap", arg(long))]
    pub surprisal_model: Option<String>,
    /// The KL divergence (nats) of the next-token distribution that the intervention scorers
    /// calibrate each latent's steering strength to [default: 1.0].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<f64>))]
    pub intervention_kl: Option<f64>,
    /// Tokens of each steered and clean continuation of the intervention scorers [default: 16].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub intervention_max_tokens: Option<usize>,
    /// Also score each latent with another latent's explanation (`scores/random/`).
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true))]
    pub random_control: Option<bool>,
}

/// The sentence embedder of the embedding scorer and of `--non-activating-source embedding`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Embedding model"))]
pub struct EmbedderOverrides {
    /// Embedding model of the embedding scorer and of `--non-activating-source embedding`
    /// [required by them]: `local:PATH` (or an existing folder) for a sentence-transformers
    /// folder run in this process, such as all-MiniLM-L6-v2; otherwise the model name sent to
    /// the `/embeddings` server.
    #[cfg_attr(feature = "clap", arg(long, visible_alias = "faiss-embedding-model"))]
    pub embedding_model: Option<String>,
    /// Base URL of the OpenAI-compatible `/embeddings` server [default:
    /// `https://api.openai.com/v1`].
    #[cfg_attr(feature = "clap", arg(long))]
    pub embedding_base_url: Option<String>,
    /// Environment variable holding the embedding server's API key.
    #[cfg_attr(feature = "clap", arg(long))]
    pub embedding_api_key_env: Option<String>,
}

/// The model that explains and answers the scorers' prompts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Explainer model"))]
pub struct ClientOverrides {
    /// openai (any OpenAI-compatible server), openrouter or local (delphi's `offline`)
    /// [default: openai].
    #[cfg_attr(feature = "clap", arg(long))]
    pub explainer_provider: Option<Provider>,
    /// The model name the server knows (required).
    #[cfg_attr(feature = "clap", arg(long))]
    pub explainer_model: Option<String>,
    /// Base URL of an OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM)
    /// [default: the provider's].
    #[cfg_attr(feature = "clap", arg(long))]
    pub explainer_base_url: Option<String>,
    /// Environment variable holding the API key [default: OPENAI_API_KEY or OPENROUTER_API_KEY;
    /// none for a --explainer-base-url server].
    #[cfg_attr(feature = "clap", arg(long))]
    pub api_key_env: Option<String>,
    /// Price per million prompt tokens, for the cost shown.
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<f64>))]
    pub prompt_price: Option<f64>,
    /// Price per million completion tokens, for the cost shown.
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<f64>))]
    pub completion_price: Option<f64>,
    /// Attempts per request, retrying 429s, 5xx, timeouts and dropped connections [default: 5].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<u32>))]
    pub max_attempts: Option<u32>,
    /// With `--explainer-provider local`: the longest sequence the engine runs
    /// [default: the model's max_position_embeddings].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub explainer_model_max_len: Option<usize>,
    /// In-process engine: most padded prompt tokens per batch; bounds the memory of batched
    /// prefill [default: 4096].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub engine_max_batch_tokens: Option<usize>,
    /// In-process engine: bytes of shared prompt prefixes kept for reuse, 0 to turn the prefix
    /// cache off [default: 268435456].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub engine_prefix_cache_bytes: Option<usize>,
    /// Requests in flight at once to the explainer's server; set it to what the server runs at
    /// once (vLLM `--max-num-seqs`, llama.cpp `--parallel`) [default: 32].
    #[cfg_attr(feature = "clap", arg(long, value_parser = number::<usize>))]
    pub max_requests: Option<usize>,
    /// Seconds one request may take from sending to the last byte of its answer; time in the
    /// server's own queue counts [default: 120].
    #[cfg_attr(feature = "clap", arg(long = "request-timeout", value_parser = number::<f64>))]
    pub request_timeout_secs: Option<f64>,
    /// Seconds one request may wait for a free slot (of --max-requests) before it is sent
    /// [default: 3600].
    #[cfg_attr(feature = "clap", arg(long = "queue-timeout", value_parser = number::<f64>))]
    pub queue_timeout_secs: Option<f64>,
    /// JSON object of fields added to every chat request, e.g. '{"repeat_penalty": 1.0}' or
    /// '{"chat_template_kwargs": {"enable_thinking": false}}'.
    #[cfg_attr(feature = "clap", arg(long, value_parser = json_object))]
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
    /// Folder of prompt templates replacing the built-in ones file by file (docs/PROMPTS.md;
    /// `scripts/delphi-prompts.py` writes delphi's); checked before anything runs.
    #[cfg_attr(feature = "clap", arg(long))]
    pub prompt_dir: Option<std::path::PathBuf>,
    /// Latents in flight at once (delphi's `pipeline_num_proc`) [default: 8].
    #[cfg_attr(feature = "clap", arg(long, visible_alias = "pipeline-num-proc", value_parser = number::<usize>))]
    pub max_concurrency: Option<usize>,
}

/// Parses a number as Python also writes one, its digits grouped by underscores
/// (`10_000_000`), for every numeric flag: delphi's command lines are written that way.
#[cfg(feature = "clap")]
pub fn number<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let b = s.as_bytes();
    let grouped = (0..b.len()).all(|i| {
        b[i] != b'_'
            || (i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit())
    });
    let plain = if grouped {
        s.replace('_', "")
    } else {
        s.to_string()
    };
    plain.parse().map_err(|e: T::Err| e.to_string())
}

/// Parses a value the way serde reads it from a file, for flags whose type has no
/// `clap::ValueEnum` (e.g. `TrainType`, `SimulationMode`).
#[cfg(feature = "clap")]
pub fn serde_value<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

/// Parses a JSON object flag (`--extra-body`).
#[cfg(feature = "clap")]
pub fn json_object(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("expected a JSON object, e.g. '{\"repeat_penalty\": 1.0}'".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    /// Every override names a config key, so none is dropped by `merge` or refused by it.
    #[test]
    fn every_override_is_a_config_key() {
        let cfg = serde_json::to_value(RunConfig::default()).unwrap();
        let groups = [
            serde_json::to_value(CacheOverrides::default()).unwrap(),
            serde_json::to_value(LatentOverrides::default()).unwrap(),
            serde_json::to_value(ExplainOverrides::default()).unwrap(),
            serde_json::to_value(ScoreOverrides::default()).unwrap(),
            serde_json::to_value(ClientOverrides::default()).unwrap(),
            serde_json::to_value(DeviceOverrides::default()).unwrap(),
            serde_json::to_value(EmbedderOverrides::default()).unwrap(),
        ];
        for group in groups {
            for key in group.as_object().unwrap().keys() {
                assert!(cfg.get(key).is_some(), "{key} is not a RunConfig key");
            }
        }
    }

    #[test]
    fn merge_sets_what_is_given_and_keeps_the_rest() {
        let cfg = RunConfig {
            n_tokens: 5,
            ..RunConfig::default()
        };
        let over = CacheOverrides {
            ctx_len: Some(64),
            dataset: Some("d.txt".into()),
            ..CacheOverrides::default()
        };
        let scores = ScoreOverrides {
            scorers: Some(vec![ScorerKind::Embedding]),
            simulation_mode: Some(SimulationMode::Json),
            ..ScoreOverrides::default()
        };
        let cfg = cfg.merge(&over).unwrap().merge(&scores).unwrap();
        assert_eq!((cfg.n_tokens, cfg.ctx_len), (5, 64));
        assert_eq!(cfg.dataset.as_deref(), Some("d.txt"));
        assert_eq!(cfg.scorers, vec![ScorerKind::Embedding]);
        assert_eq!(cfg.simulation_mode, SimulationMode::Json);
        let err = RunConfig::default()
            .merge(&serde_json::json!({"n_tokenz": 3}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("n_tokenz"), "{err}");
    }

    #[cfg(feature = "clap")]
    #[test]
    fn numbers_take_python_digit_groups() {
        assert_eq!(number::<usize>("10_000_000"), Ok(10_000_000));
        assert_eq!(number::<u32>("42"), Ok(42));
        assert_eq!(number::<f64>("1_000.5"), Ok(1000.5));
        assert_eq!(number::<f64>("2e-4"), Ok(2e-4));
        for bad in ["_1", "1_", "1__0", "1_a", "ten"] {
            assert!(number::<usize>(bad).is_err(), "{bad}");
        }
    }
}
