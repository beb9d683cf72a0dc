//! Split files from untrusted sources: random byte changes, truncations and extensions of valid
//! files give an error or a split, never a panic, an abort or an allocation the file's size does
//! not justify (the run would be killed for memory long before proptest's case limit).

use std::path::Path;

use autointerp_core::split::{Location, Split, Tokens};
use proptest::prelude::*;

/// A valid split of latents 0..=9, with a token grid, as bytes.
fn fixture(with_tokens: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (rows, ctx_len) = (6, 8);
    let mut locations = Vec::new();
    let mut activations = Vec::new();
    for row in 0..rows {
        for position in (0..ctx_len).step_by(3) {
            locations.push(Location {
                row: row as u32,
                position: position as u32,
                latent: ((row * 7 + position) % 10) as u32,
            });
            activations.push(0.5 + row as f32);
        }
    }
    let split = Split {
        start: 0,
        end: 9,
        locations,
        activations,
        tokens: with_tokens.then(|| Tokens {
            rows,
            ctx_len,
            ids: (0..(rows * ctx_len) as u32).collect(),
        }),
    };
    split.write_to_dir(dir.path()).unwrap();
    std::fs::read(dir.path().join("0_9.safetensors")).unwrap()
}

#[test]
fn the_fixture_reads_back() {
    for with_tokens in [false, true] {
        let split = Split::from_bytes(&fixture(with_tokens), 0, 9, Path::new("0_9.safetensors"));
        assert_eq!(split.unwrap().locations.len(), 18);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutations_never_panic(
        with_tokens in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut b = fixture(with_tokens);
        for (at, byte) in edits {
            let i = at.index(b.len());
            b[i] = byte;
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        b.extend(tail);
        let _ = Split::from_bytes(&b, 0, 9, Path::new("0_9.safetensors"));
    }

    /// The header's first 8 bytes (its length) and the JSON right after are where sizes live.
    #[test]
    fn header_mutations_never_panic(
        with_tokens in any::<bool>(),
        edits in proptest::collection::vec((0usize..160, any::<u8>()), 1..6),
    ) {
        let mut b = fixture(with_tokens);
        for (at, byte) in edits {
            let i = at.min(b.len() - 1);
            b[i] = byte;
        }
        let _ = Split::from_bytes(&b, 0, 9, Path::new("0_9.safetensors"));
    }
}
