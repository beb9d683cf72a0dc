//! `autointerp`: explain and score the latents of sparse autoencoders and transcoders.
//!
//! Run `autointerp --help` for the commands.

mod chat;

use clap::{Parser, Subcommand};

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
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Registers libtorch's CUDA kernels where a GPU build of torch is present; no-op on CPU.
    autointerp_model::init_cuda();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat(args) => chat::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
