//! `autointerp run` (delphi's `python -m delphi`): cache latents, explain them, score the
//! explanations; `autointerp explain` and `autointerp score`: one of those stages on an existing
//! cache or results folder.
//!
//! Settings come from defaults, then a TOML file (`--config`; for `explain` and `score` the
//! folder's `run_config.json` when no file is given), then flags. A rerun skips every latent whose
//! outputs exist, so a killed or interrupted run resumes where it stopped.

mod progress;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};
use autointerp_latents::TrainType;
pub use autointerp_run::{ExplainerKind, Overwrite, Provider, RunConfig, ScorerKind};
use autointerp_run::{Layout, Run, RunSummary, Stages};
use autointerp_score::{AnswerMode, SimulationMode};
use serde::de::DeserializeOwned;

use self::progress::Bars;
use crate::cache::print_stats;

/// Sets each `cfg.field` given on the command line.
macro_rules! set {
    ($cfg:expr, $opts:expr; $($field:ident),* $(,)?) => {
        $( if let Some(v) = $opts.$field.clone() { $cfg.$field = v; } )*
    };
}

/// Sets each optional `cfg.field` given on the command line.
macro_rules! set_some {
    ($cfg:expr, $opts:expr; $($field:ident),* $(,)?) => {
        $( if let Some(v) = $opts.$field.clone() { $cfg.$field = Some(v); } )*
    };
}

/// Caching (`run` only, and only when the cache is missing or `--overwrite cache`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Caching")]
struct CacheOpts {
    /// Text to cache: a .txt/.jsonl/.parquet file or folder of them, or a `.safetensors` of
    /// pre-tokenized `tokens` [required to build the cache].
    #[arg(long, visible_alias = "dataset-repo")]
    dataset: Option<String>,
    /// Config (subset) of a Hub dataset, as delphi's `dataset_name` [default: `default`, or the
    /// only one].
    #[arg(long)]
    dataset_name: Option<String>,
    /// Split of a Hub dataset, optionally sliced (`train[:10%]`), as delphi's `dataset_split`
    /// [default: train].
    #[arg(long)]
    dataset_split: Option<String>,
    /// Column or key holding the text [default: text].
    #[arg(long)]
    dataset_column: Option<String>,
    /// Tokens to cache [default: 10000000].
    #[arg(long)]
    n_tokens: Option<usize>,
    /// Tokens per cached row [default: 256].
    #[arg(long, visible_alias = "cache-ctx-len")]
    ctx_len: Option<usize>,
    /// Rows per forward pass [default: 8].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Split files per hook point [default: 5].
    #[arg(long)]
    n_splits: Option<u32>,
    /// Drop BOS tokens from the token stream (`--filter-bos=false` undoes a config file's `true`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    filter_bos: Option<bool>,
    /// Record no latents at position 0 of each row (the attention sink).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    skip_first_token: Option<bool>,
    /// `cpu`, `cuda` or `cuda:N` [default: cpu].
    #[arg(long)]
    device: Option<String>,
    /// `f32`, `bf16` or `f16` [default: f32].
    #[arg(long)]
    dtype: Option<String>,
}

/// Which latents, and how their examples are drawn.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Latents")]
struct LatentOpts {
    /// Comma-separated hook points [default: all of the cache's; required to build a cache].
    #[arg(long, value_delimiter = ',')]
    hookpoints: Option<Vec<String>>,
    /// Only latents 0..N of each hook point.
    #[arg(long)]
    max_latents: Option<u32>,
    /// Only these latents of each hook point, e.g. `0,5,7` (takes precedence over --max-latents).
    #[arg(long, value_delimiter = ',')]
    latents: Option<Vec<u32>>,
    /// Tokens per example [default: 32].
    #[arg(long)]
    example_ctx_len: Option<usize>,
    /// Latents with fewer activating examples are skipped [default: 200].
    #[arg(long)]
    min_examples: Option<usize>,
    /// Non-activating examples per latent [default: 50].
    #[arg(long)]
    n_non_activating: Option<usize>,
    /// Centre example windows on their peak token.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    center_examples: Option<bool>,
    /// Examples shown to the explainer [default: 40].
    #[arg(long)]
    n_examples_train: Option<usize>,
    /// Examples held out for scoring [default: 50].
    #[arg(long)]
    n_examples_test: Option<usize>,
    /// Activation quantiles [default: 10].
    #[arg(long)]
    n_quantiles: Option<usize>,
    /// How train examples are drawn: top, random, quantiles or mix [default: quantiles].
    #[arg(long, value_parser = serde_value::<TrainType>)]
    train_type: Option<TrainType>,
    /// With `--train-type mix`: fraction of train examples from the very top [default: 0.2].
    #[arg(long)]
    ratio_top: Option<f64>,
    /// Seed of the document order, sampling, scorers and random control [default: 22].
    #[arg(long)]
    seed: Option<u64>,
}

/// The explainer.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Explainer")]
struct ExplainOpts {
    /// `default`, `contrastive`, or `none` to score the explanations in `explanations/`
    /// [default: default].
    #[arg(long)]
    explainer: Option<ExplainerKind>,
    /// Longest explainer answer, in tokens (reasoning included) [default: 1000].
    #[arg(long)]
    explainer_max_tokens: Option<u32>,
    /// Start the explainer's answer with the `[EXPLANATION]:` marker and let it complete one
    /// line: for small models that drift instead of answering. Needs the in-process engine or
    /// vLLM (`continue_final_message`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    explainer_prefill: Option<bool>,
}

/// The scorers.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Scorers")]
struct ScoreOpts {
    /// Comma-separated: detection, fuzz, intruder, simulation, surprisal, embedding
    /// [default: fuzz,detection].
    #[arg(long, value_delimiter = ',')]
    scorers: Option<Vec<ScorerKind>>,
    /// Examples per detection/fuzzing prompt and per intruder trial [default: 5].
    #[arg(long)]
    num_examples_per_scorer_prompt: Option<usize>,
    /// Ask detection and fuzzing for answer logprobs, for their AUC.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    log_probs: Option<bool>,
    /// Detection and fuzzing answers: `list` (a parsed `[1,0,…]` per prompt of several
    /// excerpts, delphi's way) or `logprob` (one excerpt per prompt, the label read from the
    /// first token's logprobs: for small local scorers) [default: list].
    #[arg(long, value_parser = serde_value::<AnswerMode>)]
    classifier_answer: Option<AnswerMode>,
    /// Simulation: `prompt_logprobs` (vLLM, delphi's way) or `json` (any chat API)
    /// [default: prompt_logprobs].
    #[arg(long, value_parser = serde_value::<SimulationMode>)]
    simulation_mode: Option<SimulationMode>,
    /// Base URL of the OpenAI-compatible `/embeddings` server of the embedding scorer
    /// [default: `https://api.openai.com/v1`].
    #[arg(long)]
    embedding_base_url: Option<String>,
    /// Embedding model of the embedding scorer [required by it]: `local:PATH` (or an existing
    /// folder) for a sentence-transformers folder run in this process, such as
    /// all-MiniLM-L6-v2; otherwise the model name sent to the `/embeddings` server.
    #[arg(long)]
    embedding_model: Option<String>,
    /// Environment variable holding the embedding server's API key.
    #[arg(long)]
    embedding_api_key_env: Option<String>,
    /// Base language model of the surprisal scorer, run in this process: HF folder, `.gguf` file
    /// or Hub id [required by it].
    #[arg(long)]
    surprisal_model: Option<String>,
    /// Also score each latent with another latent's explanation (`scores/random/`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    random_control: Option<bool>,
}

/// The model that explains and answers the scorers' prompts.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Explainer model")]
struct ClientOpts {
    /// openai (any OpenAI-compatible server), openrouter or local [default: openai].
    #[arg(long)]
    explainer_provider: Option<Provider>,
    /// The model name the server knows (required).
    #[arg(long)]
    explainer_model: Option<String>,
    /// Base URL of an OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM)
    /// [default: the provider's].
    #[arg(long)]
    explainer_base_url: Option<String>,
    /// Environment variable holding the API key [default: OPENAI_API_KEY or OPENROUTER_API_KEY;
    /// none for a --explainer-base-url server].
    #[arg(long)]
    api_key_env: Option<String>,
    /// Price per million prompt tokens, for the cost shown.
    #[arg(long)]
    prompt_price: Option<f64>,
    /// Price per million completion tokens, for the cost shown.
    #[arg(long)]
    completion_price: Option<f64>,
    /// Attempts per request, retrying 429s, 5xx, timeouts and dropped connections [default: 5].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// With `--explainer-provider local`: the longest sequence the engine runs
    /// [default: the model's max_position_embeddings].
    #[arg(long)]
    explainer_model_max_len: Option<usize>,
    /// In-process engine: most padded prompt tokens per batch; bounds the memory of batched
    /// prefill [default: 4096].
    #[arg(long)]
    engine_max_batch_tokens: Option<usize>,
    /// In-process engine: bytes of shared prompt prefixes kept for reuse, 0 to turn the prefix
    /// cache off [default: 268435456].
    #[arg(long)]
    engine_prefix_cache_bytes: Option<usize>,
    /// Latents in flight at once [default: 8].
    #[arg(long)]
    max_concurrency: Option<usize>,
}

/// `autointerp run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The model explained: HF folder, `.gguf` file or Hub id; its tokenizer decodes the examples.
    model: Option<String>,
    /// The sparse coders (as `autointerp cache --sparse-model`); needed only to build the cache.
    sparse_model: Option<String>,
    /// A tokenizer for a model that has none (`tokenizer.json`, an HF folder, a `.gguf` file or
    /// a Hub id) [default: the model's].
    #[arg(long)]
    tokenizer: Option<String>,
    /// A TOML file of settings: any option below, `-` written `_` (`n_tokens = 1000000`,
    /// `scorers = ["detection"]`, `model = "..."`). Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The run's folder is RESULTS_DIR/NAME [default: ""].
    #[arg(long)]
    name: Option<String>,
    /// Where runs are written [default: results].
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Comma-separated stages to redo although their outputs exist: cache, explanations, scores.
    #[arg(long, value_delimiter = ',')]
    overwrite: Option<Vec<Overwrite>>,
    #[command(flatten)]
    cache: CacheOpts,
    #[command(flatten)]
    latents: LatentOpts,
    #[command(flatten)]
    explain: ExplainOpts,
    #[command(flatten)]
    score: ScoreOpts,
    #[command(flatten)]
    client: ClientOpts,
}

/// `autointerp explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// A results folder (`autointerp run`) or a latent cache (`autointerp cache --out`).
    path: PathBuf,
    /// Where `explanations/` goes [default: PATH].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The model whose tokenizer decodes the examples [default: PATH's run_config.json, else the
    /// cache's `model_name`].
    #[arg(long)]
    model: Option<String>,
    /// A tokenizer for a model that has none (`tokenizer.json`, an HF folder, a `.gguf` file or
    /// a Hub id) [default: the model's].
    #[arg(long)]
    tokenizer: Option<String>,
    /// A TOML file of settings, used instead of PATH's run_config.json. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Redo explanations that exist (`explanations`).
    #[arg(long, value_delimiter = ',')]
    overwrite: Option<Vec<Overwrite>>,
    #[command(flatten)]
    latents: LatentOpts,
    #[command(flatten)]
    explain: ExplainOpts,
    #[command(flatten)]
    client: ClientOpts,
}

/// `autointerp score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// A results folder with `explanations/` (`autointerp run` or `autointerp explain`).
    path: PathBuf,
    /// Where `scores/` goes, and `explanations/` is read [default: PATH].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The model whose tokenizer decodes the examples [default: PATH's run_config.json, else the
    /// cache's `model_name`].
    #[arg(long)]
    model: Option<String>,
    /// A tokenizer for a model that has none (`tokenizer.json`, an HF folder, a `.gguf` file or
    /// a Hub id) [default: the model's].
    #[arg(long)]
    tokenizer: Option<String>,
    /// A TOML file of settings, used instead of PATH's run_config.json. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Redo scores that exist (`scores`).
    #[arg(long, value_delimiter = ',')]
    overwrite: Option<Vec<Overwrite>>,
    #[command(flatten)]
    latents: LatentOpts,
    #[command(flatten)]
    score: ScoreOpts,
    #[command(flatten)]
    client: ClientOpts,
}

impl CacheOpts {
    fn apply(&self, cfg: &mut RunConfig) {
        set_some!(cfg, self; dataset, dataset_name, dataset_split);
        set!(cfg, self; dataset_column, n_tokens, ctx_len, batch_size, n_splits, filter_bos, skip_first_token, device, dtype);
    }
}

impl LatentOpts {
    fn apply(&self, cfg: &mut RunConfig) {
        set_some!(cfg, self; max_latents, latents);
        set!(cfg, self; hookpoints, example_ctx_len, min_examples, n_non_activating, center_examples,
            n_examples_train, n_examples_test, n_quantiles, train_type, ratio_top, seed);
    }
}

impl ExplainOpts {
    fn apply(&self, cfg: &mut RunConfig) {
        set!(cfg, self; explainer, explainer_max_tokens, explainer_prefill);
    }
}

impl ScoreOpts {
    fn apply(&self, cfg: &mut RunConfig) {
        set_some!(cfg, self; embedding_base_url, embedding_model, embedding_api_key_env, surprisal_model);
        set!(cfg, self; scorers, num_examples_per_scorer_prompt, log_probs, classifier_answer, simulation_mode, random_control);
    }
}

impl ClientOpts {
    fn apply(&self, cfg: &mut RunConfig) {
        set_some!(cfg, self; explainer_base_url, api_key_env, prompt_price, completion_price, explainer_model_max_len,
            engine_max_batch_tokens, engine_prefix_cache_bytes);
        set!(cfg, self; explainer_provider, explainer_model, max_attempts, max_concurrency);
    }
}

/// `autointerp run`.
pub fn run_command(args: RunArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(path) => RunConfig::from_toml_file(path)?,
        None => RunConfig::default(),
    };
    if let Some(m) = &args.model {
        cfg.model.clone_from(m);
    }
    if let Some(m) = &args.sparse_model {
        cfg.sparse_model.clone_from(m);
    }
    if args.tokenizer.is_some() {
        cfg.tokenizer.clone_from(&args.tokenizer);
    }
    set!(cfg, args; name, results_dir, overwrite);
    args.cache.apply(&mut cfg);
    args.latents.apply(&mut cfg);
    args.explain.apply(&mut cfg);
    args.score.apply(&mut cfg);
    args.client.apply(&mut cfg);
    run_with_config(cfg)
}

/// Runs the whole pipeline (cache, explain, score) with settings built in code, as
/// `autointerp run` does with its flags.
pub fn run_with_config(cfg: RunConfig) -> Result<()> {
    cfg.validate()?;
    ensure!(
        !cfg.model.is_empty(),
        "MODEL is required (the first argument, or `model` in --config)"
    );
    ensure!(
        cfg.explainer != ExplainerKind::None || !cfg.scorers.is_empty(),
        "nothing to do: --explainer none and no --scorers"
    );
    let layout = Layout::new(cfg.results_dir.join(&cfg.name));
    autointerp_run::save_config(&cfg, &layout)?;
    let bars = Bars::default();
    let built = autointerp_run::ensure_cache(&cfg, layout.root(), &bars)?;
    bars.clear();
    let mut run = Run::new(cfg.clone())?;
    if let Some(built) = built {
        print_stats(&built.stats);
        if let (Some(tok), None) = (built.tokenizer, &cfg.tokenizer) {
            run = run.with_tokenizer(tok);
        }
    }
    execute(run)
}

/// `autointerp explain`.
pub fn explain_command(args: ExplainArgs) -> Result<()> {
    let layout = Layout::new(args.out.clone().unwrap_or_else(|| args.path.clone()));
    let mut cfg = base_config(args.config.as_deref(), &args.path, &layout)?;
    set!(cfg, args; overwrite);
    args.latents.apply(&mut cfg);
    args.explain.apply(&mut cfg);
    args.client.apply(&mut cfg);
    cfg.validate()?;
    ensure!(
        cfg.explainer != ExplainerKind::None,
        "nothing to do: --explainer none"
    );
    let run = open_cache(&args.path, args.model, args.tokenizer, cfg, &layout)?;
    execute(run.stages(Stages::EXPLAIN))
}

/// `autointerp score`.
pub fn score_command(args: ScoreArgs) -> Result<()> {
    let layout = Layout::new(args.out.clone().unwrap_or_else(|| args.path.clone()));
    let mut cfg = base_config(args.config.as_deref(), &args.path, &layout)?;
    set!(cfg, args; overwrite);
    args.latents.apply(&mut cfg);
    args.score.apply(&mut cfg);
    args.client.apply(&mut cfg);
    cfg.validate()?;
    ensure!(!cfg.scorers.is_empty(), "nothing to do: no --scorers");
    let run = open_cache(&args.path, args.model, args.tokenizer, cfg, &layout)?;
    execute(run.stages(Stages::SCORE))
}

/// The settings `explain` and `score` start from: `--config`, else the folder's saved
/// `run_config.json`, else the defaults.
fn base_config(file: Option<&Path>, path: &Path, layout: &Layout) -> Result<RunConfig> {
    if let Some(file) = file {
        return Ok(RunConfig::from_toml_file(file)?);
    }
    for saved in [layout.run_config(), Layout::new(path).run_config()] {
        if saved.is_file() {
            return Ok(RunConfig::from_json_file(&saved)?);
        }
    }
    Ok(RunConfig::default())
}

/// A run over the cache at `path`, writing into `layout`, decoding with `--tokenizer`, else
/// `--model`, else the config's tokenizer or model, else the cache's `model_name`.
fn open_cache(
    path: &Path,
    model: Option<String>,
    tokenizer: Option<String>,
    mut cfg: RunConfig,
    layout: &Layout,
) -> Result<Run> {
    if let Some(m) = model {
        cfg.model = m;
    }
    if tokenizer.is_some() {
        cfg.tokenizer = tokenizer;
    }
    Ok(Run::new(cfg)?.cache_dir(path).out_dir(layout.root()))
}

/// Runs `run` with progress bars, Ctrl-C wired to its cancel token (once: finish the latents in
/// flight; twice: abort them), and prints what it did.
fn execute(run: Run) -> Result<()> {
    let cancel = run.cancel_token();
    let min_examples = run.config().min_examples;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bars = Bars::default();
    let summary = runtime.block_on(async {
        let signals = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            cancel.stop();
            eprintln!("\nCtrl-C: finishing the latents in flight (Ctrl-C again to abort them)");
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nCtrl-C again: aborting the latents in flight");
                cancel.abort();
            }
        });
        let summary = run.execute(&bars).await;
        signals.abort();
        summary
    });
    bars.clear();
    // The record threads may still be building records no one will take.
    runtime.shutdown_background();
    let summary = summary?;
    print_summary(&summary, min_examples);
    if summary.cancelled {
        let aborted = summary.main.aborted + summary.control.as_ref().map_or(0, |r| r.aborted);
        bail!(
            "interrupted by Ctrl-C ({aborted} latents in flight aborted); run the same command again to resume"
        );
    }
    Ok(())
}

/// Prints what the phases did.
fn print_summary(s: &RunSummary, min_examples: usize) {
    let main = &s.main;
    eprintln!(
        "{} latents done ({} explained), {} failed; {} already done; {} skipped (fewer than \
         {min_examples} activating examples)",
        main.done, main.explained, main.failed, s.already_done, main.skipped
    );
    if let Some(r) = &s.control {
        eprintln!(
            "random control: {} latents scored, {} failed",
            r.done, r.failed
        );
    }
    let cost = s
        .usage
        .cost
        .map_or_else(String::new, |c| format!(", cost ${c:.4}"));
    eprintln!(
        "tokens: {} prompt + {} completion{cost}",
        s.usage.prompt_tokens, s.usage.completion_tokens
    );
    if s.failures_written > 0 {
        eprintln!("failures recorded in {}", s.layout.failures().display());
    }
    eprintln!("results in {}", s.layout.root().display());
}

/// Parses a value the way serde reads it from a file, for flags whose type has no
/// `clap::ValueEnum` (e.g. `TrainType`, `SimulationMode`).
pub fn serde_value<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_read_as_serde_reads_them() {
        assert_eq!(serde_value::<TrainType>("mix"), Ok(TrainType::Mix));
        assert!(serde_value::<TrainType>("best").is_err());
    }
}
