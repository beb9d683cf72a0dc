//! `autointerp`: explain and score the latents of sparse autoencoders and transcoders.
//!
//! Run `autointerp --help` for the commands.

mod activations;
mod cache;
mod chat;
mod common;
mod demo;
mod latents;
mod report;
mod run;
mod train;

use clap::{CommandFactory, Parser, Subcommand};

/// Explain and score the latents of sparse autoencoders and transcoders.
#[derive(Debug, Parser)]
#[command(name = "autointerp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask an explainer model one question: a quick check that a provider works.
    Chat(chat::ChatArgs),
    /// Run a model and save its activations at hook points to a safetensors file.
    Activations(activations::ActivationsArgs),
    /// Train a TopK sparse autoencoder on a model's activations (sparsify format).
    TrainSae(train::TrainArgs),
    /// Cache sparse-coder latents over a dataset, in delphi's split-file layout.
    Cache(cache::CacheArgs),
    /// Inspect latents in a cache.
    Latents(latents::LatentsArgs),
    /// The whole pipeline offline on SmolLM2-135M and the State of the Union corpus: trains a
    /// small SAE, caches, explains and scores latents with the in-process engine, reports.
    Demo(demo::DemoArgs),
    /// Summarise a results folder: tables, plots and an HTML page to browse latents.
    Report(report::ReportArgs),
    /// A results folder in other tools' formats: Neuronpedia's import files, a SAEBench-style
    /// summary.
    #[command(subcommand)]
    Export(report::ExportArgs),
    /// Cache, explain and score latents end to end (delphi's `python -m delphi`); resumable.
    Run(Box<run::RunArgs>),
    /// Explain the latents of an existing cache or results folder.
    Explain(run::ExplainArgs),
    /// Score the explanations of an existing results folder.
    Score(run::ScoreArgs),
}

/// This process's `run.log`, opened by `run`, `explain` and `score` once they know their folder.
static RUN_LOG: std::sync::LazyLock<autointerp_run::RunLog> =
    std::sync::LazyLock::new(autointerp_run::RunLog::default);

/// Prints a line on stderr and writes it to the run log.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        eprintln!("{line}");
        $crate::RUN_LOG.write_line(&line);
    }};
}
pub(crate) use say;

fn main() -> std::process::ExitCode {
    init_logging();
    // Registers libtorch's CUDA kernels where a GPU build of torch is present; no-op on CPU.
    autointerp_model::init_cuda();
    // delphi's command lines, pasted, parse as ours (`--n_tokens`, `--filter_bos False`).
    let args = std::env::args_os();
    let args = match autointerp_run::delphi_args::normalize_args(args, &Cli::command()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Chat(args) => chat::run(args),
        Command::Activations(args) => activations::run(args),
        Command::TrainSae(args) => train::run(args),
        Command::Cache(args) => cache::run_command(args),
        Command::Latents(args) => latents::run(args),
        Command::Report(args) => report::run(args),
        Command::Export(args) => report::export(args),
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run_command(*args),
        Command::Explain(args) => run::explain_command(args),
        Command::Score(args) => run::score_command(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Log events on stderr (`RUST_LOG`, default `warn`) and in a results folder's `run.log`
/// (`RUST_LOG`, default `info`), once a command opens one.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};

    let filter =
        |default: &str| EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter("warn")),
        )
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(|| &*RUN_LOG)
                .with_filter(filter("info")),
        )
        .init();
}
