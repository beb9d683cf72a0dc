//! What the `cache_*` tests share: a random sparsify-format TopK SAE sized for the tiny llama
//! fixture (`run_support::tiny_model`, hidden size 32), and the `autointerp cache` arguments.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

/// Hidden size of the tiny llama fixture.
pub const D_MODEL: i64 = 32;

/// Writes a random TopK SAE in sparsify's layout (`<dir>/<hook>/{cfg.json, sae.safetensors}`)
/// and returns `dir`.
pub fn write_sae(dir: &Path, hook: &str, d_in: i64, width: i64, k: i64) -> PathBuf {
    write_sae_seeded(dir, hook, d_in, width, k, 7)
}

/// [`write_sae`] with weights drawn from `seed`: another coder of the same shape.
pub fn write_sae_seeded(
    dir: &Path,
    hook: &str,
    d_in: i64,
    width: i64,
    k: i64,
    seed: i64,
) -> PathBuf {
    let sub = dir.join(hook);
    std::fs::create_dir_all(&sub).unwrap();
    let opts = (Kind::Float, Device::Cpu);
    // splitmix64, not tch's generator: that one is global, and tests run on parallel threads.
    let mut state = seed as u64;
    let uniform: Vec<f32> = (0..width * d_in)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let enc = Tensor::from_slice(&uniform).reshape([width, d_in]);
    let tensors = [
        ("encoder.weight", enc.copy()),
        ("encoder.bias", Tensor::zeros([width], opts)),
        ("W_dec", enc),
        ("b_dec", Tensor::zeros([d_in], opts)),
    ];
    Tensor::write_safetensors(&tensors, sub.join("sae.safetensors")).unwrap();
    let cfg = serde_json::json!({
        "activation": "topk", "expansion_factor": width / d_in, "normalize_decoder": true,
        "num_latents": width, "k": k, "multi_topk": false, "skip_connection": false,
        "transcode": false, "d_in": d_in,
    });
    std::fs::write(sub.join("cfg.json"), cfg.to_string()).unwrap();
    dir.to_path_buf()
}

/// `autointerp cache` over `dataset` at hook `layers.0` into `out`, with `extra` flags after.
pub fn cache_args(
    model: &Path,
    sae: &Path,
    dataset: &str,
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "cache",
        "--model",
        model.to_str().unwrap(),
        "--sparse-model",
        sae.to_str().unwrap(),
        "--hookpoints",
        "layers.0",
        "--dataset",
        dataset,
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The files of a finished cache under `<out>/latents/layers.0`, name → bytes, without
/// `stats.json` (it records the run's duration).
pub fn cache_files(out: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = out.join("latents/layers.0");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("stats.json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}
