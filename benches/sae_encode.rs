//! Encode throughput of sparse coders on the CPU, in tokens per second: d_in 2304 (Gemma 2 2B's
//! residual stream), widths 16384 and 131072, TopK (k = 32) and JumpReLU, f32, 256 tokens a batch.
//!
//! Run with: cargo bench -p autointerp-sae --bench sae_encode
//! (`SAE_BENCH_WIDTHS=16384` to run one width.)
// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use autointerp_sae::{Activation, SparseCoder, Weights};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

const D_IN: i64 = 2304;
const TOKENS: i64 = 256;

fn coder(width: i64, activation: Activation) -> SparseCoder {
    let opts = (Kind::Float, Device::Cpu);
    let weights = Weights {
        // Scaled so that pre-activations are O(1), as in a trained SAE.
        w_enc: Tensor::randn([D_IN, width], opts) / (D_IN as f64).sqrt(),
        b_enc: Tensor::zeros([width], opts),
        // Encoding does not touch the decoder; leave it out to halve the memory.
        w_dec: None,
        b_dec: Tensor::zeros([D_IN], opts),
        w_skip: None,
    };
    SparseCoder::new(weights, activation).expect("valid shapes")
}

fn encode(c: &mut Criterion) {
    tch::manual_seed(0);
    let widths: Vec<i64> = std::env::var("SAE_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16_384, 131_072]);
    let x = Tensor::randn([TOKENS, D_IN], (Kind::Float, Device::Cpu));
    let mut group = c.benchmark_group("sae_encode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(TOKENS as u64));
    for width in widths {
        // A threshold that keeps ~64 latents per token (pre-activations are ~N(0, 1)), about
        // GemmaScope's L0 at these widths: P(z > 2.65) * 16384 ≈ 66, P(z > 3.3) * 131072 ≈ 63.
        let z = if width <= 16_384 { 2.65 } else { 3.3 };
        let threshold = Tensor::full([width], z, (Kind::Float, Device::Cpu));
        let coders = [
            ("topk32", coder(width, Activation::TopK { k: 32 })),
            ("jumprelu", coder(width, Activation::JumpRelu { threshold })),
        ];
        for (name, sae) in &coders {
            let l0 = sae.encode(&x).expect("encode").mean_l0();
            eprintln!("sae_encode/{name}/{width}: mean L0 {l0:.1}");
            group.bench_with_input(BenchmarkId::new(*name, width), &x, |b, x| {
                b.iter(|| sae.encode(x).expect("encode"));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
