//! Throughput of the in-process engine (`LocalEngine`) on SmolLM2-135M-Instruct (its Q4_1 GGUF
//! dequantised to f32; fetched by `scripts/fetch-assets.sh smollm2`), at batch 1 and 16:
//!
//! - `prefill`: prompts of 128 tokens, one generated token each (no decoding step): prompt
//!   tokens per second;
//! - `decode`: prompts of 16 tokens, 32 generated tokens each (end tokens ignored): generated
//!   tokens per second, the short prefill included;
//! - `steered`: `decode` at batch 16 with a direction added to the residual stream after layer
//!   15 at every position (`GenerateRequest::with_steering`): what steering costs;
//! - `shared`: 16 prompts that share a 400-token prefix (as detection prompts share the system
//!   prompt, shots and explanation) and end in distinct 40-token suffixes, one generated token
//!   each with its logprobs: prompt tokens per second. `off`: without the prefix cache; `cold`:
//!   a new prefix every batch (the batch prefills it once); `warm`: the same prefix every
//!   batch, new suffixes (the cache holds the prefix).
//!
//! `prefill` and `decode` run with the prefix cache off: their prompts repeat from one
//! iteration to the next, which the cache would serve.
//!
//! Each batch is sent as concurrent requests that the engine gathers into one batch.
//!
//! Run with: `cargo bench -p autointerp-engine --bench local_engine`
//! (`AUTOINTERP_DEVICE=cuda` runs it on a GPU.)
#![allow(missing_docs)] // `criterion_group!` makes an undocumented pub fn

use std::path::PathBuf;
use std::time::Duration;

use autointerp_core::HookPoint;
use autointerp_engine::{Edit, EngineConfig, GenerateRequest, LocalEngine, Steering};
use autointerp_model::{parse_device, DType};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;

const PREFILL_LEN: usize = 128;
const DECODE_PROMPT: usize = 16;
const DECODE_TOKENS: usize = 32;
const SHARED_PREFIX: usize = 400;
const SHARED_SUFFIX: usize = 40;
const SHARED_ROWS: usize = 16;

fn smollm2_path() -> PathBuf {
    autointerp_core::assets::fetch(autointerp_core::assets::Asset::Smollm2)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `rows` different prompts of `len` tokens of ordinary text.
fn prompts(engine: &LocalEngine, rows: usize, len: usize) -> Vec<Vec<u32>> {
    let text = "The quick brown fox jumps over the lazy dog while the cat watches from the \
                window, wondering why anyone would jump over a dog at all. "
        .repeat(16);
    let ids = engine.tokenizer().unwrap().encode(&text, false).unwrap();
    (0..rows).map(|r| ids[r..r + len].to_vec()).collect()
}

/// `n` token ids drawn from `seed`: text without repeats, unlike [`prompts`], so that prompts
/// share exactly the prefix they are given.
fn random_ids(seed: u64, n: usize) -> Vec<u32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            1000 + ((x >> 33) % 40_000) as u32
        })
        .collect()
}

/// [`SHARED_ROWS`] requests of the prefix drawn from `prefix_seed` and suffixes drawn from
/// `suffix_seed` (distinct per row), one answer token with logprobs each.
fn shared_requests(prefix_seed: u64, suffix_seed: u64) -> Vec<GenerateRequest> {
    let prefix = random_ids(prefix_seed, SHARED_PREFIX);
    (0..SHARED_ROWS as u64)
        .map(|r| {
            let suffix = random_ids(suffix_seed * 1000 + r + 1, SHARED_SUFFIX);
            GenerateRequest::new([prefix.clone(), suffix].concat(), 1).with_logprobs(5)
        })
        .collect()
}

fn run(rt: &tokio::runtime::Runtime, engine: &LocalEngine, reqs: &[GenerateRequest]) -> usize {
    rt.block_on(join_all(reqs.iter().map(|r| engine.generate(r.clone()))))
        .into_iter()
        .map(|g| g.unwrap().tokens.len())
        .sum()
}

fn local_engine(c: &mut Criterion) {
    let device =
        parse_device(&std::env::var("AUTOINTERP_DEVICE").unwrap_or_else(|_| "cpu".into())).unwrap();
    let config = EngineConfig::default()
        .with_max_batch_size(16)
        .with_batch_wait(Duration::from_millis(5));
    let load = |config: EngineConfig| {
        LocalEngine::load(smollm2_path().to_str().unwrap(), device, DType::F32, config).unwrap()
    };
    let engine = load(config.clone().with_prefix_cache(false));
    let cached = load(config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();

    let mut group = c.benchmark_group("local_engine/smollm2-135m");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for batch in [1usize, 16] {
        let reqs: Vec<GenerateRequest> = prompts(&engine, batch, PREFILL_LEN)
            .into_iter()
            .map(|p| GenerateRequest::new(p, 1))
            .collect();
        group.throughput(Throughput::Elements((batch * PREFILL_LEN) as u64));
        group.bench_function(
            BenchmarkId::new("prefill", format!("{batch}x{PREFILL_LEN}")),
            |b| b.iter(|| run(&rt, &engine, &reqs)),
        );

        let reqs: Vec<GenerateRequest> = prompts(&engine, batch, DECODE_PROMPT)
            .into_iter()
            .map(|p| GenerateRequest::new(p, DECODE_TOKENS).with_stop_token_ids([]))
            .collect();
        assert_eq!(run(&rt, &engine, &reqs), batch * DECODE_TOKENS);
        group.throughput(Throughput::Elements((batch * DECODE_TOKENS) as u64));
        group.bench_function(
            BenchmarkId::new("decode", format!("{batch}x{DECODE_TOKENS}")),
            |b| b.iter(|| run(&rt, &engine, &reqs)),
        );
    }

    let hook = HookPoint::Residual(15);
    let d = engine.hook_dim(hook).unwrap();
    let direction: Vec<f32> = (0..d)
        .map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0)
        .collect();
    let steering = Steering::one(hook, Edit::add(direction, 4.0).unwrap());
    let reqs: Vec<GenerateRequest> = prompts(&engine, 16, DECODE_PROMPT)
        .into_iter()
        .map(|p| {
            GenerateRequest::new(p, DECODE_TOKENS)
                .with_stop_token_ids([])
                .with_steering(steering.clone())
        })
        .collect();
    assert_eq!(run(&rt, &engine, &reqs), 16 * DECODE_TOKENS);
    group.throughput(Throughput::Elements((16 * DECODE_TOKENS) as u64));
    group.bench_function(
        BenchmarkId::new("steered", format!("16x{DECODE_TOKENS}")),
        |b| b.iter(|| run(&rt, &engine, &reqs)),
    );

    // A new seed per batch: new suffixes (and, for `cold`, a new prefix).
    let fresh = std::cell::Cell::new(0u64);
    let next = || {
        fresh.set(fresh.get() + 1);
        fresh.get()
    };
    group.throughput(Throughput::Elements(
        (SHARED_ROWS * (SHARED_PREFIX + SHARED_SUFFIX)) as u64,
    ));
    let size = format!("{SHARED_ROWS}x({SHARED_PREFIX}+{SHARED_SUFFIX})");
    for (case, engine, new_prefix) in [
        ("off", &engine, true),
        ("cold", &cached, true),
        ("warm", &cached, false),
    ] {
        group.bench_function(BenchmarkId::new(format!("shared/{case}"), &size), |b| {
            b.iter_batched(
                || {
                    let seed = next();
                    shared_requests(if new_prefix { seed } else { 0 }, seed)
                },
                |reqs| run(&rt, engine, &reqs),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, local_engine);
criterion_main!(benches);
