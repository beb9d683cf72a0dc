//! Embeds a few sentences with all-MiniLM-L6-v2 in this process, prints their cosine
//! similarities, then measures throughput (sentences/s) at a batch size.
//!
//! Run with: cargo run --release -p autointerp-model --example sentence_embed -- [MODEL_DIR] [BATCH]
//!
//! `MODEL_DIR` defaults to the MiniLM folder of `scripts/fetch-assets.sh minilm` (fetched on first
//! use); `BATCH` defaults to 32. CPU only.

use std::time::Instant;

use anyhow::Context;
use autointerp_model::SentenceEmbedder;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(dir) => dir,
        None => autointerp_core::assets::fetch(autointerp_core::assets::Asset::Minilm)?
            .to_string_lossy()
            .into_owned(),
    };
    let batch: usize = match args.next() {
        Some(b) => b.parse().context("BATCH must be a positive integer")?,
        None => 32,
    };
    let embedder = SentenceEmbedder::load(&dir, tch::Device::Cpu)
        .with_context(|| format!("loading {dir}"))?
        .with_batch_size(batch);
    println!(
        "{dir}: {} dims, max {} tokens, pooling {:?}, normalised: {}",
        embedder.dim(),
        embedder.max_seq_length(),
        embedder.pooling(),
        embedder.normalizes()
    );

    let sentences: Vec<String> = [
        "The cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Interest rates rose again this quarter.",
        "The central bank raised borrowing costs.",
        "He sat on the river bank and watched the water.",
    ]
    .map(String::from)
    .to_vec();
    let vectors = embedder.embed(&sentences)?;
    println!("\ncosine similarities:");
    for (i, a) in vectors.iter().enumerate() {
        let row: Vec<String> = vectors
            .iter()
            .map(|b| format!("{:6.3}", cosine(a, b)))
            .collect();
        println!("  [{i}] {}  {}", row.join(" "), sentences[i]);
    }

    // Throughput: 512 sentences of 8 to 40 words (about 10 to 50 tokens), deterministic.
    let words = [
        "the", "model", "latent", "fires", "on", "tokens", "about", "rivers", "and", "money",
        "when", "a", "sentence", "mentions", "banks", "or", "water", "in", "context",
    ];
    let texts: Vec<String> = (0..512usize)
        .map(|i| {
            let n = 8 + (i * 7) % 33;
            (0..n)
                .map(|j| words[(i * 31 + j * 17) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    embedder.embed(&texts[..batch.min(texts.len())])?; // warm-up
    let start = Instant::now();
    embedder.embed(&texts)?;
    let secs = start.elapsed().as_secs_f64();
    let tokens: usize = texts
        .iter()
        .map(|t| embedder.token_ids(t).map(|ids| ids.len()))
        .sum::<autointerp_model::Result<usize>>()?;
    println!(
        "\n{} sentences ({tokens} tokens) at batch {batch}: {secs:.2} s, {:.0} sentences/s",
        texts.len(),
        texts.len() as f64 / secs
    );
    Ok(())
}
