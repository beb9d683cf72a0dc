//! Random non-activating windows.

use rand::seq::index;
use rand::Rng;

/// `n` distinct window ids of `0..n_windows` drawn uniformly without replacement from those not
/// in `active` (sorted, distinct), ascending; all of them when fewer than `n` are left.
pub(crate) fn random_windows(
    active: &[u32],
    n_windows: u64,
    n: usize,
    rng: &mut impl Rng,
) -> Vec<u32> {
    let free = (n_windows as usize).saturating_sub(active.len());
    let k = n.min(free);
    let mut ranks = index::sample(rng, free, k).into_vec();
    ranks.sort_unstable();
    // The r-th free window is r plus the number of active windows at or below it; ranks ascend,
    // so one merge walk maps them all.
    let mut j = 0;
    ranks
        .into_iter()
        .map(|r| {
            while j < active.len() && active[j] as usize <= r + j {
                j += 1;
            }
            (r + j) as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn draws_only_free_windows_without_replacement() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let active = [0, 1, 2, 5, 9];
        assert_eq!(
            random_windows(&active, 10, 100, &mut rng),
            vec![3, 4, 6, 7, 8]
        );
        for _ in 0..50 {
            let w = random_windows(&active, 10, 3, &mut rng);
            assert_eq!(w.len(), 3);
            assert!(w.windows(2).all(|p| p[0] < p[1]));
            assert!(w.iter().all(|x| !active.contains(x) && *x < 10));
        }
        assert!(random_windows(&[0, 1], 2, 5, &mut rng).is_empty());
    }
}
