//! `autointerp run` (delphi's `python -m delphi`): cache latents, explain them, score the
//! explanations; `autointerp explain` and `autointerp score`: one of those stages on an existing
//! cache or results folder.
//!
//! Settings come from defaults, then a file (`--config`: TOML, or a `run_config.json` of ours or
//! delphi's; for `explain` and `score` the folder's `run_config.json` when no file is given), then
//! flags. A rerun skips every latent whose outputs exist, so a killed or interrupted run resumes
//! where it stopped.

mod progress;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};
use autointerp_run::overrides::{
    CacheOverrides, ClientOverrides, DeviceOverrides, EmbedderOverrides, ExplainOverrides,
    LatentOverrides, ScoreOverrides,
};
pub use autointerp_run::{ExplainerKind, Overwrite, Provider, RunConfig, ScorerKind};
use autointerp_run::{Layout, Run, RunSummary, Stages};

use self::progress::Bars;
use crate::cache::print_stats;
use crate::delphi::DelphiArgs;
use crate::run_log::{self, say};

/// `autointerp run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The model explained: HF folder, `.gguf` file or Hub id; its tokenizer decodes the examples.
    model: Option<String>,
    /// The sparse coders (as `autointerp cache --sparse-model`); needed only to build the cache,
    /// and for `--neighbours-type decoder_similarity` or `encoder_similarity`.
    sparse_model: Option<String>,
    /// A tokenizer for a model that has none (`tokenizer.json`, an HF folder, a `.gguf` file or
    /// a Hub id) [default: the model's].
    #[arg(long)]
    tokenizer: Option<String>,
    /// A TOML file of settings: any option below, `-` written `_` (`n_tokens = 1000000`,
    /// `scorers = ["detection"]`, `model = "..."`); or a run_config.json, autointerp's or
    /// delphi's. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The run's folder is RESULTS_DIR/NAME [default: ""].
    #[arg(long)]
    name: Option<String>,
    /// Where runs are written [default: results].
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Stages to redo although their outputs exist, space- or comma-separated: cache,
    /// explanations, scores (delphi's `neighbours` is accepted: neighbours are always computed
    /// afresh).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    overwrite: Option<Vec<Overwrite>>,
    #[command(flatten)]
    cache: CacheOverrides,
    #[command(flatten)]
    device: DeviceOverrides,
    #[command(flatten)]
    latents: LatentOverrides,
    #[command(flatten)]
    explain: ExplainOverrides,
    #[command(flatten)]
    score: ScoreOverrides,
    #[command(flatten)]
    embedder: EmbedderOverrides,
    #[command(flatten)]
    client: ClientOverrides,
    #[command(flatten)]
    delphi: DelphiArgs,
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
    /// A TOML file of settings (or a run_config.json, autointerp's or delphi's), used instead of
    /// PATH's run_config.json. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The sparse coders, for `--neighbours-type decoder_similarity` or `encoder_similarity`
    /// [default: PATH's run_config.json, else the cache's config.json].
    #[arg(long)]
    sparse_model: Option<String>,
    /// Redo explanations that exist (`explanations`).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    overwrite: Option<Vec<Overwrite>>,
    #[command(flatten)]
    device: DeviceOverrides,
    #[command(flatten)]
    latents: LatentOverrides,
    #[command(flatten)]
    explain: ExplainOverrides,
    #[command(flatten)]
    embedder: EmbedderOverrides,
    #[command(flatten)]
    client: ClientOverrides,
    #[command(flatten)]
    delphi: DelphiArgs,
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
    /// A TOML file of settings (or a run_config.json, autointerp's or delphi's), used instead of
    /// PATH's run_config.json. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The sparse coders, for `--neighbours-type decoder_similarity` or `encoder_similarity`
    /// [default: PATH's run_config.json, else the cache's config.json].
    #[arg(long)]
    sparse_model: Option<String>,
    /// Redo scores that exist (`scores`).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    overwrite: Option<Vec<Overwrite>>,
    #[command(flatten)]
    device: DeviceOverrides,
    #[command(flatten)]
    latents: LatentOverrides,
    #[command(flatten)]
    score: ScoreOverrides,
    #[command(flatten)]
    embedder: EmbedderOverrides,
    #[command(flatten)]
    client: ClientOverrides,
    #[command(flatten)]
    delphi: DelphiArgs,
}

/// `autointerp run`.
pub fn run_command(args: RunArgs) -> Result<()> {
    let cfg = match &args.config {
        Some(path) => read_config(path)?,
        None => RunConfig::default(),
    };
    let cfg = cfg
        .merge(&serde_json::json!({
            "model": args.model,
            "sparse_model": args.sparse_model,
            "tokenizer": args.tokenizer,
            "name": args.name,
            "results_dir": args.results_dir,
            "overwrite": args.overwrite,
        }))?
        .merge(&args.cache)?
        .merge(&args.device)?
        .merge(&args.latents)?
        .merge(&args.explain)?
        .merge(&args.score)?
        .merge(&args.embedder)?
        .merge(&args.client)?;
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
    run_log::open(&layout.run_log())?;
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
    execute(run, Stages::ALL)
}

/// `autointerp explain`.
pub fn explain_command(args: ExplainArgs) -> Result<()> {
    let layout = Layout::new(args.out.clone().unwrap_or_else(|| args.path.clone()));
    let cfg = base_config(args.config.as_deref(), &args.path, &layout)?
        .merge(&serde_json::json!({
            "overwrite": args.overwrite,
            "sparse_model": args.sparse_model,
        }))?
        .merge(&args.device)?
        .merge(&args.latents)?
        .merge(&args.explain)?
        .merge(&args.embedder)?
        .merge(&args.client)?;
    cfg.validate()?;
    ensure!(
        cfg.explainer != ExplainerKind::None,
        "nothing to do: --explainer none"
    );
    let run = open_cache(&args.path, args.model, args.tokenizer, cfg, &layout)?;
    run_log::open(&layout.run_log())?;
    execute(run, Stages::EXPLAIN)
}

/// `autointerp score`.
pub fn score_command(args: ScoreArgs) -> Result<()> {
    let layout = Layout::new(args.out.clone().unwrap_or_else(|| args.path.clone()));
    let cfg = base_config(args.config.as_deref(), &args.path, &layout)?
        .merge(&serde_json::json!({
            "overwrite": args.overwrite,
            "sparse_model": args.sparse_model,
        }))?
        .merge(&args.device)?
        .merge(&args.latents)?
        .merge(&args.score)?
        .merge(&args.embedder)?
        .merge(&args.client)?;
    cfg.validate()?;
    ensure!(!cfg.scorers.is_empty(), "nothing to do: no --scorers");
    let run = open_cache(&args.path, args.model, args.tokenizer, cfg, &layout)?;
    run_log::open(&layout.run_log())?;
    execute(run, Stages::SCORE)
}

/// The settings `explain` and `score` start from: `--config`, else the folder's saved
/// `run_config.json`, else the defaults.
fn base_config(file: Option<&Path>, path: &Path, layout: &Layout) -> Result<RunConfig> {
    if let Some(file) = file {
        return read_config(file);
    }
    for saved in [layout.run_config(), Layout::new(path).run_config()] {
        if saved.is_file() {
            let mut cfg = read_config(&saved)?;
            // A results folder may come from anyone: its config must not decide which of this
            // machine's secrets go to which host. Keys are named on this command line (or in
            // the user's own --config) only.
            let named = [cfg.api_key_env.take(), cfg.embedding_api_key_env.take()];
            if named.iter().any(Option::is_some) {
                eprintln!(
                    "note: {} names API key variables; they are not used (pass --api-key-env or \
                     --embedding-api-key-env to send a key)",
                    saved.display()
                );
            }
            return Ok(cfg);
        }
    }
    Ok(RunConfig::default())
}

/// A config file (TOML, or a run_config.json of ours or delphi's), its notes printed.
fn read_config(path: &Path) -> Result<RunConfig> {
    let file = RunConfig::read_file(path)?;
    for note in &file.notes {
        eprintln!("note: {}: {note}", path.display());
    }
    Ok(file.config)
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
fn execute(run: Run, stages: Stages) -> Result<()> {
    let scores = (stages.score && !run.config().scorers.is_empty()).then(|| run.layout());
    let run = run.stages(stages);
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
    if let Some(layout) = scores {
        print_scores(&layout);
    }
    if summary.cancelled {
        let aborted = summary.main.aborted + summary.control.as_ref().map_or(0, |r| r.aborted);
        bail!(
            "interrupted by Ctrl-C ({aborted} latents in flight aborted); run the same command again to resume"
        );
    }
    Ok(())
}

/// Prints the per-scorer table of the results folder (every latent scored so far, this run's
/// and earlier ones'): means with their intervals, failures, the random control.
fn print_scores(layout: &Layout) {
    let summary = autointerp_report::load_results(layout.root()).map(|results| {
        autointerp_report::summarize(&results, &autointerp_report::Bootstrap::default())
    });
    match summary {
        Ok(summary) => {
            let text = summary.to_text();
            println!("\n{text}");
            run_log::write(&format!("\n{text}"));
        }
        Err(e) => say!("could not summarise the scores: {e}"),
    }
}

/// Prints what the phases did.
fn print_summary(s: &RunSummary, min_examples: usize) {
    let main = &s.main;
    say!(
        "{} latents done ({} explained), {} failed; {} already done; {} skipped (fewer than \
         {min_examples} activating examples)",
        main.done,
        main.explained,
        main.failed,
        s.already_done,
        main.skipped
    );
    for (what, t) in
        std::iter::once(("", main)).chain(s.control.as_ref().map(|c| ("random control: ", c)))
    {
        if t.incomplete > 0 {
            say!(
                "{what}{} latents have scores with failed items ({} items); run the same command again to retry exactly those",
                t.incomplete, t.failed_items
            );
        }
        if t.too_few > 0 {
            say!(
                "{what}{} scores not computed: too few examples for the scorer",
                t.too_few
            );
        }
    }
    if let Some(r) = &s.control {
        say!(
            "random control: {} latents scored, {} failed",
            r.done,
            r.failed
        );
    }
    let cost = s
        .usage
        .cost
        .map_or_else(String::new, |c| format!(", cost ${c:.4}"));
    say!(
        "tokens: {} prompt + {} completion{cost}",
        s.usage.prompt_tokens,
        s.usage.completion_tokens
    );
    if s.failures_written > 0 {
        say!("failures recorded in {}", s.layout.failures().display());
    }
    say!("results in {}", s.layout.root().display());
}
