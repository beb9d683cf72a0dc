//! Drawing train and test examples from a latent's ranked activating examples.

use rand::seq::index;
use rand::Rng;

use crate::config::{SamplerConfig, TrainType};

/// One example drawn: its rank among the activating examples (0 = strongest) and the activation
/// quantile it was drawn from (1 = strongest), if it was drawn by quantile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Rank among the activating examples.
    pub rank: usize,
    /// Quantile drawn from, `1..=n_quantiles`.
    pub quantile: Option<u8>,
}

/// The train and test draws of one latent. No rank is in both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// For the explainer, strongest first within each part.
    pub train: Vec<Pick>,
    /// For scoring, by quantile, strongest first within each.
    pub test: Vec<Pick>,
}

/// Draws train and test examples from `n` activating examples ranked strongest first.
///
/// Train is drawn first, by `cfg.train_type`:
/// - `top`: ranks `0..n_examples_train`;
/// - `random`: a sample of all ranks, without replacement;
/// - `quantiles`: ranks split into `n_quantiles` equal quantiles (1 = strongest), and an equal
///   share (the first quantiles take the remainder) drawn from each without replacement;
/// - `mix`: the top `floor(n_examples_train * ratio_top)` ranks, the rest by quantile over the
///   ranks below them (quantiles numbered over those ranks).
///
/// Test is then drawn by quantile over all `n` ranks, from the ranks train did not take; a quantile
/// with too few left gives what it has. Unlike delphi, which samples train and test independently,
/// the two never share an example.
pub fn sample(n: usize, cfg: &SamplerConfig, rng: &mut impl Rng) -> Sample {
    let n_quantiles = cfg.n_quantiles.clamp(1, 255);
    let mut taken = vec![false; n];
    let mut train = Vec::new();
    let n_train = cfg.n_examples_train.min(n);
    match cfg.train_type {
        TrainType::Top => train.extend((0..n_train).map(|rank| Pick {
            rank,
            quantile: None,
        })),
        TrainType::Random => {
            let mut ranks = index::sample(rng, n, n_train).into_vec();
            ranks.sort_unstable();
            train.extend(ranks.into_iter().map(|rank| Pick {
                rank,
                quantile: None,
            }));
        }
        TrainType::Quantiles => by_quantile(
            0,
            n,
            n_quantiles,
            cfg.n_examples_train,
            &taken,
            rng,
            &mut train,
        ),
        TrainType::Mix => {
            let n_top = ((cfg.n_examples_train as f64 * cfg.ratio_top).floor() as usize).min(n);
            train.extend((0..n_top).map(|rank| Pick {
                rank,
                quantile: None,
            }));
            let rest = cfg.n_examples_train.saturating_sub(n_top);
            by_quantile(n_top, n, n_quantiles, rest, &taken, rng, &mut train);
        }
    }
    for p in &train {
        taken[p.rank] = true;
    }
    let mut test = Vec::new();
    by_quantile(
        0,
        n,
        n_quantiles,
        cfg.n_examples_test,
        &taken,
        rng,
        &mut test,
    );
    Sample { train, test }
}

/// Splits ranks `from..to` into `n_quantiles` quantiles and draws `total` picks spread evenly
/// over them (the first `total % n_quantiles` take one more), skipping `taken` ranks.
fn by_quantile(
    from: usize,
    to: usize,
    n_quantiles: usize,
    total: usize,
    taken: &[bool],
    rng: &mut impl Rng,
    out: &mut Vec<Pick>,
) {
    let len = to.saturating_sub(from);
    if len == 0 || total == 0 {
        return;
    }
    for q in 0..n_quantiles {
        let want = total / n_quantiles + usize::from(q < total % n_quantiles);
        let (lo, hi) = (
            from + q * len / n_quantiles,
            from + (q + 1) * len / n_quantiles,
        );
        let free: Vec<usize> = (lo..hi).filter(|&r| !taken[r]).collect();
        let k = want.min(free.len());
        let mut chosen = index::sample(rng, free.len(), k).into_vec();
        chosen.sort_unstable();
        out.extend(chosen.into_iter().map(|i| Pick {
            rank: free[i],
            quantile: Some(q as u8 + 1),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn cfg(
        train_type: TrainType,
        n_train: usize,
        n_test: usize,
        n_quantiles: usize,
    ) -> SamplerConfig {
        SamplerConfig {
            n_examples_train: n_train,
            n_examples_test: n_test,
            n_quantiles,
            train_type,
            ratio_top: 0.25,
        }
    }

    #[test]
    fn each_train_type_draws_what_it_says() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let s = sample(100, &cfg(TrainType::Top, 5, 10, 5), &mut rng);
        assert_eq!(
            s.train.iter().map(|p| p.rank).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        // Test: 2 per quantile of 20 ranks; the top quantile loses ranks 0..5 to train.
        assert_eq!(s.test.len(), 10);
        for p in &s.test {
            let q = p.quantile.unwrap() as usize;
            assert!(
                (q - 1) * 20 <= p.rank && p.rank < q * 20 && p.rank >= 5,
                "{p:?}"
            );
        }

        let s = sample(100, &cfg(TrainType::Quantiles, 12, 0, 10), &mut rng);
        let per_q: Vec<usize> = (1..=10)
            .map(|q| s.train.iter().filter(|p| p.quantile == Some(q)).count())
            .collect();
        assert_eq!(per_q, vec![2, 2, 1, 1, 1, 1, 1, 1, 1, 1]);

        let s = sample(100, &cfg(TrainType::Mix, 8, 0, 2), &mut rng);
        assert_eq!(
            &s.train[..2],
            &[
                Pick {
                    rank: 0,
                    quantile: None
                },
                Pick {
                    rank: 1,
                    quantile: None
                }
            ]
        );
        assert!(s.train[2..]
            .iter()
            .take(3)
            .all(|p| p.quantile == Some(1) && (2..51).contains(&p.rank)));
        assert!(s.train[5..]
            .iter()
            .all(|p| p.quantile == Some(2) && (51..100).contains(&p.rank)));

        let s = sample(3, &cfg(TrainType::Random, 10, 10, 10), &mut rng);
        assert_eq!(s.train.len(), 3);
        assert!(s.test.is_empty());
    }

    proptest! {
        #[test]
        fn train_and_test_never_share_an_example(
            n in 0usize..400,
            n_train in 0usize..80,
            n_test in 0usize..80,
            n_quantiles in 1usize..30,
            kind in 0usize..4,
            ratio_top in 0.0f64..=1.0,
            seed in any::<u64>(),
        ) {
            let train_type = [TrainType::Top, TrainType::Random, TrainType::Quantiles, TrainType::Mix][kind];
            let cfg = SamplerConfig { n_examples_train: n_train, n_examples_test: n_test, n_quantiles, train_type, ratio_top };
            let s = sample(n, &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
            let mut seen = vec![false; n];
            for p in s.train.iter().chain(&s.test) {
                prop_assert!(p.rank < n);
                prop_assert!(!seen[p.rank], "rank {} drawn twice", p.rank);
                seen[p.rank] = true;
            }
            prop_assert!(s.train.len() <= n_train);
            prop_assert!(s.test.len() <= n_test);
            // With enough examples, train gets all it asks for.
            if n >= n_train * n_quantiles.max(2) + n_quantiles {
                prop_assert_eq!(s.train.len(), n_train);
            }
            // Quantiles are in range and test quantiles come strongest first.
            prop_assert!(s.test.windows(2).all(|w| w[0].quantile <= w[1].quantile));
            prop_assert!(s.test.iter().all(|p| p.quantile.is_some_and(|q| (1..=n_quantiles as u8).contains(&q))));
            // Same seed, same draw.
            prop_assert_eq!(s, sample(n, &cfg, &mut ChaCha8Rng::seed_from_u64(seed)));
        }
    }
}
