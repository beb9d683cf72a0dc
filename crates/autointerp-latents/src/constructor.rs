//! Cutting a latent's activating windows out of the cache.

use std::collections::BTreeSet;

use autointerp_core::split::Tokens;
use autointerp_core::Example;

use crate::cache::Hit;
use crate::dataset::Decode;

/// The aligned `len`-token windows of a `rows × ctx_len` grid: `ctx_len / len` per row (a ragged
/// tail is no window), numbered row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowGrid {
    pub(crate) len: usize,
    pub(crate) ctx_len: usize,
    pub(crate) per_row: usize,
    pub(crate) rows: usize,
}

impl WindowGrid {
    pub(crate) fn new(rows: usize, ctx_len: usize, len: usize) -> Self {
        Self {
            len,
            ctx_len,
            per_row: ctx_len / len,
            rows,
        }
    }

    pub(crate) fn n_windows(&self) -> u64 {
        (self.rows * self.per_row) as u64
    }

    /// The aligned window holding a token, if it is not in a row's ragged tail.
    #[inline]
    pub(crate) fn window_of(&self, row: u32, pos: u32) -> Option<u32> {
        let w = pos as usize / self.len;
        (w < self.per_row).then(|| (row as usize * self.per_row + w) as u32)
    }

    /// `(row, start)` of aligned window `id`.
    pub(crate) fn bounds(&self, id: u32) -> (u32, u32) {
        let id = id as usize;
        (
            (id / self.per_row) as u32,
            ((id % self.per_row) * self.len) as u32,
        )
    }
}

/// An activating example window before it is materialised: `len` tokens of `row` from `start`,
/// whose largest activation is `peak`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub(crate) row: u32,
    pub(crate) start: u32,
    pub(crate) peak: f32,
}

/// A latent's activating windows, strongest first, and the aligned windows it fires in.
#[derive(Debug, Default)]
pub(crate) struct Activating {
    pub(crate) windows: Vec<Window>,
    /// Ids of the aligned windows holding at least one nonzero, ascending.
    pub(crate) active: Vec<u32>,
}

/// Builds a latent's activating windows from its hits (sorted by row, position).
///
/// Aligned mode ranks the aligned windows by their peak. Centred mode takes the peak token of
/// each aligned window (and of each row's ragged tail), strongest first, and places a window
/// with `len - len / 4` tokens before it, shifted to stay in the row; a window overlapping one
/// already taken is dropped, so no token appears in two examples.
pub(crate) fn activating_windows(
    hits: &[Hit],
    grid: &WindowGrid,
    centred: bool,
    max: Option<usize>,
) -> Activating {
    let len = grid.len as u32;
    let mut active = Vec::new();
    // Segments: the aligned windows of each row, then its ragged tail (segment `per_row`).
    // Each is one sort key: strongest first, then earliest (row, segment).
    let seg_per_row = grid.per_row as u64 + 1;
    let mut keys: Vec<u64> = Vec::with_capacity(hits.len().min(grid.rows * (grid.per_row + 1)));
    let mut peak_pos: Vec<u32> = Vec::new();
    let mut cur: Option<(u64, f32, u32)> = None; // (segment id, peak, peak position)
    let flush = |c: (u64, f32, u32), keys: &mut Vec<u64>, peak_pos: &mut Vec<u32>| {
        keys.push(u64::from(!order_bits(c.1)) << 32 | c.0);
        if centred {
            peak_pos.push(c.2);
        }
    };
    for h in hits {
        let seg = u64::from(h.row) * seg_per_row + u64::from(h.pos / len);
        match &mut cur {
            Some(c) if c.0 == seg => {
                if h.act > c.1 {
                    c.1 = h.act;
                    c.2 = h.pos;
                }
            }
            _ => {
                if let Some(c) = cur.take() {
                    flush(c, &mut keys, &mut peak_pos);
                }
                if let Some(id) = grid.window_of(h.row, h.pos) {
                    active.push(id);
                }
                cur = Some((seg, h.act, h.pos));
            }
        }
    }
    if let Some(c) = cur {
        flush(c, &mut keys, &mut peak_pos);
    }
    let seg_of = |key: u64| key & 0xffff_ffff;
    let unkey = |key: u64| {
        let seg = seg_of(key);
        (
            (seg / seg_per_row) as u32,
            (seg % seg_per_row) as u32,
            from_order_bits(!((key >> 32) as u32)),
        )
    };
    if !centred {
        keys.retain(|&k| seg_of(k) % seg_per_row < grid.per_row as u64);
        let keep = max.unwrap_or(usize::MAX);
        if keys.len() > keep {
            keys.select_nth_unstable(keep - 1);
            keys.truncate(keep);
        }
        keys.sort_unstable();
        let windows = keys
            .into_iter()
            .map(|k| {
                let (row, seg, peak) = unkey(k);
                Window {
                    row,
                    start: seg * len,
                    peak,
                }
            })
            .collect();
        return Activating { windows, active };
    }
    // Centred: segment ids ascend with the hits, so a segment's peak position is found by search.
    let segs: Vec<u64> = keys.iter().map(|&k| seg_of(k)).collect();
    keys.sort_unstable();
    let before = len - len / 4;
    let last_start = (grid.ctx_len - grid.len) as u32;
    let mut taken: BTreeSet<u64> = BTreeSet::new();
    let mut windows = Vec::new();
    for k in keys {
        if windows.len() >= max.unwrap_or(usize::MAX) {
            break;
        }
        let (row, _, peak) = unkey(k);
        let pos = peak_pos[segs.partition_point(|&s| s < seg_of(k))];
        let start = pos.saturating_sub(before).min(last_start);
        let key = u64::from(row) * grid.ctx_len as u64 + u64::from(start);
        let lo = key - u64::from(start.min(len - 1));
        if taken.range(lo..key + u64::from(len)).next().is_some() {
            continue;
        }
        taken.insert(key);
        windows.push(Window { row, start, peak });
    }
    Activating { windows, active }
}

/// The bits of an f32 as a u32 that sorts in the same order as the floats.
fn order_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn from_order_bits(b: u32) -> f32 {
    f32::from_bits(if b >> 31 == 1 { b & 0x7fff_ffff } else { !b })
}

/// The latent's activations on the `len` tokens of `row` from `start`.
pub(crate) fn window_activations(hits: &[Hit], row: u32, start: u32, len: usize) -> Vec<f32> {
    let mut acts = vec![0.0; len];
    let first = hits.partition_point(|h| (h.row, h.pos) < (row, start));
    for h in &hits[first..] {
        if h.row != row || h.pos >= start + len as u32 {
            break;
        }
        acts[(h.pos - start) as usize] = h.act;
    }
    acts
}

/// Scales an activation to an integer 0–10 by the latent's maximum, rounding up as delphi does,
/// so every nonzero activation shows as at least 1.
pub(crate) fn normalize(a: f32, max: f32) -> u8 {
    let max = max.max(1e-6);
    ((a * 10.0 / max).ceil() as i64).clamp(0, 10) as u8
}

/// Materialises an example: token ids, decoded tokens, activations and their normalisation.
pub(crate) fn example(
    tokens: &Tokens,
    row: u32,
    start: u32,
    activations: Vec<f32>,
    max: f32,
    decode: &dyn Decode,
) -> Example {
    let ids = tokens.row(row as usize)[start as usize..start as usize + activations.len()].to_vec();
    Example {
        str_tokens: decode.decode_all(&ids),
        tokens: ids,
        normalized: activations.iter().map(|&a| normalize(a, max)).collect(),
        activations,
        quantile: None,
        distance: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(row: u32, pos: u32, act: f32) -> Hit {
        Hit { row, pos, act }
    }

    #[test]
    fn aligned_windows_rank_by_peak_and_skip_ragged_tails() {
        // 2 rows of 10 tokens, windows of 4: two per row, positions 8 and 9 are a tail.
        let grid = WindowGrid::new(2, 10, 4);
        let hits = [
            hit(0, 1, 1.0),
            hit(0, 2, 3.0),
            hit(0, 9, 9.0),
            hit(1, 4, 2.0),
            hit(1, 7, 5.0),
        ];
        let a = activating_windows(&hits, &grid, false, None);
        assert_eq!(a.active, vec![0, 3]);
        assert_eq!(
            a.windows,
            vec![
                Window {
                    row: 1,
                    start: 4,
                    peak: 5.0
                },
                Window {
                    row: 0,
                    start: 0,
                    peak: 3.0
                }
            ]
        );
        assert_eq!(
            activating_windows(&hits, &grid, false, Some(1))
                .windows
                .len(),
            1
        );
        assert_eq!(window_activations(&hits, 1, 4, 4), vec![2.0, 0.0, 0.0, 5.0]);
    }

    #[test]
    fn centred_windows_put_three_quarters_before_the_peak_without_overlap() {
        let grid = WindowGrid::new(1, 64, 8);
        // Peaks at 30 (strongest), 33 (its window would overlap 30's), 63 (clamped to the row's
        // end) and 2 (clamped to the row's start).
        let hits = [
            hit(0, 2, 1.0),
            hit(0, 30, 9.0),
            hit(0, 33, 4.0),
            hit(0, 63, 2.0),
        ];
        let a = activating_windows(&hits, &grid, true, None);
        let starts: Vec<u32> = a.windows.iter().map(|w| w.start).collect();
        // 8 - 8/4 = 6 tokens before the peak: 30 → start 24 (peak at index 6).
        assert_eq!(starts, vec![24, 56, 0]);
        assert_eq!(window_activations(&hits, 0, 24, 8)[6], 9.0);
        assert_eq!(a.active, vec![0, 3, 4, 7]);
    }

    #[test]
    fn float_order_bits_round_trip_and_sort() {
        let xs = [-3.5f32, -0.0, 0.0, 1e-8, 2.5, 7.0];
        for w in xs.windows(2) {
            assert!(order_bits(w[0]) <= order_bits(w[1]));
        }
        for x in xs {
            assert_eq!(from_order_bits(order_bits(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn normalisation_rounds_up() {
        assert_eq!(normalize(0.01, 4.0), 1);
        assert_eq!(normalize(4.0, 4.0), 10);
        assert_eq!(normalize(2.0, 4.0), 5);
        assert_eq!(normalize(0.0, 4.0), 0);
        assert_eq!(normalize(1.0, 0.0), 10);
    }
}
