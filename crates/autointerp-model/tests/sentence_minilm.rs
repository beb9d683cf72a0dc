//! The real all-MiniLM-L6-v2 (fetched by `scripts/fetch-assets.sh minilm`) against
//! sentence-transformers: `tests/fixtures/bert_minilm.json` holds the first 8 dimensions of three
//! sentences' embeddings and their pairwise cosines, computed by
//! `tests/fixtures/make_bert_fixture.py`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use autointerp_model::{Pooling, SentenceEmbedder};
use serde::Deserialize;
use tch::Device;

const TOL: f32 = 1e-4;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<String>,
    dim: usize,
    first_dims: Vec<Vec<f32>>,
    cosines: BTreeMap<String, f32>,
}

fn minilm() -> SentenceEmbedder {
    let dir = autointerp_core::assets::fetch(autointerp_core::assets::Asset::Minilm)
        .unwrap_or_else(|e| panic!("{e}"));
    SentenceEmbedder::load(dir.to_str().unwrap(), Device::Cpu).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

#[test]
fn minilm_matches_sentence_transformers() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert_minilm.json");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let embedder = minilm();
    assert_eq!(embedder.dim(), reference.dim);
    assert_eq!(embedder.max_seq_length(), 256);
    assert_eq!(embedder.pooling(), Pooling::MEAN);
    assert!(embedder.normalizes());

    let got = embedder.embed(&reference.sentences).unwrap();
    for (i, (v, want)) in got.iter().zip(&reference.first_dims).enumerate() {
        for (j, (g, w)) in v.iter().zip(want).enumerate() {
            assert!((g - w).abs() < TOL, "sentence {i} dim {j}: {g} vs {w}");
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "sentence {i}: norm {norm}");
    }
    for (pair, want) in &reference.cosines {
        let (i, j) = pair.split_once('-').unwrap();
        let (i, j): (usize, usize) = (i.parse().unwrap(), j.parse().unwrap());
        let c = cosine(&got[i], &got[j]);
        assert!((c - want).abs() < TOL, "cosine {pair}: {c} vs {want}");
    }
}

#[test]
fn minilm_puts_close_meanings_close() {
    let embedder = minilm();
    let texts: Vec<String> = [
        "The cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Interest rates rose again this quarter.",
        "The central bank raised borrowing costs.",
    ]
    .map(String::from)
    .to_vec();
    let v = embedder.embed(&texts).unwrap();
    let (cats, money) = (cosine(&v[0], &v[1]), cosine(&v[2], &v[3]));
    for (a, b) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
        let across = cosine(&v[a], &v[b]);
        assert!(
            cats > across + 0.2 && money > across + 0.2,
            "cats {cats}, money {money}, across ({a}, {b}) {across}"
        );
    }
    // Longer than max_seq_length (256 tokens): truncated, not an error.
    let long = "word ".repeat(600);
    assert_eq!(embedder.token_ids(&long).unwrap().len(), 256);
    assert_eq!(embedder.embed(&[long]).unwrap()[0].len(), 384);
}
