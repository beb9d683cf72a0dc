//! Hugging Face Hub repos: list the files, choose checkpoints by hook point, download only the
//! chosen ones (feature `hub`), or fall back to a snapshot already in the local cache.

use tch::Device;

use crate::load::{cached_snapshot, load_under};
use crate::{Error, Result, SparseCoder};

/// Loads the chosen coders of hub repo `repo`.
pub(crate) fn load(
    repo: &str,
    hookpoints: &[&str],
    device: Device,
) -> Result<Vec<(String, SparseCoder)>> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    if offline {
        return from_cache(repo, hookpoints, device, "HF_HUB_OFFLINE is set".into());
    }
    online(repo, hookpoints, device)
}

/// A snapshot already downloaded (by this crate, `huggingface_hub` or `hf-hub`), or an error
/// saying why there is none and that a local path is the way out.
fn from_cache(
    repo: &str,
    hookpoints: &[&str],
    device: Device,
    why: String,
) -> Result<Vec<(String, SparseCoder)>> {
    match cached_snapshot(repo) {
        Some(dir) => {
            tracing::info!(repo, dir = %dir.display(), "{why}; using the cached snapshot");
            load_under(&dir, repo, hookpoints, device)
        }
        None => Err(Error::Hub {
            repo: repo.into(),
            problem: format!("{why}, and no snapshot of it is cached"),
        }),
    }
}

#[cfg(not(feature = "hub"))]
fn online(repo: &str, hookpoints: &[&str], device: Device) -> Result<Vec<(String, SparseCoder)>> {
    from_cache(
        repo,
        hookpoints,
        device,
        "autointerp-sae was built without its `hub` feature".into(),
    )
}

#[cfg(feature = "hub")]
fn online(repo: &str, hookpoints: &[&str], device: Device) -> Result<Vec<(String, SparseCoder)>> {
    use std::collections::BTreeSet;
    use std::path::Path;

    use crate::coder::Format;
    use crate::files::parse_hook;
    use crate::load::{load_found, needed_files, select_in_listing};
    use crate::{gemmascope, saelens};

    let hub_err = |problem: String| Error::Hub {
        repo: repo.into(),
        problem,
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| hub_err(format!("cannot set up the hub client: {e}")))?;
    let api_repo = api.model(repo.to_string());
    // hf-hub's `info()` reads the answer unbounded; at most MAX_HUB_METADATA_BYTES here.
    let info = api_repo
        .info_request()
        .call()
        .map_err(|e| e.to_string())
        .and_then(|answer| {
            autointerp_core::read_json_bounded::<hf_hub::api::RepoInfo>(
                answer.into_reader(),
                autointerp_core::MAX_HUB_METADATA_BYTES,
            )
        });
    let info = match info {
        Ok(info) => info,
        Err(e) => {
            return from_cache(
                repo,
                hookpoints,
                device,
                format!("cannot reach the hub ({e})"),
            )
        }
    };
    let files: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let get = |file: &str| {
        api_repo
            .get(file)
            .map_err(|e| hub_err(format!("downloading {file}: {e}")))
    };

    let chosen = select_in_listing(&files, hookpoints, repo, |dir, format| {
        Ok(match format {
            Format::Sparsify => dir.rsplit('/').next().and_then(parse_hook),
            Format::SaeLens => {
                let cfg = get(&crate::load::join(dir, "cfg.json"))?;
                let folder = cfg.parent().unwrap_or(Path::new("."));
                saelens::read_config(folder)?
                    .hook_name()
                    .and_then(parse_hook)
            }
            _ => gemmascope::hook_from_path(&Path::new(repo).join(dir)).0,
        })
    })?;
    chosen
        .into_iter()
        .map(|(name, dir, format)| {
            let mut local = None;
            for file in needed_files(&files, &dir, format) {
                tracing::info!(repo, file, "fetching");
                local = get(&file)?.parent().map(Path::to_path_buf);
            }
            let local = local.ok_or_else(|| hub_err(format!("{dir}: nothing to download")))?;
            Ok((name, load_found(&local, format, device)?))
        })
        .collect()
}
