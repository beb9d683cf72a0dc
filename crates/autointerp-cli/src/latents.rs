//! `autointerp latents show`: a latent's top examples, read from a cache, and the tokens its
//! decoder direction promotes and suppresses when the cache has its vocabulary projection.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use autointerp_core::{HookPoint, LatentId, LatentLogits};
use autointerp_latents::{render_example, LatentCache, LatentDataset, LatentsConfig, Style};
use autointerp_model::Tokenizer;
use autointerp_run::overrides::number;

/// `autointerp latents ...`.
#[derive(Debug, clap::Args)]
pub struct LatentsArgs {
    #[command(subcommand)]
    command: LatentsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LatentsCommand {
    /// Print a latent's strongest examples, activating tokens highlighted, and the tokens its
    /// decoder direction promotes and suppresses (logit lens) when the cache has them.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The cache folder (`autointerp cache --out`), one of delphi's, or a set of shards.
    #[arg(long)]
    cache: PathBuf,
    /// The hook point.
    #[arg(long, visible_alias = "hookpoints")]
    hookpoint: String,
    /// The latent index.
    #[arg(long, value_parser = number::<u32>)]
    latent: u32,
    /// How many examples.
    #[arg(long, default_value_t = 10, value_parser = number::<usize>)]
    n: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 32, value_parser = number::<usize>)]
    example_ctx_len: usize,
    /// The model whose tokenizer decodes the tokens (default: the cache's `model_name`).
    #[arg(long)]
    model: Option<String>,
    /// A tokenizer for a model that has none (`tokenizer.json`, an HF folder, a `.gguf` file
    /// or a Hub id); wins over --model.
    #[arg(long)]
    tokenizer: Option<String>,
}

fn show(args: ShowArgs) -> Result<()> {
    let hook: HookPoint = args.hookpoint.parse()?;
    let cache = LatentCache::open(&args.cache)?;
    let model = match args.tokenizer.as_ref().or(args.model.as_ref()) {
        Some(m) => m.clone(),
        None => cache
            .hook(hook)?
            .model_name()
            .map(str::to_owned)
            .context("the cache's config.json names no model_name: pass --model")?,
    };
    let tok = Tokenizer::load(&model).with_context(|| format!("the tokenizer of {model:?}"))?;
    let cfg = LatentsConfig::top_examples(args.n, args.example_ctx_len);
    let dataset = LatentDataset::builder(cache, cfg, tok.into_token_decoder())
        .latents(hook, [args.latent])
        .build()?;
    let id = LatentId::new(hook, args.latent);
    let built = dataset
        .record(id)?
        .with_context(|| format!("latent {id} never fires in this cache"))?;
    let style = if std::io::stdout().is_terminal() {
        Style::Colour
    } else {
        Style::Plain
    };
    let r = &built.record;
    println!(
        "{id}: fires on {} of {} tokens ({:.4}%), max activation {:.3}",
        r.stats.n_activations,
        r.stats.n_tokens,
        100.0 * r.stats.firing_rate(),
        r.stats.max_activation
    );
    if let Some(logits) = &r.logits {
        println!(
            "promotes:   {}",
            LatentLogits::describe(&logits.promoted, usize::MAX)
        );
        println!(
            "suppresses: {}",
            LatentLogits::describe(&logits.suppressed, usize::MAX)
        );
    }
    for (i, ex) in r.train.iter().enumerate() {
        println!(
            "{:>3} [{:>8.3}] {}",
            i + 1,
            ex.max_activation(),
            render_example(ex, style)
        );
    }
    Ok(())
}

pub fn run(args: LatentsArgs) -> Result<()> {
    match args.command {
        LatentsCommand::Show(a) => show(a),
    }
}
