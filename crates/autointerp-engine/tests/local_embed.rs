//! `LocalEmbedder` on the tiny random BERT of autointerp-model (`tests/fixtures/bert`, expected
//! vectors from transformers): the same vectors as the model crate's embedder, concurrent
//! callers, and a runtime that keeps running while the model works.

use std::path::PathBuf;
use std::time::Duration;

use autointerp_client::Error;
use autointerp_core::{EmbedError, Embedder};
use autointerp_engine::LocalEmbedder;
use autointerp_model::SentenceEmbedder;
use futures::future::join_all;
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

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// Any embedder (here `&LocalEmbedder`).
async fn embed_with(e: impl Embedder, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
    e.embed(texts).await
}

#[tokio::test]
async fn local_embedder_matches_transformers_under_concurrency() {
    let exp = expected();
    let embedder = LocalEmbedder::load(fixture().to_str().unwrap(), Device::Cpu).unwrap();
    assert_eq!(embedder.dim(), 32);
    assert_eq!(embedder.max_seq_length(), 16);
    let got = embedder.embed(&exp.sentences).await.unwrap();
    let d = max_diff(&got, &exp.mean);
    assert!(d < 1e-5, "max |diff| {d:e}");

    // Many tasks at once, through clones and `&E`: each gets its own texts' vectors back.
    let calls = (0..16).map(|i| {
        let e = embedder.clone();
        let texts: Vec<String> = exp
            .sentences
            .iter()
            .cycle()
            .skip(i)
            .take(1 + i % 5)
            .cloned()
            .collect();
        let want: Vec<Vec<f32>> = exp
            .mean
            .iter()
            .cycle()
            .skip(i)
            .take(1 + i % 5)
            .cloned()
            .collect();
        async move { (e.embed(&texts).await.unwrap(), want) }
    });
    for (got, want) in join_all(calls).await {
        assert!(max_diff(&got, &want) < 1e-5);
    }
    assert!(embed_with(&embedder, &[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn the_runtime_is_not_blocked_while_the_model_runs() {
    // A model slowed by many texts one at a time; a single-threaded runtime must still tick.
    let slow = SentenceEmbedder::load(fixture().to_str().unwrap(), Device::Cpu)
        .unwrap()
        .with_batch_size(1);
    let embedder = LocalEmbedder::new(slow).unwrap();
    let texts: Vec<String> = expected().sentences.into_iter().cycle().take(400).collect();
    let ticker = async {
        let mut ticks = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ticks += 1;
            if ticks == 5 {
                return ticks;
            }
        }
    };
    let work = embedder.embed(&texts);
    tokio::pin!(work);
    // The ticker finishes first although it was polled alongside the model's work.
    tokio::select! {
        biased;
        ticks = ticker => assert_eq!(ticks, 5),
        _ = &mut work => panic!("the embedding finished before 5 ms of ticks: too fast to tell"),
    }
    assert_eq!(work.await.unwrap().len(), 400);
}

#[test]
fn load_errors_name_the_problem() {
    let e = LocalEmbedder::load("/surely/not/a/folder", Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::Engine { .. }), "{e}");
    assert!(e.to_string().contains("/surely/not/a/folder"), "{e}");
}
