//! Run with: cargo run --release -p autointerp-model --example model_activations -- MODEL_PATH "text"
//!
//! Loads a model (an HF folder, a `.gguf` file or a Hub id), runs it on the text capturing every
//! hook point of the middle layer, prints their shapes and norms, and the top next tokens.
//! `AUTOINTERP_DEVICE=cuda` runs on a GPU.

use anyhow::{Context, Result};
use autointerp_core::HookPoint;
use autointerp_model::{parse_device, DType, Hooks, Input, Logits, Model};
use tch::{Kind, Tensor};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("usage: model_activations MODEL_PATH \"text\"")?;
    let text = args
        .next()
        .unwrap_or_else(|| "The capital of France is".to_owned());
    let device =
        parse_device(&std::env::var("AUTOINTERP_DEVICE").unwrap_or_else(|_| "cpu".into()))?;

    let start = std::time::Instant::now();
    let (model, tokenizer) = Model::load(&path, device, DType::F32)?;
    let tokenizer = tokenizer.context("this model folder has no tokenizer.json")?;
    let c = model.config();
    println!(
        "{:?}: {} layers, d_model {}, MLP {}, {} heads ({} kv) of {}, vocab {} — loaded in {:.1?}",
        c.arch,
        c.num_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size,
        start.elapsed()
    );

    let ids: Vec<i64> = tokenizer
        .encode(&text, true)?
        .into_iter()
        .map(i64::from)
        .collect();
    let input_ids = Tensor::from_slice(&ids).unsqueeze(0);
    println!("{} tokens: {ids:?}", ids.len());

    let mid = model.n_layers() / 2;
    let points = [
        HookPoint::Embed,
        HookPoint::Attn(mid),
        HookPoint::MlpInput(mid),
        HookPoint::MlpHidden(mid),
        HookPoint::Mlp(mid),
        HookPoint::Residual(mid),
    ];
    let hooks = Hooks::new().capture_all(points).with_logits(Logits::Last);
    let out = model.forward(&Input::new(&input_ids), &hooks)?;
    for point in points {
        let t = &out.captures[&point];
        let norm = t.to_kind(Kind::Float).norm().double_value(&[]);
        println!("{:>24}  {:?}  norm {norm:.3}", point.to_string(), t.size());
    }

    let logits = out.logits.context("logits were requested")?;
    let probs = logits
        .to_kind(Kind::Float)
        .flatten(0, -1)
        .softmax(-1, Kind::Float);
    let (values, indices) = probs.topk(10, -1, true, true);
    println!("next token after {text:?}:");
    for (p, id) in Vec::<f64>::try_from(values)?
        .into_iter()
        .zip(Vec::<i64>::try_from(indices)?)
    {
        println!("  {p:.4}  {:?}", tokenizer.decode(&[id as u32], false)?);
    }
    Ok(())
}
