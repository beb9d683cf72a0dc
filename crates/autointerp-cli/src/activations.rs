//! `autointerp activations`: run a model and save activations at hook points.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use autointerp_model::{Hooks, Input, Logits};
use tch::{Device, Kind, Tensor};

use crate::common::{load_model, parse_hookpoints, DeviceArgs};

/// `autointerp activations`.
#[derive(Debug, clap::Args)]
pub struct ActivationsArgs {
    /// HF model folder, `.gguf` file, or Hub id.
    #[arg(long)]
    model: String,
    /// Comma-separated hook points, e.g. `layers.6,layers.6.mlp` (HF module paths also work).
    #[arg(long)]
    hookpoints: String,
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
    let rows = match (&args.text, &args.input_ids) {
        (Some(text), _) => {
            let tok = tokenizer
                .context("--text needs a tokenizer; this model has none: use --input-ids")?;
            // With special tokens, as HF's `tokenizer(text)` does: BOS where the model adds one.
            vec![tok.encode(text, true)?.into_iter().map(i64::from).collect()]
        }
        (None, Some(ids)) => parse_ids(ids)?,
        (None, None) => bail!("pass --text or --input-ids"),
    };
    let vocab = model.vocab_size() as i64;
    if let Some(bad) = rows.iter().flatten().find(|&&t| t < 0 || t >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * seq);
    let mut mask = Vec::with_capacity(rows.len() * seq);
    for row in &rows {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(0, seq - row.len())),
        );
        mask.extend((0..seq).map(|i| i64::from(i < row.len())));
    }
    let shape = [rows.len() as i64, seq as i64];
    let ids = Tensor::from_slice(&ids)
        .reshape(shape)
        .to_device(model.device());
    let mask = Tensor::from_slice(&mask)
        .reshape(shape)
        .to_device(model.device());
    let padded = rows.iter().any(|r| r.len() != seq);
    let input = if padded {
        Input::new(&ids).with_attention_mask(&mask)
    } else {
        Input::new(&ids)
    };
    let hook_set = Hooks::new()
        .capture_all(hooks.iter().copied())
        .with_logits(if args.logits {
            Logits::All
        } else {
            Logits::None
        });
    let mut out = model.forward(&input, &hook_set)?;

    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for hook in &hooks {
        let t = out
            .take(*hook)
            .with_context(|| format!("the forward pass did not capture {hook}"))?;
        tensors.push((
            hook.to_string(),
            t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous(),
        ));
    }
    if let Some(logits) = out.logits.take() {
        tensors.push((
            "logits".into(),
            logits
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous(),
        ));
    }
    if padded {
        tensors.push(("attention_mask".into(), mask.to_device(Device::Cpu)));
    }
    let tmp = args.out.with_extension("safetensors.tmp");
    Tensor::write_safetensors(&tensors, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    for (name, t) in &tensors {
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
