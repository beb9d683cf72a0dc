//! Latent neighbours (by co-occurrence or weight cosine), for non-activating examples that are
//! hard to tell apart from activating ones.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cache::HookCache;
use crate::constructor::WindowGrid;
use crate::{Error, Result};

/// A latent close to another one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's index.
    pub latent: u32,
    /// How similar it is: Jaccard index of co-occurrence, or cosine of weight rows.
    pub similarity: f32,
}

/// Each latent's nearest latents of the same hook point, most similar first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NeighbourLists {
    lists: HashMap<u32, Vec<Neighbour>>,
}

/// A sparse coder's weights as plain rows, one per latent: encoder rows (`W_enc` as
/// `[width, d_in]`) or decoder rows (`W_dec` as `[width, d_in]`).
#[derive(Debug, Clone, Copy)]
pub struct LatentWeights<'a> {
    /// `width * dim` values, row-major.
    pub rows: &'a [f32],
    /// Values per row.
    pub dim: usize,
}

impl NeighbourLists {
    /// The neighbours of `latent`, most similar first (empty when it has none).
    pub fn get(&self, latent: u32) -> &[Neighbour] {
        self.lists.get(&latent).map_or(&[], Vec::as_slice)
    }

    /// Sets the neighbours of `latent`.
    pub fn insert(&mut self, latent: u32, neighbours: Vec<Neighbour>) {
        self.lists.insert(latent, neighbours);
    }

    /// Number of latents with a list.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether no latent has a list.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// The `k` latents whose firing overlaps most with each of `latents` (all latents of the hook
    /// point when `None`), by the Jaccard index of the sets of tokens they fire on,
    /// `|A ∩ B| / |A ∪ B|`, as delphi's `co-occurrence` neighbours.
    ///
    /// Computed sparsely, never as a `width²` matrix: two passes over the split files index which
    /// latents fire on each token (4 bytes per nonzero of the hook point, 8 per token), the tokens
    /// of the latents asked about are listed (4 bytes per nonzero of theirs), then each latent's
    /// co-occurrence counts are gathered in a `width`-long scratch row per thread.
    pub fn co_occurrence(hook: &HookCache, latents: Option<&[u32]>, k: usize) -> Result<Self> {
        let width = hook.width() as usize;
        let n_tokens = usize::try_from(hook.n_tokens()).unwrap_or(usize::MAX);
        if hook.n_tokens() > u64::from(u32::MAX) {
            return Err(Error::Config(format!(
                "co-occurrence neighbours index tokens as u32; {} has {} tokens",
                hook.name(),
                hook.n_tokens()
            )));
        }
        let ctx = hook.ctx_len() as u64;
        // Pass 1: nonzeros per token and per latent.
        let mut per_token = vec![0u32; n_tokens + 1];
        let mut fired = vec![0u64; width];
        hook.for_each_nonzero(|row, pos, latent| {
            per_token[(row * ctx + u64::from(pos)) as usize + 1] += 1;
            fired[latent as usize] += 1;
        })?;
        let mut offsets: Vec<usize> = Vec::with_capacity(n_tokens + 1);
        let mut acc = 0usize;
        for &c in &per_token {
            acc += c as usize;
            offsets.push(acc);
        }
        drop(per_token);
        // Pass 2: the latents of each token (CSR).
        let mut by_token = vec![0u32; acc];
        let mut cursor = offsets.clone();
        hook.for_each_nonzero(|row, pos, latent| {
            let c = &mut cursor[(row * ctx + u64::from(pos)) as usize];
            by_token[*c] = latent;
            *c += 1;
        })?;
        drop(cursor);
        // Each latent's tokens (CSR the other way), for the latents asked about.
        let targets: Vec<u32> = match latents {
            Some(l) => l.to_vec(),
            None => (0..width as u32).collect(),
        };
        if let Some(&bad) = targets.iter().find(|&&l| l as usize >= width) {
            return Err(hook.not_cached(bad));
        }
        let mut wanted = vec![false; width];
        for &t in &targets {
            wanted[t as usize] = true;
        }
        let mut tokens_of: HashMap<u32, Vec<u32>> = HashMap::new();
        for t in 0..n_tokens {
            for &l in &by_token[offsets[t]..offsets[t + 1]] {
                if wanted[l as usize] {
                    tokens_of.entry(l).or_default().push(t as u32);
                }
            }
        }
        let lists = targets
            .par_iter()
            .map_init(
                || (vec![0u32; width], Vec::<u32>::new()),
                |(counts, touched), &latent| {
                    for &t in tokens_of.get(&latent).map_or(&[][..], Vec::as_slice) {
                        for &other in &by_token[offsets[t as usize]..offsets[t as usize + 1]] {
                            if counts[other as usize] == 0 {
                                touched.push(other);
                            }
                            counts[other as usize] += 1;
                        }
                    }
                    let a = fired[latent as usize] as f64;
                    let mut found: Vec<Neighbour> = touched
                        .iter()
                        .filter(|&&o| o != latent)
                        .map(|&o| {
                            let both = f64::from(counts[o as usize]);
                            let union = a + fired[o as usize] as f64 - both;
                            Neighbour {
                                latent: o,
                                similarity: (both / union) as f32,
                            }
                        })
                        .collect();
                    for &o in touched.iter() {
                        counts[o as usize] = 0;
                    }
                    touched.clear();
                    top_k(&mut found, k);
                    (latent, found)
                },
            )
            .collect();
        Ok(Self { lists })
    }

    /// The `k` latents whose weight rows point most nearly the same way as each of `latents`'
    /// (all rows when `None`), by cosine similarity, as delphi's `encoder_similarity` /
    /// `decoder_similarity` neighbours. Rows of zero norm have similarity 0 to everything.
    pub fn cosine(weights: &LatentWeights<'_>, latents: Option<&[u32]>, k: usize) -> Result<Self> {
        let dim = weights.dim;
        // (`is_multiple_of` is newer than the workspace's rust-version.)
        if dim == 0 || weights.rows.len() / dim * dim != weights.rows.len() {
            return Err(Error::WeightShape {
                len: weights.rows.len(),
                width: weights.rows.len() / dim.max(1),
                dim,
            });
        }
        let width = weights.rows.len() / dim;
        let row = |i: usize| &weights.rows[i * dim..(i + 1) * dim];
        let norms: Vec<f32> = (0..width)
            .into_par_iter()
            .map(|i| row(i).iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        let targets: Vec<u32> =
            latents.map_or_else(|| (0..width as u32).collect(), <[u32]>::to_vec);
        if let Some(&bad) = targets.iter().find(|&&l| l as usize >= width) {
            return Err(Error::WeightShape {
                len: weights.rows.len(),
                width: bad as usize + 1,
                dim,
            });
        }
        let lists = targets
            .par_iter()
            .map(|&latent| {
                let (a, na) = (row(latent as usize), norms[latent as usize]);
                let mut found: Vec<Neighbour> = (0..width)
                    .filter(|&o| o != latent as usize)
                    .map(|o| {
                        let denom = na * norms[o];
                        let dot: f32 = a.iter().zip(row(o)).map(|(x, y)| x * y).sum();
                        Neighbour {
                            latent: o as u32,
                            similarity: if denom > 0.0 { dot / denom } else { 0.0 },
                        }
                    })
                    .collect();
                top_k(&mut found, k);
                (latent, found)
            })
            .collect();
        Ok(Self { lists })
    }

    /// Reads delphi's neighbour file (`<hookpoint>-<type>.json`:
    /// `{"<latent>": [[similarity, neighbour], ...]}`, most similar first).
    pub fn from_delphi_json(path: &Path) -> Result<Self> {
        let bad = |problem: String| Error::Neighbours {
            path: path.to_path_buf(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: HashMap<String, Vec<(f64, f64)>> =
            serde_json::from_slice(&bytes).map_err(|e| {
                bad(format!(
                    "expected {{\"<latent>\": [[similarity, latent], ...]}}: {e}"
                ))
            })?;
        let mut lists = HashMap::with_capacity(raw.len());
        for (key, pairs) in raw {
            let latent: u32 = key
                .parse()
                .map_err(|_| bad(format!("key {key:?} is not a latent index")))?;
            let list = pairs
                .into_iter()
                .map(|(similarity, other)| {
                    if other < 0.0 || other.fract() != 0.0 || other > f64::from(u32::MAX) {
                        return Err(bad(format!(
                            "latent {latent}: neighbour {other} is not a latent index"
                        )));
                    }
                    Ok(Neighbour {
                        latent: other as u32,
                        similarity: similarity as f32,
                    })
                })
                .collect::<Result<_>>()?;
            lists.insert(latent, list);
        }
        Ok(Self { lists })
    }
}

/// Keeps the `k` most similar, most similar first (ties: lower index first).
fn top_k(found: &mut Vec<Neighbour>, k: usize) {
    let cmp = |a: &Neighbour, b: &Neighbour| {
        b.similarity
            .total_cmp(&a.similarity)
            .then(a.latent.cmp(&b.latent))
    };
    if found.len() > k && k > 0 {
        found.select_nth_unstable_by(k - 1, cmp);
    }
    found.truncate(k);
    found.sort_unstable_by(cmp);
}

/// For each of some latents, its strongest aligned windows, strongest first, with its
/// activations in them: where to look for a neighbour's firing, and what to highlight there.
#[derive(Debug, Default)]
pub(crate) struct WindowIndex {
    windows: HashMap<u32, LatentWindows>,
}

/// One latent's kept windows. The hits of `windows[i]` are `hits[ends[i - 1]..ends[i]]`
/// (`ends[-1]` = 0): one flat list rather than a vector per window, since a hook point's index
/// holds hundreds of windows for each of thousands of latents.
#[derive(Debug, Default)]
struct LatentWindows {
    /// (window id, peak activation), strongest first.
    windows: Vec<(u32, f32)>,
    ends: Vec<usize>,
    /// (position in the window, activation).
    hits: Vec<(u32, f32)>,
}

/// One of a latent's indexed windows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexedWindow<'a> {
    /// Aligned window id.
    pub(crate) id: u32,
    /// The latent's nonzeros in it: (position in the window, activation).
    pub(crate) hits: &'a [(u32, f32)],
}

impl IndexedWindow<'_> {
    /// The latent's activation on each of the window's `len` tokens.
    pub(crate) fn activations(&self, len: usize) -> Vec<f32> {
        let mut acts = vec![0.0; len];
        for &(pos, a) in self.hits {
            if let Some(slot) = acts.get_mut(pos as usize) {
                *slot = a;
            }
        }
        acts
    }
}

impl WindowIndex {
    /// Indexes `latents` of `hook`, keeping `keep` windows each; reads only the splits holding them.
    pub(crate) fn build(
        hook: &HookCache,
        grid: &WindowGrid,
        latents: &[u32],
        keep: usize,
    ) -> Result<Self> {
        let mut by_split: Vec<Vec<u32>> = vec![Vec::new(); hook.splits().len()];
        for &l in latents {
            if let Some(s) = hook.split_of(l) {
                by_split[s].push(l);
            }
        }
        let len = grid.len as u32;
        let mut windows = HashMap::new();
        for (split, mut ls) in by_split.into_iter().enumerate() {
            if ls.is_empty() {
                continue;
            }
            ls.sort_unstable();
            ls.dedup();
            let grouped = hook.read_grouped(split, &|l| ls.binary_search(&l).is_ok())?;
            let part: Vec<(u32, LatentWindows)> = ls
                .par_iter()
                .map(|&l| {
                    let hits = grouped.hits(l);
                    let mut w: Vec<(u32, f32)> = Vec::new();
                    for h in hits {
                        let Some(id) = grid.window_of(h.row, h.pos) else {
                            continue;
                        };
                        match w.last_mut() {
                            Some(last) if last.0 == id => last.1 = last.1.max(h.act),
                            _ => w.push((id, h.act)),
                        }
                    }
                    let cmp =
                        |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
                    if w.len() > keep && keep > 0 {
                        w.select_nth_unstable_by(keep - 1, cmp);
                    }
                    w.truncate(keep);
                    w.sort_unstable_by(cmp);
                    // Hits ascend by (row, position): each kept window's hits are one run.
                    let mut out = LatentWindows {
                        windows: w,
                        ends: Vec::new(),
                        hits: Vec::new(),
                    };
                    for &(id, _) in &out.windows {
                        let (row, start) = grid.bounds(id);
                        let first = hits.partition_point(|h| (h.row, h.pos) < (row, start));
                        out.hits.extend(
                            hits[first..]
                                .iter()
                                .take_while(|h| h.row == row && h.pos < start + len)
                                .map(|h| (h.pos - start, h.act)),
                        );
                        out.ends.push(out.hits.len());
                    }
                    (l, out)
                })
                .collect();
            windows.extend(part);
        }
        Ok(Self { windows })
    }

    /// `latent`'s indexed windows, strongest first.
    pub(crate) fn windows(&self, latent: u32) -> impl Iterator<Item = IndexedWindow<'_>> {
        self.windows.get(&latent).into_iter().flat_map(|lw| {
            lw.windows.iter().enumerate().map(move |(i, &(id, _))| {
                let start = if i == 0 { 0 } else { lw.ends[i - 1] };
                IndexedWindow {
                    id,
                    hits: &lw.hits[start..lw.ends[i]],
                }
            })
        })
    }

    /// `latent`'s largest activation in any aligned window (0 when it has none): the scale of
    /// its examples' normalised activations.
    pub(crate) fn peak(&self, latent: u32) -> f32 {
        self.windows
            .get(&latent)
            .and_then(|lw| lw.windows.first())
            .map_or(0.0, |w| w.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_neighbours_rank_by_angle() {
        // Rows: x, 2x (same direction), y, zero.
        let rows = [1.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let lists = NeighbourLists::cosine(
            &LatentWeights {
                rows: &rows,
                dim: 2,
            },
            None,
            2,
        )
        .unwrap();
        assert_eq!(
            lists.get(0),
            &[
                Neighbour {
                    latent: 1,
                    similarity: 1.0
                },
                Neighbour {
                    latent: 2,
                    similarity: 0.0
                }
            ]
        );
        assert_eq!(lists.get(3)[0].similarity, 0.0);
        let err = NeighbourLists::cosine(
            &LatentWeights {
                rows: &rows[..7],
                dim: 2,
            },
            None,
            2,
        )
        .unwrap_err();
        assert!(err.to_string().contains("7 values"), "{err}");
    }

    #[test]
    fn delphi_neighbour_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layers.0-co-occurrence.json");
        std::fs::write(&path, r#"{"3": [[0.5, 7], [0.25, 1]], "7": []}"#).unwrap();
        let lists = NeighbourLists::from_delphi_json(&path).unwrap();
        assert_eq!(
            lists.get(3),
            &[
                Neighbour {
                    latent: 7,
                    similarity: 0.5
                },
                Neighbour {
                    latent: 1,
                    similarity: 0.25
                }
            ]
        );
        assert!(lists.get(7).is_empty() && lists.get(9).is_empty());
        std::fs::write(&path, r#"{"3": [[0.5, -1]]}"#).unwrap();
        assert!(NeighbourLists::from_delphi_json(&path).is_err());
    }
}
