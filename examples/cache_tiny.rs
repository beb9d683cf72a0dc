//! Run with: cargo run -p autointerp-cache --example cache_tiny [-- OUT_DIR]
//!
//! Caches a tiny model end to end, offline, in seconds: the random two-layer Llama fixture of
//! autointerp-model's tests, a random TopK SAE (64 latents, k = 4) built in code on the residual
//! stream after block 0, and a grid of random token rows. `cache_dataset` writes delphi's split
//! files with their `config.json`, firing counts and statistics; the example then reads one
//! split back and prints what is in the folder. Without `OUT_DIR` the cache goes to a temporary
//! folder, removed at the end; with it, the cache stays in `OUT_DIR/latents/layers.0/`.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::Result;
use autointerp_cache::{cache_dataset, hook_dir, CacheConfig};
use autointerp_core::split::{Split, Tokens};
use autointerp_core::HookPoint;
use autointerp_model::{DType, Model};
use autointerp_sae::{Activation, SparseCoder, Weights};
use tch::{Device, Kind, Tensor};

/// A random TopK SAE of `width` latents on `d_in`-dimensional activations.
fn random_sae(d_in: i64, width: i64, k: usize) -> Result<SparseCoder> {
    let opts = (Kind::Float, Device::Cpu);
    let w_dec = Tensor::randn([width, d_in], opts);
    let w_dec = &w_dec / w_dec.norm_scalaropt_dim(2, [-1i64].as_slice(), true);
    let weights = Weights {
        w_enc: w_dec.tr().contiguous(),
        b_enc: Tensor::zeros([width], opts),
        w_dec: Some(w_dec),
        b_dec: Tensor::zeros([d_in], opts),
        w_skip: None,
    };
    Ok(SparseCoder::new(weights, Activation::TopK { k })?)
}

fn main() -> Result<()> {
    tch::manual_seed(0);
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../autointerp-model/tests/fixtures/llama");
    let (model, _tokenizer) = Model::load(&fixture.to_string_lossy(), Device::Cpu, DType::F32)?;

    // 16 rows of 12 token ids below the fixture's vocabulary of 96 (a real run tokenizes a
    // dataset: `DatasetSpec::token_rows`).
    let vocab = model.vocab_size() as u32;
    let tokens = Tokens {
        rows: 16,
        ctx_len: 12,
        ids: (0..16 * 12u32).map(|i| (i * 7919 + 13) % vocab).collect(),
    };

    let hook = HookPoint::Residual(0);
    let d_in = model.hook_dim(hook)? as i64;
    let coders = vec![(hook, random_sae(d_in, 64, 4)?.with_hook(hook))];

    let cfg = CacheConfig {
        batch_size: NonZeroUsize::new(4).unwrap(),
        n_splits: 2,
        model_name: "tiny-random-llama".into(),
        skip_first_token: true,
        extra: Default::default(),
        checkpoint_every: CacheConfig::DEFAULT_CHECKPOINT_EVERY,
        identity: String::new(),
    };
    let temp = tempfile::tempdir()?;
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let stats = cache_dataset(&out, &model, &coders, &tokens, &cfg, |p| {
        println!("rows {}/{}", p.rows_done, p.rows_total);
    })?;
    for s in &stats {
        println!(
            "{}: {} tokens, {} latents, {:.0}% alive, mean L0 {:.2}",
            s.hookpoint,
            s.n_tokens,
            s.width,
            100.0 * s.alive_fraction,
            s.mean_l0
        );
    }

    let dir = hook_dir(&out, hook);
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    println!("{}: {}", dir.display(), names.join(", "));

    let split = Split::read(&dir.join("0_31.safetensors"))?;
    println!(
        "split 0..=31: {} nonzero activations",
        split.locations.len()
    );
    if let (Some(l), Some(a)) = (split.locations.first(), split.activations.first()) {
        println!(
            "  first: row {} position {}: latent {} = {a:.3}",
            l.row, l.position, l.latent
        );
    }
    Ok(())
}
