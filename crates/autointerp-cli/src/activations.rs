//! `autointerp activations`: run a model and save activations at hook points.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use autointerp_model::{save_activations, ActivationInput};

use crate::common::{load_model, parse_hookpoints, DeviceArgs};

/// `autointerp activations`.
#[derive(Debug, clap::Args)]
pub struct ActivationsArgs {
    /// HF model folder, `.gguf` file, or Hub id.
    #[arg(long)]
    model: String,
    /// Hook points, space- or comma-separated, e.g. `layers.6 layers.6.mlp` (HF module paths
    /// also work).
    #[arg(long, visible_alias = "hookpoint", required = true, num_args = 1.., value_delimiter = ',')]
    hookpoints: Vec<String>,
    /// Text to run (tokenized with the model's tokenizer).
    #[arg(
        long,
        conflicts_with = "input_ids",
        required_unless_present = "input_ids"
    )]
    text: Option<String>,
    /// Token ids: rows separated by `;`, ids by `,` (shorter rows are right-padded and masked).
    #[arg(long)]
    input_ids: Option<String>,
    /// Also save `logits` `[batch, seq, vocab]`.
    #[arg(long)]
    logits: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
}

/// Parses `1,2,3;4,5` into rows.
fn parse_ids(s: &str) -> Result<Vec<Vec<i64>>> {
    let rows: Vec<Vec<i64>> = s
        .split(';')
        .map(|row| {
            row.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<i64>()
                        .with_context(|| format!("--input-ids: {t:?} is not a token id"))
                })
                .collect()
        })
        .collect::<Result<_>>()?;
    if rows.is_empty() || rows.iter().any(Vec::is_empty) {
        bail!("--input-ids: every row needs at least one id, e.g. \"1,2,3;4,5,6\"");
    }
    Ok(rows)
}

pub fn run(args: ActivationsArgs) -> Result<()> {
    let (model, tokenizer) = load_model(&args.model, &args.device)?;
    let hooks = parse_hookpoints(&args.hookpoints, &model)?;
    let rows;
    let input = match (&args.text, &args.input_ids) {
        (Some(text), _) => ActivationInput::Text {
            text,
            tokenizer: tokenizer
                .as_ref()
                .context("--text needs a tokenizer; this model has none: use --input-ids")?,
        },
        (None, Some(ids)) => {
            rows = parse_ids(ids)?;
            ActivationInput::Ids(&rows)
        }
        (None, None) => bail!("pass --text or --input-ids"),
    };
    let saved = save_activations(&model, input, &hooks, args.logits, &args.out)?;
    for (name, t) in saved.tensors() {
        eprintln!("{name}: {:?}", t.size());
    }
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_with_clear_errors() {
        assert_eq!(
            parse_ids("1,2,3;4,5").unwrap(),
            vec![vec![1, 2, 3], vec![4, 5]]
        );
        assert!(parse_ids("1,x").unwrap_err().to_string().contains("\"x\""));
        assert!(parse_ids("1;").is_err());
    }
}
