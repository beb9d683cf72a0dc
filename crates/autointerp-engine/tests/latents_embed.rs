//! `LocalEmbedder` as the latents crate uses it, on the tiny random BERT of autointerp-model
//! (`tests/fixtures/bert`, expected vectors from transformers): from plain threads without an
//! async runtime, and for embedding-based non-activating examples.

use std::path::PathBuf;
use std::sync::Arc;

use autointerp_core::split::{Location, Split, Tokens};
use autointerp_core::Embedder;
use autointerp_core::{HookPoint, LatentId};
use autointerp_engine::LocalEmbedder;
use autointerp_latents::{LatentCache, LatentDataset, LatentsConfig, NonActivatingSource};
use serde::Deserialize;
use tch::Device;

#[derive(Deserialize)]
struct Expected {
    sentences: Vec<String>,
    mean: Vec<Vec<f32>>,
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../autointerp-model/tests/fixtures/bert")
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load() -> LocalEmbedder {
    LocalEmbedder::load(fixture().to_str().unwrap(), Device::Cpu).unwrap()
}

#[test]
fn vectors_match_transformers_from_several_threads() {
    let exp = expected();
    let embedder: Arc<dyn Embedder> = Arc::new(load());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (embedder, exp) = (Arc::clone(&embedder), &exp);
            s.spawn(move || {
                for _ in 0..3 {
                    let got = futures::executor::block_on(embedder.embed(&exp.sentences)).unwrap();
                    assert_eq!(got.len(), exp.mean.len());
                    for (g, w) in got.iter().flatten().zip(exp.mean.iter().flatten()) {
                        assert!((g - w).abs() < 1e-5, "thread {t}: {g} vs {w}");
                    }
                }
            });
        }
    });
}

/// Words of the fixture's vocabulary, by token id.
const WORDS: [&str; 8] = ["the", "cat", "sat", "on", "mat", "river", "bank", "money"];

#[test]
fn hard_negatives_by_embedding_are_the_nearest_texts() {
    const HOOK: HookPoint = HookPoint::Residual(3);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("latents").join(HOOK.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    // One row of 16 windows of 4 tokens. Window 0 (where latent 0 fires) and window 9 read
    // "the cat sat on"; window 4 shares three of those words; the rest are river/bank/money.
    let mut ids: Vec<u32> = (0..64).map(|i| 5 + i % 3).collect();
    ids[..4].copy_from_slice(&[0, 1, 2, 3]);
    ids[36..40].copy_from_slice(&[0, 1, 2, 3]);
    ids[16..20].copy_from_slice(&[0, 1, 2, 4]);
    Split {
        start: 0,
        end: 1,
        locations: vec![Location {
            row: 0,
            position: 1,
            latent: 0,
        }],
        activations: vec![2.0],
        tokens: Some(Tokens {
            rows: 1,
            ctx_len: 64,
            ids,
        }),
    }
    .write_to_dir(&dir)
    .unwrap();
    let cache = LatentCache::open(root.path()).unwrap();
    let mut cfg = LatentsConfig::default();
    cfg.constructor.example_ctx_len = 4;
    cfg.constructor.min_examples = 1;
    cfg.constructor.n_non_activating = 2;
    cfg.constructor.non_activating_source = NonActivatingSource::Embedding;
    let decode = |t: u32| format!("{} ", WORDS[t as usize]);
    let ds = LatentDataset::builder(cache, cfg, decode)
        .embedder(load())
        .build()
        .unwrap();
    let rec = ds.record(LatentId::new(HOOK, 0)).unwrap().unwrap().record;
    let near: Vec<&[u32]> = rec
        .non_activating
        .iter()
        .map(|e| e.tokens.as_slice())
        .collect();
    assert_eq!(near, [&[0, 1, 2, 3][..], &[0, 1, 2, 4][..]]);
    // The same text embeds to the same vector: distance 0.
    assert!(rec.non_activating[0].distance.unwrap().abs() < 1e-5);
    assert!(rec.non_activating[1].distance.unwrap() > 1e-4);
}
