//! What the run crate's tests share: a word-level tokenizer and a tiny cache whose latents fire
//! on known words.
#![allow(dead_code)]

use std::path::Path;

use autointerp_core::split::{Location, Split, Tokens};

/// The words latents fire on, in latent order.
pub const WORDS: [&str; 4] = ["river", "apple", "violin", "copper"];
pub const FILLERS: [&str; 4] = ["the", "a", "of", "and"];

/// A word-level tokenizer and a cache of 4 latents over 32 rows of 16 tokens: latent `i` fires
/// on `WORDS[i]` in every fourth row.
pub fn write_cache(root: &Path) {
    let vocab: serde_json::Map<_, _> = (WORDS.iter().chain(&FILLERS).enumerate())
        .map(|(i, w)| (format!(" {w}"), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({"version": "1.0", "pre_tokenizer": {"type": "Whitespace"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": " the"}});
    std::fs::write(root.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let (rows, ctx_len) = (32, 16);
    let mut split = Split {
        start: 0,
        end: 3,
        locations: Vec::new(),
        activations: Vec::new(),
        tokens: None,
    };
    let mut ids = Vec::new();
    for row in 0..rows {
        for p in 0..ctx_len {
            let latent = (row % WORDS.len()) as u32;
            if p % 4 == 1 {
                ids.push(latent);
                split.locations.push(Location {
                    row: row as u32,
                    position: p as u32,
                    latent,
                });
                split.activations.push(1.0 + (row % 5) as f32);
            } else {
                ids.push((WORDS.len() + p % FILLERS.len()) as u32);
            }
        }
    }
    split.tokens = Some(Tokens { rows, ctx_len, ids });
    let hook = root.join("latents/layers.0");
    std::fs::create_dir_all(&hook).unwrap();
    split.write_to_dir(&hook).unwrap();
    let model = root.join("tokenizer.json");
    let config = serde_json::json!({ "model_name": model });
    std::fs::write(hook.join("config.json"), config.to_string()).unwrap();
}
