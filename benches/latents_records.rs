//! Records per second for every latent of a synthetic cache: 1,048,576 tokens (4096 rows × 256),
//! 4608 latents in 5 splits, ~32 latents firing per token with power-law firing rates.
//!
//! Run with: cargo bench -p autointerp-latents --bench latents_records
//!
//! The cache is generated into a temporary folder, or into `$LATENTS_BENCH_DIR` when set (and
//! reused from there), so the example `latents_records` and delphi can be run on the same files.

#![allow(missing_docs)] // `criterion_group!` makes an undocumented pub fn

use std::hint::black_box;
use std::path::Path;

use autointerp_core::split::{split_ranges, Location, Split, Tokens};
use autointerp_core::HookPoint;
use autointerp_latents::{LatentCache, LatentDataset, LatentsConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROWS: usize = 4096;
const CTX: usize = 256;
const WIDTH: u32 = 4608;
const SPLITS: u32 = 5;
const DRAWS_PER_TOKEN: usize = 32;
const HOOK: &str = "layers.6";

/// Writes the synthetic cache under `root/latents/layers.6`, with a delphi-style `config.json`.
fn generate(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("latents").join(HOOK);
    if dir.join("config.json").exists() {
        return Ok(()); // already there from an earlier run
    }
    std::fs::create_dir_all(&dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Firing weight of the latent of rank r ∝ (r + 20)^-1.2: the densest latent fires on ~30% of
    // tokens, the rarest on a few hundred; ranks are shuffled over latent indices.
    let mut latent_of_rank: Vec<u32> = (0..WIDTH).collect();
    latent_of_rank.shuffle(&mut rng);
    let mut cdf: Vec<f64> = (0..WIDTH).map(|r| (r as f64 + 20.0).powf(-1.2)).collect();
    for i in 1..cdf.len() {
        cdf[i] += cdf[i - 1];
    }
    let total = cdf[cdf.len() - 1];
    let scale: Vec<f32> = (0..WIDTH).map(|_| rng.random_range(0.5..8.0)).collect();

    // (row, position, latent, activation) in (row, position, latent) order, as caches list them.
    let mut nonzeros: Vec<(u32, u32, u16, f32)> = Vec::with_capacity(ROWS * CTX * DRAWS_PER_TOKEN);
    let mut fired: Vec<u16> = Vec::with_capacity(DRAWS_PER_TOKEN);
    for row in 0..ROWS as u32 {
        for pos in 0..CTX as u32 {
            fired.clear();
            for _ in 0..DRAWS_PER_TOKEN {
                let u = rng.random::<f64>() * total;
                let rank = cdf.partition_point(|&c| c < u).min(WIDTH as usize - 1);
                fired.push(latent_of_rank[rank] as u16);
            }
            fired.sort_unstable();
            fired.dedup();
            for &l in &fired {
                let a = scale[l as usize] * rng.random::<f32>().powi(2) + 0.01;
                nonzeros.push((row, pos, l, a));
            }
        }
    }
    let ids: Vec<u32> = (0..ROWS * CTX)
        .map(|_| rng.random_range(0..50_000))
        .collect();
    let tokens = Tokens {
        rows: ROWS,
        ctx_len: CTX,
        ids,
    };
    for (start, end) in split_ranges(WIDTH, SPLITS) {
        let mine: Vec<&(u32, u32, u16, f32)> = nonzeros
            .iter()
            .filter(|n| (start..=end).contains(&u32::from(n.2)))
            .collect();
        Split {
            start,
            end,
            locations: mine
                .iter()
                .map(|n| Location {
                    row: n.0,
                    position: n.1,
                    latent: u32::from(n.2),
                })
                .collect(),
            activations: mine.iter().map(|n| n.3).collect(),
            tokens: Some(tokens.clone()),
        }
        .write_to_dir(&dir)?;
    }
    let config = serde_json::json!({
        "dataset_repo": "synthetic", "dataset_split": "train", "dataset_name": "", "dataset_column": "text",
        "batch_size": 32, "cache_ctx_len": CTX, "n_tokens": ROWS * CTX, "n_splits": SPLITS, "model_name": "synthetic"
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    eprintln!(
        "synthetic cache: {} nonzeros ({:.1} per token) in {}",
        nonzeros.len(),
        nonzeros.len() as f64 / (ROWS * CTX) as f64,
        dir.display()
    );
    Ok(())
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root =
        std::env::var_os("LATENTS_BENCH_DIR").map_or_else(|| tmp.path().to_path_buf(), Into::into);
    generate(&root).expect("generate the synthetic cache");
    let cache = LatentCache::open(&root).expect("open the cache");
    let hook: HookPoint = HOOK.parse().expect("hook point");

    let mut group = c.benchmark_group("latents_records");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(WIDTH)));
    group.bench_function("all_4608_latents_1M_tokens", |b| {
        b.iter(|| {
            let ds = LatentDataset::builder(cache.clone(), LatentsConfig::default(), |t: u32| {
                t.to_string()
            })
            .hooks([hook])
            .build()
            .expect("dataset");
            let mut n = 0usize;
            for r in ds.records() {
                black_box(r.expect("record"));
                n += 1;
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
