//! The host ceiling of the caching loop: how many tokens a second `autointerp_cache::run` can
//! take when the model and the encoder cost nothing. The forward pass returns an empty
//! `[batch, 256, 1]` tensor and the "encoder" hands back precomputed TopK indices and values
//! (k = 32, distinct random latents per token), so what is timed is everything the loop does on
//! the host: copying indices and values off the device tensors, walking the tokens, the spill
//! files, the checkpoints and their fsyncs, and writing the split files at the end.
//!
//! Run with: cargo bench -p autointerp-cache --bench cache_host
//! (`CACHE_BENCH_WIDTHS=16384` to run one width; `CACHE_BENCH_BATCHES` batches of 32 × 256
//! tokens per iteration, default 40.)
// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::num::NonZeroUsize;
use std::time::Duration;

use autointerp_cache::{run, BoxError, CacheConfig, LatentEncoder, Target};
use autointerp_core::split::Tokens;
use autointerp_core::HookPoint;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tch::{Device, Kind, Tensor};

const BATCH: usize = 32;
const CTX: usize = 256;
const K: usize = 32;

/// An encoder that ignores its input and returns the same precomputed latents for every batch.
struct Precomputed {
    width: usize,
    indices: Tensor,
    values: Tensor,
}

impl Precomputed {
    fn new(width: usize) -> Self {
        let tokens = BATCH * CTX;
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut indices = Vec::with_capacity(tokens * K);
        let mut values = Vec::with_capacity(tokens * K);
        for _ in 0..tokens {
            let mut chosen: Vec<i64> = Vec::with_capacity(K);
            while chosen.len() < K {
                let l = (next() % width as u64) as i64;
                if !chosen.contains(&l) {
                    chosen.push(l);
                }
            }
            indices.extend(chosen);
            // Positive, as TopK values of a ReLU coder; never exactly 0 (which means padding).
            values.extend((0..K).map(|_| 0.01 + (next() % 1000) as f32 / 100.0));
        }
        let shape = [tokens as i64, K as i64];
        Self {
            width,
            indices: Tensor::from_slice(&indices).reshape(shape),
            values: Tensor::from_slice(&values).reshape(shape),
        }
    }
}

impl LatentEncoder for Precomputed {
    fn width(&self) -> usize {
        self.width
    }
    fn d_in(&self) -> usize {
        1
    }
    fn encode_sparse(&self, _x: &Tensor) -> Result<(Tensor, Tensor), BoxError> {
        Ok((self.indices.shallow_clone(), self.values.shallow_clone()))
    }
}

fn host(c: &mut Criterion) {
    let widths: Vec<usize> = std::env::var("CACHE_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16_384, 131_072]);
    let batches: usize = std::env::var("CACHE_BENCH_BATCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let rows = BATCH * batches;
    let tokens = Tokens {
        rows,
        ctx_len: CTX,
        ids: vec![0; rows * CTX],
    };
    let cfg = CacheConfig {
        batch_size: NonZeroUsize::new(BATCH).expect("nonzero"),
        n_splits: 5,
        model_name: "bench".into(),
        skip_first_token: false,
        extra: Default::default(),
        checkpoint_every: CacheConfig::DEFAULT_CHECKPOINT_EVERY,
        identity: String::new(),
    };
    let mut group = c.benchmark_group("cache_host");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((rows * CTX) as u64));
    for width in widths {
        let coder = Precomputed::new(width);
        let targets = [Target {
            hook: HookPoint::Residual(12),
            coder: &coder,
        }];
        group.bench_function(BenchmarkId::new("topk32", width), |b| {
            b.iter(|| {
                let dir = tempfile::tempdir().expect("temp dir");
                let forward = |ids: &Tensor| -> Result<Vec<Tensor>, BoxError> {
                    let n = ids.size()[0];
                    Ok(vec![Tensor::zeros(
                        [n, CTX as i64, 1],
                        (Kind::Float, Device::Cpu),
                    )])
                };
                run(dir.path(), &tokens, &targets, forward, &cfg, |_| {}).expect("cache run")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, host);
criterion_main!(benches);
