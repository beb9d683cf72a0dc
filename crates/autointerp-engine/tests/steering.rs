//! Steered requests in the batching engine answer as transformers does with the same edit in
//! a forward hook (`autointerp-model/tests/fixtures/make_steering_fixtures.py`, tiny `llama`):
//! greedy tokens identical, prompt logprobs within 1e-4, whatever else shares the engine:
//! unsteered requests and requests of another steering in flight at the same time, and a prefix
//! cache filled by unsteered prompts (whose keys and values a steered prompt must not reuse).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autointerp_core::HookPoint;
use autointerp_engine::{Edit, EngineConfig, GenerateRequest, LocalEngine, Steering};
use autointerp_model::DType;
use autointerp_sae::{Activation, SparseCoder, Weights};
use futures::future::join_all;
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../autointerp-model/tests/fixtures/llama")
}

fn read(file: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture().join(file))
        .unwrap()
        .into_iter()
        .collect()
}

fn ids(t: &Tensor) -> Vec<u32> {
    Vec::<i64>::try_from(t.flatten(0, -1))
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

/// The fixture's `add` (at layers.1) and `clamp` (at layers.0) edits.
fn steerings(s: &HashMap<String, Tensor>) -> (Steering, Steering) {
    let direction = Vec::<f32>::try_from(&s["direction"]).unwrap();
    let add = Edit::add(direction, s["scale"].double_value(&[])).unwrap();
    let coder = Edit::share(
        SparseCoder::new(
            Weights {
                w_enc: s["sae.W_enc"].shallow_clone(),
                b_enc: s["sae.b_enc"].shallow_clone(),
                w_dec: Some(s["sae.W_dec"].shallow_clone()),
                b_dec: s["sae.b_dec"].shallow_clone(),
                w_skip: None,
            },
            Activation::TopK {
                k: s["sae.k"].int64_value(&[]) as usize,
            },
        )
        .unwrap(),
    );
    let clamp = Edit::clamp(
        Arc::clone(&coder),
        s["clamp.latent"].int64_value(&[]) as usize,
        s["clamp.value"].double_value(&[]),
    )
    .unwrap();
    (
        Steering::one(HookPoint::Residual(1), add),
        Steering::one(HookPoint::Residual(0), clamp),
    )
}

#[tokio::test]
async fn steered_requests_match_transformers_beside_unsteered_ones() {
    let exp = read("expected.safetensors");
    let s = read("steering.safetensors");
    let (add, clamp) = steerings(&s);
    let engine = LocalEngine::load(
        fixture().to_str().unwrap(),
        Device::Cpu,
        DType::F32,
        EngineConfig::default().with_batch_wait(Duration::from_millis(50)),
    )
    .unwrap();
    let prompt = ids(&exp["generate.input_ids"]);
    let tail = |t: &Tensor| ids(t)[prompt.len()..].to_vec();
    let want_plain = tail(&exp["generate.output_ids"]);
    let want_add = tail(&s["add.generate"]);
    let want_clamp = tail(&s["clamp.generate"]);
    assert_ne!(
        want_plain, want_add,
        "the fixture's edit must change the greedy tokens"
    );

    let req = |steering: Option<&Steering>| {
        let r = GenerateRequest::new(prompt.clone(), 8).with_stop_token_ids([]);
        match steering {
            Some(st) => r.with_steering(st.clone()),
            None => r,
        }
    };
    // First unsteered alone: the prefix cache now holds the prompt's unsteered keys.
    let plain = engine.generate(req(None)).await.unwrap();
    assert_eq!(plain.tokens, want_plain);
    // Then all three kinds interleaved, several of each, in flight together.
    let reqs: Vec<_> = (0..9)
        .map(|i| match i % 3 {
            0 => (req(Some(&add)), &want_add),
            1 => (req(None), &want_plain),
            _ => (req(Some(&clamp)), &want_clamp),
        })
        .collect();
    let got = join_all(reqs.iter().map(|(r, _)| engine.generate(r.clone()))).await;
    for (i, (g, (_, want))) in got.into_iter().zip(&reqs).enumerate() {
        assert_eq!(&g.unwrap().tokens, *want, "request {i}");
    }
    let stats = engine.stats();
    assert!(stats.largest_batch > 1, "{stats:?}");

    // Steered prompt logprobs: the log-softmax of transformers' steered logits (the `left`
    // case's row 0 has no padding).
    let row0 = ids(&exp["left.input_ids"].narrow(0, 0, 1));
    let g = engine
        .generate(
            GenerateRequest::new(row0.clone(), 1)
                .with_prompt_logprobs(0)
                .with_steering(add.clone()),
        )
        .await
        .unwrap();
    let lsm = s["add.logits"]
        .narrow(0, 0, 1)
        .log_softmax(-1, Kind::Float)
        .squeeze_dim(0);
    let positions = g.prompt_logprobs.unwrap();
    for (j, p) in positions.iter().enumerate().skip(1) {
        let p = p.as_ref().unwrap();
        let want = lsm.double_value(&[j as i64 - 1, i64::from(row0[j])]);
        assert!(
            (f64::from(p.logprob) - want).abs() < 1e-4,
            "position {j}: {} vs {want}",
            p.logprob
        );
    }
}

#[tokio::test]
async fn a_steering_of_the_wrong_width_fails_its_request_only() {
    let engine = LocalEngine::load(
        fixture().to_str().unwrap(),
        Device::Cpu,
        DType::F32,
        EngineConfig::default(),
    )
    .unwrap();
    let bad = Steering::one(
        HookPoint::Residual(0),
        Edit::add(vec![1.0f32; 5], 1.0).unwrap(),
    );
    let err = engine
        .generate(GenerateRequest::new(vec![3, 4, 5], 2).with_steering(bad))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layers.0") && err.contains("given width 32"),
        "{err}"
    );
    // The engine goes on serving.
    let ok = engine
        .generate(GenerateRequest::new(vec![3, 4, 5], 2).with_stop_token_ids([]))
        .await
        .unwrap();
    assert_eq!(ok.tokens.len(), 2);
}
