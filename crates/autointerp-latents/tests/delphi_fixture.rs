//! Records built from a cache written by delphi's own code match the ones delphi builds
//! (`tests/fixtures/make_delphi_cache.py` wrote both).

use std::collections::BTreeMap;
use std::path::PathBuf;

use autointerp_core::HookPoint;
use autointerp_latents::{LatentCache, LatentDataset, LatentsConfig, TrainType};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    per_token_frequency: f64,
    per_context_frequency: f64,
    examples: Vec<ExpectedExample>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct ExpectedExample {
    tokens: Vec<u32>,
    activations: Vec<f32>,
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/delphi_cache")
}

/// Strongest first; ties (equal f16 peaks) in a fixed order, since torch's sort does not fix one.
fn ranked(mut ex: Vec<ExpectedExample>) -> Vec<ExpectedExample> {
    let peak = |e: &ExpectedExample| e.activations.iter().copied().fold(0.0f32, f32::max);
    ex.sort_by(|a, b| {
        peak(b)
            .total_cmp(&peak(a))
            .then_with(|| a.tokens.cmp(&b.tokens))
    });
    ex
}

#[test]
fn delphi_cache_gives_delphis_examples_and_frequencies() -> anyhow::Result<()> {
    let expected: BTreeMap<String, Expected> =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json"))?)?;
    // delphi's LatentDataset takes the `latents` folder; the cache root works too.
    for path in [fixture(), fixture().join("latents")] {
        let cache = LatentCache::open(&path)?;
        let hooks: Vec<HookPoint> = cache.hooks().iter().map(|h| h.hook()).collect();
        assert_eq!(hooks, vec![HookPoint::Mlp(1), HookPoint::Residual(0)]);
        let h0 = cache.hook(HookPoint::Residual(0))?;
        assert_eq!(
            (h0.name(), h0.width(), h0.rows(), h0.ctx_len()),
            ("transformer.h.0", 16, 4, 64)
        );
        assert_eq!(h0.config().unwrap()["model_name"], "tiny-random-gpt2");

        let mut cfg = LatentsConfig::default();
        cfg.constructor.example_ctx_len = 16;
        cfg.constructor.min_examples = 1;
        cfg.sampler.train_type = TrainType::Top;
        cfg.sampler.n_examples_train = 1000; // every example, in rank order
        cfg.sampler.n_examples_test = 0;
        let dataset = LatentDataset::builder(cache, cfg, |t: u32| format!("<{t}>")).build()?;
        let mut seen = 0;
        for built in dataset.records() {
            let built = built?;
            // delphi names records after the folder, i.e. the module path.
            let hook = if built.record.id.hookpoint == HookPoint::Residual(0) {
                "transformer.h.0"
            } else {
                "transformer.h.1.mlp"
            };
            let name = format!("{hook}_latent{}", built.record.id.index);
            let want = &expected[&name];
            assert!(
                (built.per_token_frequency() - want.per_token_frequency).abs() < 1e-12,
                "{name}"
            );
            assert!(
                (built.per_context_frequency() - want.per_context_frequency).abs() < 1e-12,
                "{name}"
            );
            let got: Vec<ExpectedExample> = built
                .record
                .train
                .iter()
                .map(|e| ExpectedExample {
                    tokens: e.tokens.clone(),
                    activations: e.activations.clone(),
                })
                .collect();
            let want_ex: Vec<ExpectedExample> = want
                .examples
                .iter()
                .map(|e| ExpectedExample {
                    tokens: e.tokens.clone(),
                    activations: e.activations.clone(),
                })
                .collect();
            assert_eq!(ranked(got), ranked(want_ex), "{name}");
            // Non-activating windows are windows where the latent never fires.
            for e in &built.record.non_activating {
                assert!(
                    !want.examples.iter().any(|w| w.tokens == e.tokens),
                    "{name}"
                );
            }
            seen += 1;
        }
        assert_eq!(seen, expected.len());
    }
    Ok(())
}
