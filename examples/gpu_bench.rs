//! The GPU caching benchmark's set-up and its two device-only figures (see
//! `scripts/gpu-bench.sh`, which runs this, then `autointerp cache` end to end).
//!
//! Writes, under OUT: a gemma-2-2b-shaped model with random weights (`model/`, from its config
//! alone: no download), random TopK SAEs (k 32) on `layers.12` at widths 16,384 and 131,072
//! (`sae-16384/`, `sae-131072/`, sparsify layout) and random pre-tokenized rows
//! (`tokens.safetensors`). Then prints tokens/s for (a) the forward pass to `layers.12` alone and
//! (b) forward + encode at each width with nothing copied to the host: the limit a cache loop can
//! reach.
//!
//! cargo run --release -p autointerp-cache --example gpu_bench -- OUT [--device cuda] [--dtype bf16] [--small]
//!
//! `--small` writes a model and SAEs a few hundred times smaller, to check the script on a CPU.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use autointerp_core::HookPoint;
use autointerp_model::{parse_device, DType, Hooks, Input, Logits, Model};
use autointerp_sae::SparseCoder;
use serde_json::json;
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 32;
const CTX: i64 = 256;
const HOOK_LAYER: usize = 12;
const K: i64 = 32;

/// The shapes written: gemma-2-2b's, or a small stand-in with the same structure.
struct Shape {
    layers: usize,
    hidden: i64,
    intermediate: i64,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    vocab: i64,
    widths: Vec<i64>,
    rows: i64,
}

fn shape(small: bool) -> Shape {
    if small {
        Shape {
            layers: 14,
            hidden: 64,
            intermediate: 128,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            vocab: 512,
            widths: vec![1024, 4096],
            rows: 128,
        }
    } else {
        Shape {
            layers: 26,
            hidden: 2304,
            intermediate: 9216,
            heads: 8,
            kv_heads: 4,
            head_dim: 256,
            vocab: 256_000,
            widths: vec![16_384, 131_072],
            rows: 4096,
        }
    }
}

fn write_model(dir: &Path, s: &Shape, kind: Kind) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = json!({
        "architectures": ["Gemma2ForCausalLM"],
        "model_type": "gemma2",
        "attention_bias": false,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "head_dim": s.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "max_position_embeddings": 8192,
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "num_key_value_heads": s.kv_heads,
        "query_pre_attn_scalar": s.head_dim,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "tie_word_embeddings": true,
        "vocab_size": s.vocab,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    let std = 0.02;
    let randn =
        |shape: &[i64]| (Tensor::randn(shape, (Kind::Float, Device::Cpu)) * std).to_kind(kind);
    // Gemma's RMSNorm scales by (1 + weight): zero weights are plain normalisation.
    let norm = |n: i64| Tensor::zeros([n], (kind, Device::Cpu));
    let mut tensors: Vec<(String, Tensor)> = vec![
        (
            "model.embed_tokens.weight".into(),
            randn(&[s.vocab, s.hidden]),
        ),
        ("model.norm.weight".into(), norm(s.hidden)),
    ];
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        for name in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            tensors.push((format!("{p}.{name}.weight"), norm(s.hidden)));
        }
        let (q, kv) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        tensors.push((
            format!("{p}.self_attn.q_proj.weight"),
            randn(&[q, s.hidden]),
        ));
        tensors.push((
            format!("{p}.self_attn.k_proj.weight"),
            randn(&[kv, s.hidden]),
        ));
        tensors.push((
            format!("{p}.self_attn.v_proj.weight"),
            randn(&[kv, s.hidden]),
        ));
        tensors.push((
            format!("{p}.self_attn.o_proj.weight"),
            randn(&[s.hidden, q]),
        ));
        tensors.push((
            format!("{p}.mlp.gate_proj.weight"),
            randn(&[s.intermediate, s.hidden]),
        ));
        tensors.push((
            format!("{p}.mlp.up_proj.weight"),
            randn(&[s.intermediate, s.hidden]),
        ));
        tensors.push((
            format!("{p}.mlp.down_proj.weight"),
            randn(&[s.hidden, s.intermediate]),
        ));
    }
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

/// A random TopK SAE in sparsify's layout: `<dir>/layers.12/{cfg.json, sae.safetensors}`.
fn write_sae(dir: &Path, d_in: i64, width: i64) -> Result<()> {
    let dir = dir.join(format!("layers.{HOOK_LAYER}"));
    std::fs::create_dir_all(&dir)?;
    let cfg = json!({
        "activation": "topk", "expansion_factor": width / d_in, "normalize_decoder": true,
        "num_latents": width, "k": K, "multi_topk": false, "skip_connection": false,
        "transcode": false, "d_in": d_in
    });
    std::fs::write(dir.join("cfg.json"), serde_json::to_vec(&cfg)?)?;
    let opts = (Kind::Float, Device::Cpu);
    let enc = Tensor::randn([width, d_in], opts) / (d_in as f64).sqrt();
    let tensors = [
        ("encoder.weight", enc.shallow_clone()),
        ("encoder.bias", Tensor::zeros([width], opts)),
        ("W_dec", enc),
        ("b_dec", Tensor::zeros([d_in], opts)),
    ];
    Tensor::write_safetensors(&tensors, dir.join("sae.safetensors"))?;
    Ok(())
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Tokens per second of `f` over every batch of `ids` (one warm-up batch first).
fn rate(ids: &Tensor, device: Device, mut f: impl FnMut(&Tensor) -> Result<()>) -> Result<f64> {
    let batches = ids.split(BATCH, 0);
    f(&batches[0].to_device(device))?;
    sync(device);
    let start = Instant::now();
    for b in &batches {
        f(&b.to_device(device))?;
    }
    sync(device);
    Ok(ids.size()[0] as f64 * CTX as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let (mut device, mut dtype, mut small) = ("cuda".to_string(), "bf16".to_string(), false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => device = args.next().context("--device needs a value")?,
            "--dtype" => dtype = args.next().context("--dtype needs a value")?,
            "--small" => small = true,
            _ if out.is_none() && !a.starts_with('-') => out = Some(PathBuf::from(a)),
            _ => bail!(
                "unknown argument {a:?}; usage: gpu_bench OUT [--device D] [--dtype T] [--small]"
            ),
        }
    }
    let out = out.context("usage: gpu_bench OUT [--device D] [--dtype T] [--small]")?;
    let s = shape(small);
    let dev = parse_device(&device)?;
    let dt: DType = dtype.parse().map_err(|e| anyhow::anyhow!("--dtype: {e}"))?;
    tch::manual_seed(0);

    let model_dir = out.join("model");
    if !model_dir.join("model.safetensors").exists() {
        eprintln!(
            "writing a random {}-layer gemma2 ({} hidden) to {}",
            s.layers,
            s.hidden,
            model_dir.display()
        );
        write_model(&model_dir, &s, Kind::BFloat16)?;
    }
    for &w in &s.widths {
        let dir = out.join(format!("sae-{w}"));
        if !dir.exists() {
            write_sae(&dir, s.hidden, w)?;
        }
    }
    let ids = Tensor::randint(s.vocab, [s.rows, CTX], (Kind::Int64, Device::Cpu));
    Tensor::write_safetensors(
        &[("tokens", ids.shallow_clone())],
        out.join("tokens.safetensors"),
    )?;

    let model = Model::from_hf_dir(&model_dir, dev, dt)?;
    let hook = HookPoint::Residual(HOOK_LAYER);
    let hooks = Hooks::new().capture(hook).with_logits(Logits::None);
    let forward = |b: &Tensor| -> Result<Tensor> {
        let mut acts = model.forward(&Input::new(b), &hooks)?;
        acts.take(hook).context("no activations at layers.12")
    };
    let _guard = tch::no_grad_guard();
    let a = rate(&ids, dev, |b| forward(b).map(drop))?;
    println!("(a) forward to layers.{HOOK_LAYER}: {a:.0} tokens/s");
    for &w in &s.widths {
        let (_, coder) = SparseCoder::load_dir(&out.join(format!("sae-{w}")), &[], dev)?
            .into_iter()
            .next()
            .context("no SAE written")?;
        let b = rate(&ids, dev, |b| {
            let x = forward(b)?;
            let x = x.reshape([-1, s.hidden]).to_kind(Kind::Float);
            coder.encode(&x)?;
            Ok(())
        })?;
        println!("(b) forward + encode, width {w}: {b:.0} tokens/s");
    }
    Ok(())
}
