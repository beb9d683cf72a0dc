use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autointerp_core::split::{parse_file_name, Split};
use autointerp_core::{Example, LatentId, LatentRecord, LatentStats};

use crate::{Error, Result};

/// How activating examples are cut from the cache.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConstructorConfig {
    /// Tokens per example window.
    pub example_ctx_len: usize,
    /// Activating examples kept for the explainer, strongest first.
    pub n_train: usize,
}

impl Default for ConstructorConfig {
    fn default() -> Self {
        Self { example_ctx_len: 32, n_train: 40 }
    }
}

/// The cache of one hook point: a folder of split files.
#[derive(Debug)]
pub struct CachedHook {
    dir: PathBuf,
    /// `(start, end, path)`, sorted by start.
    splits: Vec<(u32, u32, PathBuf)>,
}

impl CachedHook {
    /// Opens a hook point's cache folder, listing its split files (none are read yet).
    pub fn open(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let mut splits = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
            let name = entry.file_name();
            if let Some((start, end)) = name.to_str().and_then(parse_file_name) {
                splits.push((start, end, entry.path()));
            }
        }
        if splits.is_empty() {
            return Err(Error::NoSplits(dir.to_path_buf()));
        }
        splits.sort_by_key(|s| s.0);
        Ok(Self { dir: dir.to_path_buf(), splits })
    }

    /// Builds the record of one latent: its activating windows, strongest first.
    ///
    /// Windows are the aligned, non-overlapping `example_ctx_len`-token pieces of each cache row;
    /// a window's strength is its largest activation. `decode` turns one token id into text.
    pub fn record(&self, id: LatentId, cfg: &ConstructorConfig, decode: &dyn Fn(u32) -> String) -> Result<LatentRecord> {
        let (_, _, path) = self
            .splits
            .iter()
            .find(|(s, e, _)| (*s..=*e).contains(&id.index))
            .ok_or_else(|| Error::LatentNotCached {
                latent: id.index,
                dir: self.dir.clone(),
                max: self.splits.last().map_or(0, |s| s.1),
            })?;
        let split = Split::read(path)?;
        let tokens = split.tokens.as_ref().ok_or_else(|| Error::NoTokens(path.clone()))?;
        let len = cfg.example_ctx_len.clamp(1, tokens.ctx_len);

        // Activations per window, keyed by (row, window index).
        let mut windows: HashMap<(u32, u32), Vec<f32>> = HashMap::new();
        let mut stats = LatentStats { n_tokens: (tokens.rows * tokens.ctx_len) as u64, ..Default::default() };
        for (loc, &act) in split.locations.iter().zip(&split.activations) {
            if loc.latent != id.index {
                continue;
            }
            stats.n_activations += 1;
            stats.max_activation = stats.max_activation.max(act);
            let w = loc.position as usize / len;
            if (w + 1) * len > tokens.ctx_len {
                continue; // the ragged tail of a row is not a full window
            }
            windows.entry((loc.row, w as u32)).or_insert_with(|| vec![0.0; len])[loc.position as usize % len] = act;
        }

        let mut ranked: Vec<((u32, u32), Vec<f32>)> = windows.into_iter().collect();
        let peak = |a: &[f32]| a.iter().copied().fold(0.0f32, f32::max);
        // Strongest first; ties broken by position so records are deterministic.
        ranked.sort_by(|a, b| peak(&b.1).total_cmp(&peak(&a.1)).then(a.0.cmp(&b.0)));
        ranked.truncate(cfg.n_train);
        let max = stats.max_activation;
        let train = ranked
            .into_iter()
            .map(|((row, w), activations)| {
                let start = w as usize * len;
                let ids = tokens.row(row as usize)[start..start + len].to_vec();
                Example {
                    str_tokens: ids.iter().map(|&t| decode(t)).collect(),
                    tokens: ids,
                    normalized: activations.iter().map(|&a| normalize(a, max)).collect(),
                    activations,
                    quantile: None,
                    distance: None,
                }
            })
            .collect();
        Ok(LatentRecord { id, train, test: Vec::new(), non_activating: Vec::new(), stats })
    }
}

/// Scales an activation to an integer 0–10 by the latent's maximum (rounding down, so only the
/// maximum itself reaches 10).
fn normalize(a: f32, max: f32) -> u8 {
    if max <= 0.0 {
        0
    } else {
        ((a / max * 10.0).floor() as i64).clamp(0, 10) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_core::split::{Location, Tokens};
    use autointerp_core::HookPoint;

    #[test]
    fn windows_are_ranked_by_peak_activation() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens { rows: 2, ctx_len: 8, ids: (0..16).collect() };
        let loc = |row, position, latent| Location { row, position, latent };
        Split {
            start: 0,
            end: 1,
            locations: vec![loc(0, 1, 0), loc(0, 2, 1), loc(1, 6, 1), loc(1, 7, 1)],
            activations: vec![9.0, 1.0, 4.0, 2.0],
            tokens: Some(tokens),
        }
        .write_to_dir(dir.path())
        .unwrap();
        let hook = CachedHook::open(dir.path()).unwrap();
        let cfg = ConstructorConfig { example_ctx_len: 4, n_train: 10 };
        let rec = hook.record(LatentId::new(HookPoint::Residual(0), 1), &cfg, &|t| t.to_string()).unwrap();
        assert_eq!(rec.stats.n_activations, 3);
        assert_eq!(rec.stats.max_activation, 4.0);
        assert_eq!(rec.train.len(), 2);
        assert_eq!(rec.train[0].tokens, vec![12, 13, 14, 15]);
        assert_eq!(rec.train[0].activations, vec![0.0, 0.0, 4.0, 2.0]);
        assert_eq!(rec.train[0].normalized, vec![0, 0, 10, 5]);
        assert_eq!(rec.train[1].tokens, vec![0, 1, 2, 3]);
        assert_eq!(rec.train[1].str_tokens[2], "2");

        let err = hook.record(LatentId::new(HookPoint::Residual(0), 7), &cfg, &|t| t.to_string()).unwrap_err();
        assert!(err.to_string().contains("latent 7 is in no split"), "{err}");
    }

    #[test]
    fn empty_folders_are_not_caches() {
        let dir = tempfile::tempdir().unwrap();
        let err = CachedHook::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no split files"), "{err}");
    }
}
