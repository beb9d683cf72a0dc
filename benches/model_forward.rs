//! Forward-pass throughput (tokens/s) of autointerp-model on the CPU: batch 8 × 256 tokens, to
//! the middle layer (capturing its residual stream, no logits) and to the end (all logits).
//!
//! Models: SmolLM2-135M-Instruct from its GGUF (dequantised to f32; fetched by
//! `scripts/fetch-assets.sh smollm2`) and the tiny `llama` test fixture.
//!
//! Run with: `cargo bench -p autointerp-model --bench model_forward`
//! (`AUTOINTERP_DEVICE=cuda` runs it on a GPU.)
#![allow(missing_docs)] // `criterion_group!` makes an undocumented pub fn

use std::path::{Path, PathBuf};
use std::time::Duration;

use autointerp_core::HookPoint;
use autointerp_model::{parse_device, DType, Hooks, Input, Logits, Model};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 8;
const SEQ: i64 = 256;

fn smollm2_path() -> PathBuf {
    autointerp_core::assets::fetch(autointerp_core::assets::Asset::Smollm2)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for queued GPU work, so that the clock measures it.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn bench_model(c: &mut Criterion, name: &str, model: &Model) {
    let device = model.device();
    tch::manual_seed(0);
    let ids = Tensor::randint(
        model.vocab_size() as i64,
        [BATCH, SEQ],
        (Kind::Int64, device),
    );
    let mid = model.n_layers() / 2;
    let mut group = c.benchmark_group(format!("forward/{name}"));
    group
        .throughput(Throughput::Elements((BATCH * SEQ) as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let to_mid = Hooks::new()
        .capture(HookPoint::Residual(mid))
        .with_logits(Logits::None);
    group.bench_function(
        BenchmarkId::new(format!("to_layer_{mid}"), format!("{BATCH}x{SEQ}")),
        |b| {
            b.iter(|| {
                let out = model.forward(&Input::new(&ids), &to_mid).unwrap();
                sync(device);
                out
            })
        },
    );
    let full = Hooks::new();
    group.bench_function(BenchmarkId::new("logits", format!("{BATCH}x{SEQ}")), |b| {
        b.iter(|| {
            let out = model.forward(&Input::new(&ids), &full).unwrap();
            sync(device);
            out
        })
    });
    group.finish();
}

fn forward(c: &mut Criterion) {
    let device =
        parse_device(&std::env::var("AUTOINTERP_DEVICE").unwrap_or_else(|_| "cpu".into())).unwrap();
    let tiny_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    let tiny = Model::from_hf_dir(tiny_dir, device, DType::F32).unwrap();
    bench_model(c, "tiny_llama_fixture", &tiny);
    let smollm2 = Model::from_gguf(smollm2_path(), device, DType::F32).unwrap();
    bench_model(c, "smollm2_135m_f32", &smollm2);
}

criterion_group!(benches, forward);
criterion_main!(benches);
