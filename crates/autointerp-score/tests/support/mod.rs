//! The river latent the scorer tests share: excerpts of space-led words in which one token
//! fires, six activating ones in three quantiles and six silent ones.

#![allow(dead_code)] // Each test file uses its own part.

use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats};

pub const RIVERS: [&str; 6] = ["Thames", "Rhine", "Nile", "Danube", "Seine", "Volga"];

/// Text that does not mention a river, one excerpt each.
pub const SILENT: [&str; 6] = [
    "The bank raised its rates again",
    "She bought three apples and pears",
    "Our team meets at noon today",
    "The parser was written last week",
    "He read the letter twice slowly",
    "A loan was approved this morning",
];

/// Whether a token (or a word with spaces around it) names a river.
pub fn is_river(token: &str) -> bool {
    RIVERS.contains(&token.trim())
}

/// An example of the space-led words of `words`; `active` (if any) is the one token that fires.
pub fn example(words: &str, active: Option<usize>, quantile: Option<u8>) -> Example {
    example_of(&words.split(' ').collect::<Vec<_>>(), active, quantile)
}

/// An example of these words, space-led from the second on (a word may hold spaces).
pub fn example_of(words: &[&str], active: Option<usize>, quantile: Option<u8>) -> Example {
    let str_tokens: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, w)| if i == 0 { (*w).into() } else { format!(" {w}") })
        .collect();
    let activations: Vec<f32> = (0..str_tokens.len())
        .map(|i| if Some(i) == active { 4.0 } else { 0.0 })
        .collect();
    Example {
        tokens: (0..str_tokens.len() as u32).collect(),
        normalized: activations
            .iter()
            .map(|&a| if a > 0.0 { 10 } else { 0 })
            .collect(),
        str_tokens,
        activations,
        quantile,
        distance: None,
    }
}

/// The silent excerpts.
pub fn silent() -> Vec<Example> {
    SILENT.iter().map(|t| example(t, None, None)).collect()
}

/// Latent `resid.4/1`: fires on river names; six test examples in three quantiles, six silent
/// ones.
pub fn rivers() -> LatentRecord {
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(4), 1),
        train: vec![],
        test: RIVERS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                example(
                    &format!("We sailed down the {r} today"),
                    Some(4),
                    Some(1 + (i / 2) as u8),
                )
            })
            .collect(),
        non_activating: silent(),
        stats: LatentStats::default(),
        logits: None,
    }
}
