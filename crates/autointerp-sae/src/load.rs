//! Finding checkpoints in a folder or a Hugging Face Hub repo, choosing them by hook point, and
//! loading each with its format's loader.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use autointerp_core::HookPoint;
use tch::Device;

use crate::coder::Format;
use crate::files::parse_hook;
use crate::{gemmascope, saelens, sparsify, Error, Result, SparseCoder};

/// How many folder levels below the root are searched (GemmaScope nests three:
/// `layer_3/width_16k/average_l0_5`).
const MAX_DEPTH: usize = 4;

/// A checkpoint found but not loaded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// Its folder relative to the root, `/`-separated; empty for the root itself.
    dir: String,
    format: Format,
}

/// The checkpoints among a set of `/`-separated relative file paths.
fn classify(files: &BTreeSet<String>) -> Vec<Found> {
    let mut found: Vec<Found> = files
        .iter()
        .filter_map(|f| {
            let (dir, name) = f.rsplit_once('/').unwrap_or(("", f));
            let has_cfg = || files.contains(&join(dir, "cfg.json"));
            let format = match name {
                sparsify::WEIGHTS if has_cfg() => Format::Sparsify,
                saelens::WEIGHTS if has_cfg() => Format::SaeLens,
                gemmascope::WEIGHTS => Format::GemmaScope,
                _ => return None,
            };
            let depth = if dir.is_empty() {
                0
            } else {
                dir.split('/').count()
            };
            (depth <= MAX_DEPTH).then(|| Found {
                dir: dir.to_string(),
                format,
            })
        })
        .collect();
    found.sort_by(|a, b| natural_cmp(&a.dir, &b.dir));
    found
}

pub(crate) fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

/// Orders `layers.2` before `layers.10`.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, sa), (db, sb)) in ca.iter().zip(&cb) {
        let ord = match (da, db) {
            (true, true) => {
                let (ta, tb) = (sa.trim_start_matches('0'), sb.trim_start_matches('0'));
                ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
            }
            _ => sa.cmp(sb),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

/// Relative paths of the files under `root`, down to [`MAX_DEPTH`] folder levels; hidden entries
/// (`.git`, `.cache`) are skipped.
fn walk(root: &Path) -> Result<BTreeSet<String>> {
    fn visit(dir: &Path, rel: &str, depth: usize, out: &mut BTreeSet<String>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                if depth < MAX_DEPTH {
                    visit(&path, &join(rel, &name), depth + 1, out)?;
                }
            } else {
                out.insert(join(rel, &name));
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    visit(root, "", 0, &mut out)?;
    Ok(out)
}

/// Chooses the checkpoints that `requested` name, in request order; all of them when `requested`
/// is empty. A request matches, in this order of preference: a folder exactly (`layers.6`,
/// `layer_3/width_16k/average_l0_5`); the folders under a prefix (`layer_3` → every width and
/// L0 of layer 3); or the hook point a checkpoint reads, compared as [`HookPoint`]s
/// (`blocks.6.hook_resid_post` finds sparsify's `layers.6`, `layers.6` finds SAE-Lens's
/// `blocks.6.hook_resid_post`), which must then be unique.
fn select(
    found: &[Found],
    requested: &[&str],
    source_name: &str,
    mut hook_of: impl FnMut(&Found) -> Result<Option<HookPoint>>,
) -> Result<Vec<Found>> {
    if requested.is_empty() {
        return Ok(found.to_vec());
    }
    let mut chosen: Vec<Found> = Vec::new();
    for &req in requested {
        let req_trim = req.trim_matches('/');
        let exact: Vec<&Found> = found.iter().filter(|f| f.dir == req_trim).collect();
        let prefixed: Vec<&Found> = found
            .iter()
            .filter(|f| f.dir.starts_with(&format!("{req_trim}/")))
            .collect();
        let matches: Vec<&Found> = if !exact.is_empty() {
            exact
        } else if !prefixed.is_empty() {
            prefixed
        } else if let Ok(hook) = req_trim.parse::<HookPoint>() {
            let mut by_hook = Vec::new();
            for f in found {
                if hook_of(f)? == Some(hook) {
                    by_hook.push(f);
                }
            }
            if by_hook.len() > 1 {
                return Err(Error::AmbiguousHookPoint {
                    requested: req.into(),
                    source_name: source_name.into(),
                    matches: by_hook
                        .iter()
                        .map(|f| display_name(f, source_name))
                        .collect(),
                });
            }
            by_hook
        } else {
            Vec::new()
        };
        if matches.is_empty() {
            return Err(Error::UnknownHookPoint {
                requested: req.into(),
                source_name: source_name.into(),
                available: found.iter().map(|f| display_name(f, source_name)).collect(),
            });
        }
        for m in matches {
            if !chosen.contains(m) {
                chosen.push(m.clone());
            }
        }
    }
    Ok(chosen)
}

/// The name a checkpoint is returned under: its folder, or the root's own name.
fn display_name(f: &Found, root_name: &str) -> String {
    if f.dir.is_empty() {
        root_name.to_string()
    } else {
        f.dir.clone()
    }
}

/// The hook point of a checkpoint, from its folder name or config, without loading weights.
fn peek_hook(root: &Path, f: &Found) -> Result<Option<HookPoint>> {
    let dir = root.join(&f.dir);
    Ok(match f.format {
        Format::Sparsify => dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_hook),
        Format::SaeLens => saelens::read_config(&dir)?.hook_name().and_then(parse_hook),
        Format::GemmaScope => {
            let abs = std::path::absolute(&dir).unwrap_or(dir);
            gemmascope::hook_from_path(&abs).0
        }
        _ => None,
    })
}

pub(crate) fn load_found(dir: &Path, format: Format, device: Device) -> Result<SparseCoder> {
    match format {
        Format::Sparsify => SparseCoder::load_sparsify(dir, device),
        Format::SaeLens => SparseCoder::load_saelens(dir, device),
        _ => SparseCoder::load_gemmascope(dir, device),
    }
}

impl SparseCoder {
    /// Loads the coders of a local folder or, when `source` is no local path but looks like a
    /// Hugging Face Hub repo id (`owner/name`), of that repo (feature `hub`; files are cached as
    /// `huggingface_hub` caches them, and a cached snapshot is used when the hub is unreachable
    /// or `HF_HUB_OFFLINE` is set). See [`SparseCoder::load_dir`] for the layout and the meaning
    /// of `hookpoints`.
    pub fn load(
        source: &str,
        hookpoints: &[&str],
        device: Device,
    ) -> Result<Vec<(String, SparseCoder)>> {
        let path = Path::new(source);
        if path.exists() {
            return Self::load_dir(path, hookpoints, device);
        }
        if !autointerp_core::is_hub_repo_id(source) {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        crate::hub::load(source, hookpoints, device)
    }

    /// Loads the coders under `dir`: the folder itself when it holds one (sparsify `cfg.json` +
    /// `sae.safetensors`, SAE-Lens `cfg.json` + `sae_weights.safetensors`, or GemmaScope
    /// `params.npz`; `dir` may also be a `params.npz` file), or every such folder up to four
    /// levels below (a sparsify repo's `layers.6/`, `layers.6.mlp/`, a SAE-Lens repo's
    /// `blocks.8.hook_resid_post/`, GemmaScope's `layer_3/width_16k/average_l0_5/`), in natural
    /// order.
    ///
    /// Each coder is returned with its name: its folder relative to `dir`, or `dir`'s own name
    /// for a single coder. `hookpoints` chooses among them (all when empty): each is a folder
    /// name, a folder prefix (`layer_3`), or a hook point in any spelling [`HookPoint`] parses
    /// (`layers.6`, `blocks.6.hook_resid_post`), matched against the hook each coder reads.
    pub fn load_dir(
        dir: &Path,
        hookpoints: &[&str],
        device: Device,
    ) -> Result<Vec<(String, SparseCoder)>> {
        let root_name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(".")
            .to_string();
        if dir.is_file() {
            return Ok(vec![(root_name, Self::load_gemmascope(dir, device)?)]);
        }
        if !dir.is_dir() {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        load_under(dir, &root_name, hookpoints, device)
    }
}

/// [`SparseCoder::load_dir`] on a folder that exists; `root_name` names a coder at the root.
pub(crate) fn load_under(
    dir: &Path,
    root_name: &str,
    hookpoints: &[&str],
    device: Device,
) -> Result<Vec<(String, SparseCoder)>> {
    let found = classify(&walk(dir)?);
    if found.is_empty() {
        return Err(Error::NoCoder {
            path: dir.to_path_buf(),
            depth: MAX_DEPTH,
        });
    }
    let chosen = select(&found, hookpoints, root_name, |f| peek_hook(dir, f))?;
    chosen
        .into_iter()
        .map(|f| {
            let coder = load_found(&dir.join(&f.dir), f.format, device)?;
            Ok((display_name(&f, root_name), coder))
        })
        .collect()
}

/// The local snapshot folder of a repo in the `huggingface_hub` cache, if one was downloaded:
/// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, then
/// `models--{owner}--{name}/snapshots/{refs/main}`.
pub(crate) fn cached_snapshot(repo: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HF_HOME")
                .map(|h| PathBuf::from(h).join("hub"))
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
                })
        })?;
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = std::fs::read_to_string(repo_dir.join("refs/main")).ok()?;
    let snapshot = repo_dir.join("snapshots").join(commit.trim());
    snapshot.is_dir().then_some(snapshot)
}

/// The checkpoints of a hub repo listing, chosen by hook point; `hook_of` may fetch configs.
#[cfg(feature = "hub")]
pub(crate) fn select_in_listing(
    files: &BTreeSet<String>,
    hookpoints: &[&str],
    repo: &str,
    hook_of: impl FnMut(&str, Format) -> Result<Option<HookPoint>>,
) -> Result<Vec<(String, String, Format)>> {
    let mut hook_of = hook_of;
    let found = classify(files);
    if found.is_empty() {
        return Err(Error::Hub {
            repo: repo.into(),
            problem: "the repo holds no sparsify, SAE-Lens or GemmaScope checkpoint".into(),
        });
    }
    let chosen = select(&found, hookpoints, repo, |f| hook_of(&f.dir, f.format))?;
    Ok(chosen
        .into_iter()
        .map(|f| (display_name(&f, repo), f.dir, f.format))
        .collect())
}

/// The files a checkpoint of `format` in `dir` needs, of those the listing has.
#[cfg(feature = "hub")]
pub(crate) fn needed_files(files: &BTreeSet<String>, dir: &str, format: Format) -> Vec<String> {
    let names: &[&str] = match format {
        Format::Sparsify => &["cfg.json", sparsify::WEIGHTS],
        Format::SaeLens => &["cfg.json", saelens::WEIGHTS, "activation_scaler.json"],
        _ => &[gemmascope::WEIGHTS],
    };
    names
        .iter()
        .map(|n| join(dir, n))
        .filter(|f| files.contains(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classify_finds_each_format_in_natural_order() {
        let f = files(&[
            "README.md",
            "layers.10/cfg.json",
            "layers.10/sae.safetensors",
            "layers.2/cfg.json",
            "layers.2/sae.safetensors",
            "layers.3/sae.safetensors", // no cfg.json: not a checkpoint
            "blocks.8.hook_resid_post/cfg.json",
            "blocks.8.hook_resid_post/sae_weights.safetensors",
            "layer_3/width_16k/average_l0_5/params.npz",
            "a/b/c/d/e/params.npz", // too deep
        ]);
        let found: Vec<(String, Format)> = classify(&f)
            .into_iter()
            .map(|f| (f.dir, f.format))
            .collect();
        assert_eq!(
            found,
            [
                ("blocks.8.hook_resid_post".into(), Format::SaeLens),
                ("layer_3/width_16k/average_l0_5".into(), Format::GemmaScope),
                ("layers.2".into(), Format::Sparsify),
                ("layers.10".into(), Format::Sparsify),
            ]
        );
        assert_eq!(
            classify(&files(&["cfg.json", "sae.safetensors"]))[0].dir,
            ""
        );
    }

    #[test]
    fn selection_by_folder_prefix_and_hook_point() {
        let found = classify(&files(&[
            "layers.6/cfg.json",
            "layers.6/sae.safetensors",
            "layers.6.mlp/cfg.json",
            "layers.6.mlp/sae.safetensors",
            "layer_3/width_16k/average_l0_5/params.npz",
            "layer_3/width_16k/average_l0_9/params.npz",
        ]));
        let hook = |f: &Found| -> Result<Option<HookPoint>> { Ok(parse_hook(&f.dir)) };
        let names = |req: &[&str]| -> Result<Vec<String>> {
            Ok(select(&found, req, "repo", hook)?
                .into_iter()
                .map(|f| f.dir)
                .collect())
        };
        assert_eq!(names(&["layers.6.mlp"]).unwrap(), ["layers.6.mlp"]);
        assert_eq!(names(&["layer_3"]).unwrap().len(), 2);
        assert_eq!(names(&["blocks.6.hook_resid_post"]).unwrap(), ["layers.6"]);
        assert_eq!(names(&[]).unwrap().len(), 4);
        let msg = names(&["layers.7"]).unwrap_err().to_string();
        assert!(
            msg.contains("layers.7") && msg.contains("available: layer_3/width_16k/average_l0_5"),
            "{msg}"
        );
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("layers.2", "layers.10"), Ordering::Less);
        assert_eq!(natural_cmp("layers.2.mlp", "layers.2"), Ordering::Greater);
    }
}
