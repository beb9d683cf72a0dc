//! `autointerp latents show`: a latent's top examples, read from a cache.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use autointerp_core::{Example, HookPoint, LatentId};
use autointerp_latents::{LatentCache, LatentDataset, LatentsConfig, TrainType};
use autointerp_model::Tokenizer;

/// `autointerp latents ...`.
#[derive(Debug, clap::Args)]
pub struct LatentsArgs {
    #[command(subcommand)]
    command: LatentsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LatentsCommand {
    /// Print a latent's strongest examples, activating tokens highlighted.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The cache folder (`autointerp cache --out`), one of delphi's, or a set of shards.
    #[arg(long)]
    cache: PathBuf,
    /// The hook point.
    #[arg(long)]
    hookpoint: String,
    /// The latent index.
    #[arg(long)]
    latent: u32,
    /// How many examples.
    #[arg(long, default_value_t = 10)]
    n: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 32)]
    example_ctx_len: usize,
    /// The model whose tokenizer decodes the tokens (default: the cache's `model_name`).
    #[arg(long)]
    model: Option<String>,
    /// A tokenizer for a model that has none (`tokenizer.json`, an HF folder, a `.gguf` file
    /// or a Hub id); wins over --model.
    #[arg(long)]
    tokenizer: Option<String>,
}

/// A token decoder for records: each id decoded on its own.
pub fn decoder(tok: Tokenizer) -> impl Fn(u32) -> String + Send + Sync + 'static {
    let tok = Arc::new(tok);
    move |id| {
        tok.decode(&[id], false)
            .unwrap_or_else(|_| format!("<{id}>"))
    }
}

/// One example on one line: tokens above 0 marked, by colour on a terminal, else `<<...>>`.
pub fn render(example: &Example, colour: bool) -> String {
    let mut out = String::new();
    let max = example.max_activation();
    for (text, &act) in example.str_tokens.iter().zip(&example.activations) {
        let text = text.replace('\n', "↵");
        if act > 0.0 && colour {
            // Brighter red for stronger activations: 5 shades of the 256-colour palette.
            let shade = [224, 217, 210, 203, 196]
                [((act / max.max(f32::MIN_POSITIVE)) * 4.0).round() as usize % 5];
            out.push_str(&format!("\x1b[1;38;5;{shade}m{text}\x1b[0m"));
        } else if act > 0.0 {
            out.push_str(&format!("<<{text}>>"));
        } else {
            out.push_str(&text);
        }
    }
    out
}

fn show(args: ShowArgs) -> Result<()> {
    let hook: HookPoint = args.hookpoint.parse()?;
    let cache = LatentCache::open(&args.cache)?;
    let model = match args.tokenizer.as_ref().or(args.model.as_ref()) {
        Some(m) => m.clone(),
        None => cache
            .hook(hook)?
            .config()
            .and_then(|c| c.get("model_name")?.as_str().map(str::to_owned))
            .context("the cache's config.json names no model_name: pass --model")?,
    };
    let tok = Tokenizer::load(&model).with_context(|| format!("the tokenizer of {model:?}"))?;
    let mut cfg = LatentsConfig::default();
    cfg.constructor.example_ctx_len = args.example_ctx_len;
    cfg.constructor.min_examples = 1;
    cfg.sampler.train_type = TrainType::Top;
    cfg.sampler.n_examples_train = args.n;
    let dataset = LatentDataset::builder(cache, cfg, decoder(tok))
        .latents(hook, [args.latent])
        .build()?;
    let id = LatentId::new(hook, args.latent);
    let built = dataset
        .record(id)?
        .with_context(|| format!("latent {id} never fires in this cache"))?;
    let colour = std::io::stdout().is_terminal();
    let r = &built.record;
    println!(
        "{id}: fires on {} of {} tokens ({:.4}%), max activation {:.3}",
        r.stats.n_activations,
        r.stats.n_tokens,
        100.0 * r.stats.firing_rate(),
        r.stats.max_activation
    );
    for (i, ex) in r.train.iter().enumerate() {
        println!(
            "{:>3} [{:>8.3}] {}",
            i + 1,
            ex.max_activation(),
            render(ex, colour)
        );
    }
    Ok(())
}

pub fn run(args: LatentsArgs) -> Result<()> {
    match args.command {
        LatentsCommand::Show(a) => show(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_rendering_marks_activating_tokens() {
        let ex = Example {
            tokens: vec![1, 2, 3],
            str_tokens: vec!["a".into(), " b".into(), "\n".into()],
            activations: vec![0.0, 2.0, 0.0],
            normalized: vec![0, 10, 0],
            quantile: None,
            distance: None,
        };
        assert_eq!(render(&ex, false), "a<< b>>↵");
        assert!(render(&ex, true).contains("\x1b["));
    }
}
