//! The vocabulary projection of a sparse coder: for each latent, the tokens whose logits its
//! decoder direction raises and lowers most, stored beside the cache's split files as
//! `vocab_projection.json`.
//!
//! The projection is computed by `autointerp-cache` (it needs the model's weights); this module
//! holds the file format, so that readers without libtorch (`autointerp-latents`) can attach it
//! to records.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, LatentLogits, Result, TokenLogit};

/// The file name of a hook point's vocabulary projection, in its cache folder.
pub const VOCAB_PROJECTION_FILE: &str = "vocab_projection.json";

/// The top-`k` promoted and suppressed tokens of every latent of one sparse coder, as token ids
/// and logit deltas.
///
/// On disk (JSON): `{"method": ..., "vocab_size": V, "k": k, "latents": [{"promoted":
/// [[id, delta], ...], "suppressed": [[id, delta], ...]}, ...]}`, one entry per latent in
/// index order, promoted by descending delta, suppressed by ascending delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VocabProjection {
    /// How the deltas were computed, in words (e.g. which norm gain was folded in).
    pub method: String,
    /// The model's vocabulary size.
    pub vocab_size: usize,
    /// Tokens kept on each side.
    pub k: usize,
    /// One entry per latent.
    pub latents: Vec<LatentTokens>,
}

/// The promoted and suppressed `(token id, logit delta)` pairs of one latent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatentTokens {
    /// The largest deltas, largest first.
    pub promoted: Vec<(u32, f32)>,
    /// The most negative deltas, most negative first.
    pub suppressed: Vec<(u32, f32)>,
}

impl VocabProjection {
    /// The number of latents.
    pub fn width(&self) -> usize {
        self.latents.len()
    }

    /// Latent `latent`'s tokens, decoded with `decode`; `None` outside the width.
    pub fn logits(&self, latent: u32, decode: impl Fn(u32) -> String) -> Option<LatentLogits> {
        let l = self.latents.get(latent as usize)?;
        let side = |pairs: &[(u32, f32)]| {
            pairs
                .iter()
                .map(|&(token, delta)| TokenLogit {
                    token,
                    text: decode(token),
                    delta,
                })
                .collect()
        };
        Some(LatentLogits {
            promoted: side(&l.promoted),
            suppressed: side(&l.suppressed),
        })
    }

    /// Writes the projection to `<dir>/vocab_projection.json`, atomically.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn write_to_dir(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::BadVocabProjection {
            path: dir.join(VOCAB_PROJECTION_FILE),
            problem: e.to_string(),
        })?;
        crate::fs::write_atomic(&dir.join(VOCAB_PROJECTION_FILE), &bytes)
    }

    /// Reads `<dir>/vocab_projection.json`; `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, [`Error::BadVocabProjection`] when it does not
    /// parse, or holds a token outside the vocabulary, a non-finite delta, more than `k` tokens
    /// on a side, or lists out of order.
    pub fn read_from_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(VOCAB_PROJECTION_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let bad = |problem: String| Error::BadVocabProjection {
            path: path.clone(),
            problem,
        };
        let p: Self = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        for (i, l) in p.latents.iter().enumerate() {
            for (name, side, descending) in [
                ("promoted", &l.promoted, true),
                ("suppressed", &l.suppressed, false),
            ] {
                if side.len() > p.k {
                    return Err(bad(format!(
                        "latent {i}: {} {name} tokens, more than k = {}",
                        side.len(),
                        p.k
                    )));
                }
                if let Some(&(t, _)) = side.iter().find(|&&(t, _)| t as usize >= p.vocab_size) {
                    return Err(bad(format!(
                        "latent {i}: {name} token {t} is outside the vocabulary of {}",
                        p.vocab_size
                    )));
                }
                if let Some(&(t, d)) = side.iter().find(|&&(_, d)| !d.is_finite()) {
                    return Err(bad(format!("latent {i}: {name} token {t} has delta {d}")));
                }
                let ordered = side.windows(2).all(|w| {
                    if descending {
                        w[0].1 >= w[1].1
                    } else {
                        w[0].1 <= w[1].1
                    }
                });
                if !ordered {
                    return Err(bad(format!("latent {i}: {name} tokens out of order")));
                }
            }
        }
        Ok(Some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VocabProjection {
        VocabProjection {
            method: "test".into(),
            vocab_size: 10,
            k: 2,
            latents: vec![
                LatentTokens {
                    promoted: vec![(3, 1.5), (7, 0.25)],
                    suppressed: vec![(1, -2.0), (0, -0.125)],
                },
                LatentTokens::default(),
            ],
        }
    }

    #[test]
    fn round_trips_and_decodes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(VocabProjection::read_from_dir(dir.path()).unwrap(), None);
        let p = sample();
        p.write_to_dir(dir.path()).unwrap();
        let back = VocabProjection::read_from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(back, p);
        let logits = back.logits(0, |t| format!("<{t}>")).unwrap();
        assert_eq!(logits.promoted[0].text, "<3>");
        assert_eq!(logits.promoted[0].delta, 1.5);
        assert_eq!(logits.suppressed[1].token, 0);
        assert_eq!(
            LatentLogits::describe(&logits.promoted, 1),
            r#""<3>" (+1.50)"#
        );
        assert!(back.logits(2, |t| t.to_string()).is_none());
    }

    #[test]
    fn inconsistent_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        type Edit = fn(&mut VocabProjection);
        let cases: [(&str, Edit); 3] = [
            ("outside", |p| p.latents[0].promoted[0].0 = 10),
            ("out of order", |p| p.latents[0].suppressed.reverse()),
            ("more than k", |p| p.latents[0].promoted.push((2, 0.0))),
        ];
        for (want, edit) in cases {
            let mut p = sample();
            edit(&mut p);
            p.write_to_dir(dir.path()).unwrap();
            let err = VocabProjection::read_from_dir(dir.path())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want) && err.contains(VOCAB_PROJECTION_FILE),
                "{err}"
            );
        }
        std::fs::write(dir.path().join(VOCAB_PROJECTION_FILE), b"{").unwrap();
        assert!(VocabProjection::read_from_dir(dir.path()).is_err());
    }
}
