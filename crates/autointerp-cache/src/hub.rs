//! Text datasets from the Hugging Face Hub, as parquet files.
//!
//! Every public Hub dataset has parquet files: either its own (in `main`), or those the datasets
//! server converts it to, on the `refs/convert/parquet` branch laid out as
//! `<config>/<split>/NNNN.parquet` (`<config>/partial-<split>/...` when only the first 5 GB were
//! converted). The converted branch is preferred because its layout names configs and splits; a
//! dataset without one falls back to the parquet files of `main`, matched by split name the way
//! `datasets` matches data files. Files land in the usual Hub cache (`HF_HOME`), so a rerun (or a
//! resume after a crash) downloads nothing, and works offline when `HF_HUB_OFFLINE=1` or the Hub
//! cannot be reached.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use autointerp_core::{read_json_bounded, MAX_HUB_METADATA_BYTES};
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::api::RepoInfo;
use hf_hub::{Cache, Repo, RepoType};

use crate::{Error, Result};

/// The branch where the datasets server writes its parquet conversion.
const CONVERTED: &str = "refs/convert/parquet";

/// Where and as whom to reach the Hub. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL, `https://huggingface.co` unless `HF_ENDPOINT` says otherwise.
    pub endpoint: String,
    /// The hub cache folder (`$HF_HOME/hub`, by default `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Access token for private or gated datasets (`HF_TOKEN`, else the token file in `HF_HOME`).
    pub token: Option<String>,
    /// Never touch the network; read the cache only (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("offline", &self.offline)
            .finish()
    }
}

impl HubOptions {
    /// The settings `huggingface_hub` reads: `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN`,
    /// `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let cache = Cache::from_env();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            endpoint: env("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| "https://huggingface.co".into()),
            token: env("HF_TOKEN").or_else(|| cache.token()),
            cache_dir: cache.path().clone(),
            offline: env("HF_HUB_OFFLINE").is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
            }),
        }
    }
}

/// One split of one config of a Hub dataset, as delphi names them (`dataset_repo`,
/// `dataset_name`, `dataset_split`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDataset {
    /// `owner/name`.
    pub repo: String,
    /// The config (subset); `None` picks `default`, or the only one.
    pub config: Option<String>,
    /// The split name, without any `[a:b]` slice.
    pub split: String,
}

/// Downloads (or finds in the cache) the parquet files of `ds`, in the order of their names.
pub fn parquet_files(ds: &HubDataset, opts: &HubOptions) -> Result<Vec<PathBuf>> {
    let api_url = |rev: &str| {
        format!(
            "{}/api/datasets/{}/revision/{}",
            opts.endpoint,
            ds.repo,
            rev.replace('/', "%2F")
        )
    };
    let err = |url: String, problem: String| Error::Hub {
        repo: ds.repo.clone(),
        url,
        problem,
    };
    if opts.offline {
        return from_cache(ds, opts).map_err(|problem| {
            err(
                api_url(CONVERTED),
                format!("HF_HUB_OFFLINE is set and {problem}"),
            )
        });
    }
    let api = ApiBuilder::from_cache(Cache::new(opts.cache_dir.clone()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        .with_progress(false)
        .build()
        .map_err(|e| {
            err(
                opts.endpoint.clone(),
                format!("cannot set up the client: {e}"),
            )
        })?;
    let converted = api.repo(Repo::with_revision(
        ds.repo.clone(),
        RepoType::Dataset,
        CONVERTED.into(),
    ));
    let (repo, files) = match listing(&converted) {
        Ok(names) => {
            let chosen = choose_converted(&names, ds).map_err(|p| err(api_url(CONVERTED), p))?;
            (converted, chosen)
        }
        Err(Failure::Status(404)) => {
            // No conversion: either the dataset does not exist or it was never converted.
            let main = api.dataset(ds.repo.clone());
            match listing(&main) {
                Ok(names) => {
                    let chosen = choose_native(&names, ds).map_err(|p| err(api_url("main"), p))?;
                    (main, chosen)
                }
                Err(f) => return Err(err(api_url("main"), f.describe())),
            }
        }
        Err(Failure::Unreachable(why)) => {
            return from_cache(ds, opts).map_err(|problem| {
                err(
                    api_url(CONVERTED),
                    format!("the Hub cannot be reached ({why}) and {problem}"),
                )
            });
        }
        Err(f) => return Err(err(api_url(CONVERTED), f.describe())),
    };
    files
        .iter()
        .map(|file| {
            tracing::info!(repo = ds.repo, file, "fetching");
            repo.get(file)
                .map_err(|e| err(repo.url(file), Failure::from(e).describe()))
        })
        .collect()
}

/// Why a Hub request failed.
enum Failure {
    /// The Hub answered with this HTTP status.
    Status(u16),
    /// No answer (DNS, refused connection, TLS).
    Unreachable(String),
    /// Anything else (bad answer, local I/O).
    Other(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::RequestError(e) => {
                let text = e.to_string();
                match (*e).into_response() {
                    Some(r) => Failure::Status(r.status()),
                    None => Failure::Unreachable(text),
                }
            }
            other => Failure::Other(other.to_string()),
        }
    }
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Status(401 | 403 | 404) => format!(
                "HTTP {}: no such dataset, or it is private or gated (set HF_TOKEN to a token \
                 with access)",
                self.code()
            ),
            Failure::Status(code) => format!("HTTP {code}"),
            Failure::Unreachable(why) => format!("the Hub cannot be reached: {why}"),
            Failure::Other(why) => why.clone(),
        }
    }

    fn code(&self) -> u16 {
        match self {
            Failure::Status(c) => *c,
            _ => 0,
        }
    }
}

/// The repo's file names. hf-hub's `info()` reads the answer unbounded; this reads at most
/// [`MAX_HUB_METADATA_BYTES`].
fn listing(repo: &ApiRepo) -> Result<Vec<String>, Failure> {
    let answer = repo
        .info_request()
        .call()
        .map_err(|e| Failure::from(ApiError::RequestError(Box::new(e))))?;
    let info: RepoInfo = read_json_bounded(answer.into_reader(), MAX_HUB_METADATA_BYTES)
        .map_err(|e| Failure::Other(format!("the repo listing: {e}")))?;
    Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
}

fn list(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Picks the files of `ds` on the converted branch (`<config>/<split>/NNNN.parquet`, or the older
/// `<config>/<anything>-<split>.parquet`).
fn choose_converted(names: &[String], ds: &HubDataset) -> Result<Vec<String>, String> {
    let parquet: Vec<Vec<&str>> = names
        .iter()
        .filter(|n| n.ends_with(".parquet"))
        .map(|n| n.split('/').collect::<Vec<_>>())
        .filter(|parts| parts.len() >= 2)
        .collect();
    let configs: BTreeSet<String> = parquet.iter().map(|p| p[0].to_string()).collect();
    if configs.is_empty() {
        return Err("the parquet conversion holds no parquet files".into());
    }
    let config = match &ds.config {
        Some(c) if configs.contains(c) => c.clone(),
        Some(c) => {
            return Err(format!(
                "no config `{c}` (configs: {}); choose one with --dataset-name",
                list(&configs)
            ))
        }
        None if configs.contains("default") => "default".into(),
        None if configs.len() == 1 => configs.iter().next().cloned().unwrap_or_default(),
        None => {
            return Err(format!(
                "the dataset has several configs ({}); choose one with --dataset-name",
                list(&configs)
            ))
        }
    };
    let mut splits = BTreeSet::new();
    let mut chosen = Vec::new();
    for parts in parquet.iter().filter(|p| p[0] == config) {
        let split = match parts.len() {
            2 => {
                let stem = parts[1].trim_end_matches(".parquet");
                let split = stem.rsplit('-').next().unwrap_or(stem);
                split.to_string()
            }
            _ => parts[1].trim_start_matches("partial-").to_string(),
        };
        if split == ds.split {
            chosen.push(parts.join("/"));
        }
        splits.insert(split);
    }
    if chosen.is_empty() {
        return Err(format!(
            "config `{config}` has no split `{}` (splits: {}); choose one with --dataset-split",
            ds.split,
            list(&splits)
        ));
    }
    chosen.sort();
    Ok(chosen)
}

/// Whether the path of a data file names `split`, by the patterns `datasets` uses to assign data
/// files to splits (`train-00000-of-00002.parquet`, `data/train/x.parquet`, `my_train.parquet`).
fn names_split(path: &str, split: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.split('.').next().unwrap_or(file);
    parts.contains(&split)
        || stem
            .split(['-', '_', ' '])
            .any(|word| word.eq_ignore_ascii_case(split))
}

const SPLIT_WORDS: [&str; 6] = ["train", "test", "validation", "valid", "dev", "eval"];

/// Picks the files of `ds` among a repo's own parquet files.
fn choose_native(names: &[String], ds: &HubDataset) -> Result<Vec<String>, String> {
    let parquet: Vec<&String> = names.iter().filter(|n| n.ends_with(".parquet")).collect();
    if parquet.is_empty() {
        let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
        return Err(format!(
            "no parquet files: no `{CONVERTED}` branch and no .parquet file in `main` (files: \
             {}{}); download the dataset and pass a local .jsonl/.parquet/.txt path",
            shown.join(", "),
            if names.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    let in_config: Vec<&String> = match &ds.config {
        Some(c) => parquet
            .iter()
            .copied()
            .filter(|n| n.split('/').rev().skip(1).any(|d| d == c))
            .collect(),
        None => parquet.clone(),
    };
    if in_config.is_empty() {
        return Err(format!(
            "no parquet file under a folder named `{}` (parquet files: {})",
            ds.config.as_deref().unwrap_or_default(),
            parquet
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut chosen: Vec<String> = in_config
        .iter()
        .filter(|n| names_split(n, &ds.split))
        .map(|n| n.to_string())
        .collect();
    // Files that name no split at all are the train split (as in `datasets`).
    if chosen.is_empty()
        && ds.split == "train"
        && !in_config
            .iter()
            .any(|n| SPLIT_WORDS.iter().any(|w| names_split(n, w)))
    {
        chosen = in_config.iter().map(|n| n.to_string()).collect();
    }
    if chosen.is_empty() {
        return Err(format!(
            "no parquet file for split `{}` (parquet files: {}); choose one with --dataset-split",
            ds.split,
            in_config
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    chosen.sort();
    Ok(chosen)
}

/// The files of `ds` from the newest cached snapshot, converted branch first, without the network.
fn from_cache(ds: &HubDataset, opts: &HubOptions) -> Result<Vec<PathBuf>, String> {
    let root = opts
        .cache_dir
        .join(format!("datasets--{}", ds.repo.replace('/', "--")));
    let mut why = Vec::new();
    for (rev, choose) in [
        (
            CONVERTED,
            choose_converted as fn(&[String], &HubDataset) -> _,
        ),
        ("main", choose_native),
    ] {
        let Ok(commit) = std::fs::read_to_string(root.join("refs").join(rev)) else {
            continue;
        };
        let snapshot = root.join("snapshots").join(commit.trim());
        let mut names = Vec::new();
        walk(&snapshot, "", &mut names);
        match choose(&names, ds) {
            Ok(files) if files.iter().all(|f| snapshot.join(f).is_file()) => {
                return Ok(files.iter().map(|f| snapshot.join(f)).collect())
            }
            Ok(_) => why.push(format!("the cached `{rev}` snapshot lacks some files")),
            Err(e) => why.push(format!("cached `{rev}`: {e}")),
        }
    }
    if why.is_empty() {
        why.push(format!("nothing of it is in the cache {}", root.display()));
    }
    Err(why.join("; "))
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if e.path().is_dir() {
            walk(&e.path(), &rel, out);
        } else {
            out.push(rel);
        }
    }
}

/// A split name with an optional row slice, as `datasets` writes them: `train`, `train[:1%]`,
/// `train[1000:2000]`, `test[-10%:]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSpec {
    /// The split.
    pub name: String,
    /// Start of the slice, if any.
    pub start: Option<Bound>,
    /// End of the slice (exclusive), if any.
    pub end: Option<Bound>,
}

/// One end of a [`SplitSpec`] slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// A row index; negative counts from the end.
    Rows(i64),
    /// A percentage of the rows; negative counts from the end.
    Percent(f64),
}

impl std::str::FromStr for SplitSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("split {s:?}: {why} (expected e.g. `train`, `train[:1%]`, `train[100:200]`)")
        };
        let Some((name, rest)) = s.split_once('[') else {
            if s.trim().is_empty() {
                return Err(bad("empty"));
            }
            return Ok(Self {
                name: s.trim().into(),
                start: None,
                end: None,
            });
        };
        let inner = rest
            .strip_suffix(']')
            .ok_or_else(|| bad("no closing `]`"))?;
        let (a, b) = inner
            .split_once(':')
            .ok_or_else(|| bad("no `:` in the slice"))?;
        let bound = |t: &str| -> Result<Option<Bound>, String> {
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            if let Some(p) = t.strip_suffix('%') {
                let p: f64 = p.trim().parse().map_err(|_| bad("bad percentage"))?;
                return Ok(Some(Bound::Percent(p)));
            }
            t.parse()
                .map(|r| Some(Bound::Rows(r)))
                .map_err(|_| bad("bad row index"))
        };
        if name.trim().is_empty() {
            return Err(bad("no split name"));
        }
        Ok(Self {
            name: name.trim().into(),
            start: bound(a)?,
            end: bound(b)?,
        })
    }
}

impl SplitSpec {
    /// The row range `[start, end)` of a split of `n` rows (percentages round to the closest
    /// row, as in `datasets`).
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        let at = |b: Option<Bound>, default: usize| -> usize {
            let i = match b {
                None => return default,
                Some(Bound::Rows(r)) => r as f64,
                Some(Bound::Percent(p)) => (n as f64 * p / 100.0).round(),
            };
            let i = if i < 0.0 { n as f64 + i } else { i };
            i.clamp(0.0, n as f64) as usize
        };
        let start = at(self.start, 0);
        start..at(self.end, n).max(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let opts = HubOptions {
            endpoint: "https://huggingface.co".into(),
            cache_dir: PathBuf::from("/tmp/hub"),
            token: Some("hf_secret123".into()),
            offline: false,
        };
        let shown = format!("{opts:?}");
        assert!(
            !shown.contains("hf_secret123") && shown.contains("[redacted]"),
            "{shown}"
        );
    }

    /// An endpoint that declares a 1 GiB listing and streams spaces: refused at the bound, with
    /// the reason, instead of reading it all.
    #[test]
    fn endless_listings_stop_at_the_bound() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            content-length: 1073741824\r\n\r\n";
                let chunk = vec![b' '; 1 << 16];
                if stream.write_all(head.as_bytes()).is_err() {
                    continue;
                }
                while stream.write_all(&chunk).is_ok() {}
            }
        });
        let cache = tempfile::tempdir().unwrap();
        let opts = HubOptions {
            endpoint,
            cache_dir: cache.path().to_path_buf(),
            token: None,
            offline: false,
        };
        let err = parquet_files(&ds(None, "train"), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 33554432 bytes"), "{err}");
    }

    fn ds(config: Option<&str>, split: &str) -> HubDataset {
        HubDataset {
            repo: "o/n".into(),
            config: config.map(Into::into),
            split: split.into(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_parse_and_slice_like_datasets() {
        let s: SplitSpec = "train[:1%]".parse().unwrap();
        assert_eq!(s.name, "train");
        assert_eq!(s.range(1000), 0..10);
        assert_eq!(s.range(149), 0..1);
        let s: SplitSpec = "test[10:-10]".parse().unwrap();
        assert_eq!(s.range(100), 10..90);
        assert_eq!(s.range(15), 10..10);
        let s: SplitSpec = "validation[-25%:]".parse().unwrap();
        assert_eq!(s.range(8), 6..8);
        assert_eq!("train".parse::<SplitSpec>().unwrap().range(5), 0..5);
        for bad in ["", "train[", "train[1]", "train[a:]", "[:5]", "train[:x%]"] {
            let err = bad.parse::<SplitSpec>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn converted_layout_picks_config_and_split() {
        let files = names(&[
            "default/train/0001.parquet",
            "default/train/0000.parquet",
            "default/test/0000.parquet",
            "en/partial-train/0000.parquet",
            "old/dataset-validation.parquet",
            "README.md",
        ]);
        assert_eq!(
            choose_converted(&files, &ds(None, "train")).unwrap(),
            names(&["default/train/0000.parquet", "default/train/0001.parquet"])
        );
        assert_eq!(
            choose_converted(&files, &ds(Some("en"), "train")).unwrap(),
            names(&["en/partial-train/0000.parquet"])
        );
        assert_eq!(
            choose_converted(&files, &ds(Some("old"), "validation")).unwrap(),
            names(&["old/dataset-validation.parquet"])
        );
        let err = choose_converted(&files, &ds(None, "dev")).unwrap_err();
        assert!(
            err.contains("no split `dev` (splits: test, train)"),
            "{err}"
        );
        let err = choose_converted(&files, &ds(Some("fr"), "train")).unwrap_err();
        assert!(err.contains("configs: default, en, old"), "{err}");
        let no_default = names(&["a/train/0000.parquet", "b/train/0000.parquet"]);
        let err = choose_converted(&no_default, &ds(None, "train")).unwrap_err();
        assert!(err.contains("several configs (a, b)"), "{err}");
    }

    #[test]
    fn native_layout_matches_split_names() {
        let files = names(&[
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/test-00000-of-00001.parquet",
            "README.md",
        ]);
        assert_eq!(choose_native(&files, &ds(None, "train")).unwrap().len(), 2);
        assert_eq!(
            choose_native(&files, &ds(None, "test")).unwrap(),
            names(&["data/test-00000-of-00001.parquet"])
        );
        assert!(choose_native(&files, &ds(None, "validation")).is_err());
        // No split keyword anywhere: everything is train.
        let plain = names(&["shard_a.parquet", "shard_b.parquet"]);
        assert_eq!(choose_native(&plain, &ds(None, "train")).unwrap().len(), 2);
        let err =
            choose_native(&names(&["README.md", "data.csv"]), &ds(None, "train")).unwrap_err();
        assert!(
            err.contains("no parquet files") && err.contains("data.csv"),
            "{err}"
        );
    }
}
