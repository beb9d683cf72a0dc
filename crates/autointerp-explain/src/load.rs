//! Explanations on disk, in delphi's layout, and the random-explanation control.
//!
//! delphi writes one file per latent, `explanations/<hookpoint>_latent<N>.txt`, holding the
//! explanation as a JSON string (`orjson.dumps(explanation)`, e.g. `"Names of rivers"`), and reads
//! it back with `json.loads`. Files written by hand may hold the plain text instead; both are
//! read here. delphi stores failures as the placeholders in [`DELPHI_PLACEHOLDERS`]; they are read
//! as failures, not as explanations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autointerp_core::{Explanation, LatentId};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// What delphi writes when its explainer's answer could not be parsed, or reads when a file is
/// missing.
pub const DELPHI_PLACEHOLDERS: [&str; 2] =
    ["Explanation could not be parsed.", "No explanation found"];

/// The explanations found in a folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadedExplanations {
    /// Usable explanations, sorted by latent.
    pub explanations: Vec<Explanation>,
    /// Latents whose file is empty or holds a delphi failure placeholder, sorted.
    pub failed: Vec<LatentId>,
}

/// The file name of `latent`'s explanation: `<hookpoint>_latent<N>.txt`.
pub fn explanation_file_name(latent: &LatentId) -> String {
    format!("{latent}.txt")
}

/// Reads one explanation file: a JSON string (delphi) or plain text. `Ok(None)` when it is empty
/// or holds a delphi failure placeholder.
pub fn read_explanation_file(path: &Path) -> Result<Option<Explanation>> {
    let (latent, text) = read_file(path)?;
    Ok(text.map(|text| Explanation { latent, text }))
}

/// The latent a file names, and its explanation (`None` for an empty file or a placeholder).
fn read_file(path: &Path) -> Result<(LatentId, Option<String>)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name.strip_suffix(".txt").unwrap_or(name);
    let latent = stem.parse().map_err(|source| Error::BadFileName {
        path: path.to_path_buf(),
        source,
    })?;
    let raw = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let raw = raw.trim();
    let text = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?
    } else {
        raw.to_string()
    };
    let text = text.trim();
    let usable = !text.is_empty() && !DELPHI_PLACEHOLDERS.contains(&text);
    Ok((latent, usable.then(|| text.to_string())))
}

/// Reads every `*.txt` file of `dir` as an explanation. Other files are ignored; a `.txt` file
/// whose stem is not a latent id, or two files naming the same latent (e.g. `model.layers.6_…`
/// and `layers.6_…`), are errors.
pub fn load_explanations(dir: &Path) -> Result<LoadedExplanations> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    paths.retain(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"));
    paths.sort();
    let mut found: BTreeMap<LatentId, (PathBuf, Option<String>)> = BTreeMap::new();
    for path in paths {
        let (latent, text) = read_file(&path)?;
        if let Some((first, _)) = found.get(&latent) {
            return Err(Error::DuplicateFiles {
                latent,
                first: first.clone(),
                second: path,
            });
        }
        found.insert(latent, (path, text));
    }
    let mut out = LoadedExplanations::default();
    for (latent, (_, text)) in found {
        match text {
            Some(text) => out.explanations.push(Explanation { latent, text }),
            None => out.failed.push(latent),
        }
    }
    Ok(out)
}

/// Writes `explanation` into `dir` as delphi does: `<latent id>.txt` holding a JSON string.
/// The write is atomic.
pub fn write_explanation(dir: &Path, explanation: &Explanation) -> Result<PathBuf> {
    let path = dir.join(explanation_file_name(&explanation.latent));
    let json = serde_json::Value::String(explanation.text.clone()).to_string();
    autointerp_core::fs::write_atomic(&path, json.as_bytes())?;
    Ok(path)
}

/// The random-explanation control: each latent gets the explanation of a **different** latent,
/// drawn as a uniformly random derangement (a shuffle in which nothing stays in place) from a
/// generator seeded with `seed`. The output is in the order of the input.
///
/// Errors when fewer than two explanations are given or a latent appears twice.
pub fn random_control(explanations: &[Explanation], seed: u64) -> Result<Vec<Explanation>> {
    let n = explanations.len();
    if n < 2 {
        return Err(Error::TooFewExplanations { n });
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in explanations {
        if !seen.insert(e.latent) {
            return Err(Error::DuplicateLatent { latent: e.latent });
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut perm: Vec<usize> = (0..n).collect();
    // Rejection sampling gives a uniform derangement; a shuffle is one with probability ≈ 1/e,
    // and never below 1/3. After 64 misses (probability < 1e-11), Sattolo's algorithm (a random
    // cycle, always a derangement) finishes the job.
    let mut deranged = false;
    for _ in 0..64 {
        perm.shuffle(&mut rng);
        if perm.iter().enumerate().all(|(i, &p)| i != p) {
            deranged = true;
            break;
        }
    }
    if !deranged {
        perm = (0..n).collect();
        for i in (1..n).rev() {
            let j = rand::Rng::random_range(&mut rng, 0..i);
            perm.swap(i, j);
        }
    }
    Ok(explanations
        .iter()
        .zip(&perm)
        .map(|(e, &p)| Explanation {
            latent: e.latent,
            text: explanations[p].text.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_core::HookPoint;

    fn id(i: u32) -> LatentId {
        LatentId::new(HookPoint::Residual(6), i)
    }

    #[test]
    fn reads_delphi_json_strings_and_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("layers.6_latent1.txt"), r#""Names of \"rivers\"""#).unwrap();
        std::fs::write(d.join("model.layers.6_latent2.txt"), "Plain text\n").unwrap();
        std::fs::write(
            d.join("layers.6_latent3.txt"),
            r#""Explanation could not be parsed.""#,
        )
        .unwrap();
        std::fs::write(d.join("layers.6_latent4.txt"), "").unwrap();
        std::fs::write(d.join("notes.md"), "ignored").unwrap();
        let loaded = load_explanations(d).unwrap();
        assert_eq!(
            loaded.explanations,
            vec![
                Explanation {
                    latent: id(1),
                    text: "Names of \"rivers\"".into()
                },
                Explanation {
                    latent: id(2),
                    text: "Plain text".into()
                },
            ]
        );
        assert_eq!(loaded.failed, vec![id(3), id(4)]);
    }

    #[test]
    fn write_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let e = Explanation {
            latent: LatentId::new(HookPoint::Mlp(2), 7),
            text: "Quotes \" and\nnewlines".into(),
        };
        let path = write_explanation(dir.path(), &e).unwrap();
        assert!(path.ends_with("layers.2.mlp_latent7.txt"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#""Quotes \" and\nnewlines""#
        );
        assert_eq!(load_explanations(dir.path()).unwrap().explanations, vec![e]);
    }

    #[test]
    fn bad_names_duplicates_and_bad_json_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
        assert!(matches!(
            load_explanations(dir.path()),
            Err(Error::BadFileName { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("layers.6_latent1.txt"), "a").unwrap();
        std::fs::write(dir.path().join("model.layers.6_latent1.txt"), "b").unwrap();
        let err = load_explanations(dir.path()).unwrap_err();
        assert!(matches!(err, Error::DuplicateFiles { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("layers.6_latent1.txt") && msg.contains("model.layers.6_latent1.txt"),
            "{msg}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("layers.6_latent1.txt"), "\"unterminated").unwrap();
        assert!(matches!(
            load_explanations(dir.path()),
            Err(Error::Json { .. })
        ));
    }

    #[test]
    fn random_control_never_keeps_a_latents_own_explanation() {
        for n in 2..12u32 {
            let exps: Vec<Explanation> = (0..n)
                .map(|i| Explanation {
                    latent: id(i),
                    text: format!("text {i}"),
                })
                .collect();
            for seed in 0..50 {
                let ctl = random_control(&exps, seed).unwrap();
                let mut texts: Vec<_> = ctl.iter().map(|e| e.text.clone()).collect();
                for (e, c) in exps.iter().zip(&ctl) {
                    assert_eq!(e.latent, c.latent);
                    assert_ne!(e.text, c.text);
                }
                texts.sort();
                let mut want: Vec<_> = exps.iter().map(|e| e.text.clone()).collect();
                want.sort();
                assert_eq!(texts, want, "a permutation");
            }
        }
        let exps: Vec<Explanation> = (0..5)
            .map(|i| Explanation {
                latent: id(i),
                text: format!("{i}"),
            })
            .collect();
        assert_eq!(
            random_control(&exps, 3).unwrap(),
            random_control(&exps, 3).unwrap()
        );
        assert!(matches!(
            random_control(&exps[..1], 0),
            Err(Error::TooFewExplanations { n: 1 })
        ));
        let dup = vec![exps[0].clone(), exps[0].clone()];
        assert!(matches!(
            random_control(&dup, 0),
            Err(Error::DuplicateLatent { .. })
        ));
    }
}
