//! Hard negatives by sentence embedding: windows where a latent does not fire whose text is
//! closest to its activating examples.

use autointerp_core::split::Tokens;
use autointerp_core::Embedder;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use crate::constructor::WindowGrid;
use crate::dataset::Decode;
use crate::{Error, Result};

/// Texts embedded per call.
const BATCH: usize = 256;

/// Embeds `texts`, checking the answer's shape, and scales each vector to unit length.
pub(crate) fn embed_normalized(embedder: &dyn Embedder, texts: &[String]) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH) {
        // Records are built on plain threads: the embedder's future is driven here. Embedders
        // that need a tokio reactor (HTTP ones) bring their own when none is running.
        let vectors = futures::executor::block_on(embedder.embed(chunk))
            .map_err(|e| Error::Embedder(e.to_string()))?;
        if vectors.len() != chunk.len() {
            return Err(Error::Embedder(format!(
                "{} vectors for {} texts",
                vectors.len(),
                chunk.len()
            )));
        }
        out.extend(vectors);
    }
    if let Some(dim) = out.first().map(Vec::len) {
        if let Some(v) = out.iter().find(|v| v.len() != dim) {
            return Err(Error::Embedder(format!(
                "vectors of {} and {dim} values",
                v.len()
            )));
        }
    }
    for v in &mut out {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Ok(out)
}

/// A seeded sample of a hook point's aligned windows, embedded once and shared by every latent.
#[derive(Debug)]
pub(crate) struct EmbeddingPool {
    /// Window ids, ascending.
    windows: Vec<u32>,
    /// Unit vectors, one per window.
    vectors: Vec<Vec<f32>>,
}

impl EmbeddingPool {
    pub(crate) fn build(
        grid: &WindowGrid,
        tokens: &Tokens,
        decode: &dyn Decode,
        embedder: &dyn Embedder,
        size: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let n = grid.n_windows() as usize;
        let mut windows: Vec<u32> = index::sample(rng, n, size.min(n))
            .into_iter()
            .map(|i| i as u32)
            .collect();
        windows.sort_unstable();
        let texts: Vec<String> = windows
            .iter()
            .map(|&w| window_text(grid, tokens, decode, w))
            .collect();
        let vectors = embed_normalized(embedder, &texts)?;
        Ok(Self { windows, vectors })
    }

    /// Up to `n` pool windows not in `active` (sorted), most similar first to any of `queries`
    /// (unit vectors): `(window, cosine similarity)`.
    pub(crate) fn nearest(
        &self,
        queries: &[Vec<f32>],
        active: &[u32],
        n: usize,
    ) -> Vec<(u32, f32)> {
        let mut scored: Vec<(u32, f32)> = self
            .windows
            .iter()
            .zip(&self.vectors)
            .filter(|(w, _)| active.binary_search(w).is_err())
            .map(|(&w, v)| {
                let best = queries
                    .iter()
                    .map(|q| q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max);
                (w, best)
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(n);
        scored
    }
}

/// The decoded text of aligned window `id`.
pub(crate) fn window_text(
    grid: &WindowGrid,
    tokens: &Tokens,
    decode: &dyn Decode,
    id: u32,
) -> String {
    let (row, start) = grid.bounds(id);
    let ids = &tokens.row(row as usize)[start as usize..start as usize + grid.len];
    decode.decode_all(ids).concat()
}
