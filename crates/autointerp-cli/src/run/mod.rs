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
use crate::{say, RUN_LOG};
use autointerp_run::delphi_args::DelphiArgs;

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

/// What `explain` and `score` share: the folder they work on and the settings besides their own.
#[derive(Debug, clap::Args)]
pub struct FolderArgs {
    /// A results folder (`autointerp run`); for `explain`, a latent cache (`autointerp cache
    /// --out`) too.
    path: PathBuf,
    /// Where `explanations/` and `scores/` go (and `score` reads `explanations/`) [default: PATH].
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
    /// Redo what exists (`explanations` for `explain`, `scores` for `score`).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    overwrite: Option<Vec<Overwrite>>,
    #[command(flatten)]
    device: DeviceOverrides,
    #[command(flatten)]
    latents: LatentOverrides,
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
    #[command(flatten)]
    folder: FolderArgs,
    #[command(flatten)]
    explain: ExplainOverrides,
}

/// `autointerp score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    folder: FolderArgs,
    #[command(flatten)]
    score: ScoreOverrides,
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
    open_run_log(&layout)?;
    let bars = Bars::default();
    let built = autointerp_run::ensure_cache(&cfg, layout.root(), &bars)?;
    bars.clear();
    let mut run = Run::new(cfg.clone())?;
    if let Some(built) = built {
        println!("{}", autointerp_cache::HookStats::table(&built.stats));
        if let (Some(tok), None) = (built.tokenizer, &cfg.tokenizer) {
            run = run.with_tokenizer(tok);
        }
    }
    execute(run, Stages::ALL)
}

/// `autointerp explain`.
pub fn explain_command(args: ExplainArgs) -> Result<()> {
    folder_command(args.folder, &args.explain, Stages::EXPLAIN)
}

/// `autointerp score`.
pub fn score_command(args: ScoreArgs) -> Result<()> {
    folder_command(args.folder, &args.score, Stages::SCORE)
}

/// `explain` or `score` (`stages`) on a folder, with the settings of that stage.
fn folder_command(args: FolderArgs, stage: &impl serde::Serialize, stages: Stages) -> Result<()> {
    let layout = Layout::new(args.out.clone().unwrap_or_else(|| args.path.clone()));
    let cfg = base_config(args.config.as_deref(), &args.path, &layout)?
        .merge(&serde_json::json!({
            "overwrite": args.overwrite,
            "sparse_model": args.sparse_model,
        }))?
        .merge(&args.device)?
        .merge(&args.latents)?
        .merge(stage)?
        .merge(&args.embedder)?
        .merge(&args.client)?;
    cfg.validate()?;
    if stages.explain {
        ensure!(
            cfg.explainer != ExplainerKind::None,
            "nothing to do: --explainer none"
        );
    } else {
        ensure!(!cfg.scorers.is_empty(), "nothing to do: no --scorers");
    }
    // A folder that is no cache is refused before run.log is written into it.
    autointerp_latents::LatentCache::open(&args.path)?;
    let run = open_cache(&args.path, args.model, args.tokenizer, cfg, &layout)?;
    open_run_log(&layout)?;
    execute(run, stages)
}

/// The settings `explain` and `score` start from (see `RunConfig::for_folder`), its notes
/// printed.
fn base_config(file: Option<&Path>, path: &Path, layout: &Layout) -> Result<RunConfig> {
    let read = RunConfig::for_folder(file, path, layout)?;
    for note in &read.notes {
        eprintln!("note: {note}");
    }
    Ok(read.config)
}

/// A config file (TOML, or a run_config.json of ours or delphi's), its notes printed.
fn read_config(path: &Path) -> Result<RunConfig> {
    let file = RunConfig::read_file(path)?;
    for note in &file.notes {
        eprintln!("note: {}: {note}", path.display());
    }
    Ok(file.config)
}

/// Opens the results folder's `run.log` for this command.
fn open_run_log(layout: &Layout) -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    Ok(RUN_LOG.open(&layout.run_log(), &argv)?)
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
            RUN_LOG.write_line(&format!("\n{text}"));
        }
        Err(e) => say!("could not summarise the scores: {e}"),
    }
}

/// Prints what the phases did.
fn print_summary(s: &RunSummary, min_examples: usize) {
    for line in s.lines(min_examples) {
        say!("{line}");
    }
}
