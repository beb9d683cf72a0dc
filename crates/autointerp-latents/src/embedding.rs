//! Hard negatives by sentence embedding: windows where a latent does not fire whose text is
//! closest to its activating examples.

use autointerp_core::split::Tokens;
use autointerp_core::Embedder;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

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

/// The aligned windows of a hook point searched for hard negatives, embedded once and shared by
/// every latent: all of them, or a seeded sample.
#[derive(Debug)]
pub(crate) struct EmbeddingPool {
    /// Window ids, ascending.
    windows: Vec<u32>,
    /// Unit vectors, `dim` values per window, in the order of `windows`.
    vectors: Vec<f32>,
    dim: usize,
}

/// Pool windows scored per parallel task in [`EmbeddingPool::nearest`].
const SEARCH_BLOCK: usize = 4096;

impl EmbeddingPool {
    /// Embeds every aligned window of `grid` (`size: None`), or `size` of them drawn without
    /// replacement from `rng`.
    pub(crate) fn build(
        grid: &WindowGrid,
        tokens: &Tokens,
        decode: &dyn Decode,
        embedder: &dyn Embedder,
        size: Option<usize>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let n = grid.n_windows() as usize;
        let windows: Vec<u32> = match size {
            None => (0..n as u32).collect(),
            Some(size) => {
                let mut w: Vec<u32> = index::sample(rng, n, size.min(n))
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                w.sort_unstable();
                w
            }
        };
        tracing::info!(
            windows = windows.len(),
            "embedding hard-negative candidates"
        );
        let mut vectors = Vec::new();
        let mut dim = None;
        // Decoded a batch at a time, so that the texts of every window are never held at once.
        for chunk in windows.chunks(BATCH) {
            let texts: Vec<String> = chunk
                .iter()
                .map(|&w| window_text(grid, tokens, decode, w))
                .collect();
            for v in embed_normalized(embedder, &texts)? {
                match dim {
                    None => dim = Some(v.len()),
                    Some(d) if d != v.len() => {
                        return Err(Error::Embedder(format!(
                            "vectors of {} and {d} values",
                            v.len()
                        )))
                    }
                    Some(_) => {}
                }
                vectors.extend(v);
            }
        }
        Ok(Self {
            windows,
            vectors,
            dim: dim.unwrap_or(0),
        })
    }

    /// Up to `n` pool windows not in `active` (sorted), most similar first to any of `queries`
    /// (unit vectors): `(window, cosine similarity)`. Ties go to the lower window id.
    ///
    /// An exact search, as delphi's flat FAISS index: every pool window is scored against every
    /// query, in parallel blocks whose own best `n` are merged.
    pub(crate) fn nearest(
        &self,
        queries: &[Vec<f32>],
        active: &[u32],
        n: usize,
    ) -> Vec<(u32, f32)> {
        let dim = self.dim;
        if n == 0 || dim == 0 || queries.iter().any(|q| q.len() != dim) {
            return Vec::new();
        }
        let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let keep_best = |v: &mut Vec<(u32, f32)>| {
            if v.len() > n {
                v.select_nth_unstable_by(n - 1, cmp);
                v.truncate(n);
            }
        };
        let mut best: Vec<(u32, f32)> = self
            .windows
            .par_chunks(SEARCH_BLOCK)
            .zip(self.vectors.par_chunks(SEARCH_BLOCK * dim))
            .map(|(windows, vectors)| {
                let mut scored: Vec<(u32, f32)> = windows
                    .iter()
                    .zip(vectors.chunks_exact(dim))
                    .filter(|(w, _)| active.binary_search(w).is_err())
                    .map(|(&w, v)| {
                        let best = queries
                            .iter()
                            .map(|q| dot(q, v))
                            .fold(f32::NEG_INFINITY, f32::max);
                        (w, best)
                    })
                    .collect();
                keep_best(&mut scored);
                scored
            })
            .reduce(Vec::new, |mut a, b| {
                a.extend(b);
                keep_best(&mut a);
                a
            });
        best.sort_unstable_by(cmp);
        best
    }
}

/// Dot product, summed in eight lanes so that the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
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
