//! Hub datasets through `hf-hub` against a local fake Hub: listing, download, cache, offline
//! reuse, and the errors users meet (unknown id, no parquet files, HTTP errors).

#[path = "support/fake_hub.rs"]
mod fake_hub;

use std::path::{Path, PathBuf};

use autointerp_cache::hub::{parquet_files, HubDataset, HubOptions};
use autointerp_cache::tokens::read_documents;
use fake_hub::FakeHub;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn opts(endpoint: &str, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: endpoint.into(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
    }
}

fn ds(repo: &str, config: Option<&str>, split: &str) -> HubDataset {
    HubDataset {
        repo: repo.into(),
        config: config.map(Into::into),
        split: split.into(),
    }
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            let n: Vec<_> = p.iter().rev().take(3).collect();
            n.iter()
                .rev()
                .map(|s| s.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

#[test]
fn converted_parquet_is_downloaded_cached_and_reused_offline() {
    let hub = FakeHub::start();
    let (snappy, zstd) = (fixture("docs.snappy.parquet"), fixture("docs.zstd.parquet"));
    hub.add(
        "acme/speeches",
        "refs/convert/parquet",
        &[
            ("default/train/0001.parquet", zstd.clone()),
            ("default/train/0000.parquet", snappy.clone()),
            ("default/test/0000.parquet", zstd.clone()),
            ("fr/train/0000.parquet", zstd.clone()),
        ],
    );
    // `main` holds the original, non-parquet files; they must not be read.
    hub.add(
        "acme/speeches",
        "main",
        &[("speeches.csv", b"text\nx\n".to_vec())],
    );
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub.url, cache.path());

    let files = parquet_files(&ds("acme/speeches", None, "train"), &o).unwrap();
    assert_eq!(
        names(&files),
        ["default/train/0000.parquet", "default/train/0001.parquet"]
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), snappy);
    assert_eq!(std::fs::read(&files[1]).unwrap(), zstd);
    assert!(files[0].starts_with(cache.path().join("datasets--acme--speeches")));
    let docs: Vec<String> = files
        .iter()
        .flat_map(|f| read_documents(f, "text").unwrap())
        .collect();
    assert_eq!(docs.len(), 8);
    assert!(docs[0].starts_with("The quick brown fox"), "{docs:?}");
    let seen = hub.take_seen();
    assert!(
        seen.contains(&"/api/datasets/acme/speeches/revision/refs%2Fconvert%2Fparquet".into()),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|p| p == "/datasets/acme/speeches/resolve/refs%2Fconvert%2Fparquet/default/train/0001.parquet"),
        "{seen:?}"
    );

    // A rerun lists the files again but downloads nothing.
    let again = parquet_files(&ds("acme/speeches", None, "train"), &o).unwrap();
    assert_eq!(again, files);
    assert!(
        hub.take_seen().iter().all(|p| p.starts_with("/api/")),
        "a cached file was downloaded again"
    );

    // Configs and splits by name.
    let fr = parquet_files(&ds("acme/speeches", Some("fr"), "train"), &o).unwrap();
    assert_eq!(names(&fr), ["fr/train/0000.parquet"]);
    let err = parquet_files(&ds("acme/speeches", None, "validation"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme/speeches")
            && err.contains(&format!(
                "{}/api/datasets/acme/speeches/revision/refs%2Fconvert%2Fparquet",
                hub.url
            ))
            && err.contains("no split `validation` (splits: test, train)"),
        "{err}"
    );

    // Unreachable Hub (nothing listens on port 9), or offline mode: the cache answers.
    let down = opts("http://127.0.0.1:9", cache.path());
    assert_eq!(
        parquet_files(&ds("acme/speeches", None, "train"), &down).unwrap(),
        files
    );
    let offline = HubOptions {
        offline: true,
        ..o.clone()
    };
    assert_eq!(
        parquet_files(&ds("acme/speeches", None, "train"), &offline).unwrap(),
        files
    );
    let err = parquet_files(&ds("acme/other", None, "train"), &down)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme/other")
            && err.contains("http://127.0.0.1:9/api/datasets/acme/other")
            && err.contains("cannot be reached")
            && err.contains("datasets--acme--other"),
        "{err}"
    );
}

#[test]
fn a_dataset_that_is_parquet_already_is_read_from_main() {
    let hub = FakeHub::start();
    hub.add(
        "acme/native",
        "main",
        &[
            ("README.md", b"# native".to_vec()),
            (
                "data/train-00000-of-00001.parquet",
                fixture("docs.zstd.parquet"),
            ),
            (
                "data/test-00000-of-00001.parquet",
                fixture("docs.snappy.parquet"),
            ),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    // A token (private or gated datasets) goes with every request.
    let with_token = HubOptions {
        token: Some("hf_secret".into()),
        ..opts(&hub.url, cache.path())
    };
    let files = parquet_files(&ds("acme/native", None, "test"), &with_token).unwrap();
    let auth = hub.take_auth();
    assert!(
        auth.len() >= 3 && auth.iter().all(|a| a == "Bearer hf_secret"),
        "{auth:?}"
    );
    assert_eq!(files.len(), 1);
    assert!(
        files[0].ends_with("data/test-00000-of-00001.parquet"),
        "{files:?}"
    );
    assert_eq!(read_documents(&files[0], "text").unwrap().len(), 4);
}

#[test]
fn unknown_ids_missing_parquet_and_http_errors_name_the_id_and_url() {
    let hub = FakeHub::start();
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub.url, cache.path());

    let err = parquet_files(&ds("acme/nope", None, "train"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme/nope")
            && err.contains(&format!("{}/api/datasets/acme/nope/revision/main", hub.url))
            && err.contains("HTTP 404")
            && err.contains("HF_TOKEN"),
        "{err}"
    );

    hub.add(
        "acme/csv",
        "main",
        &[("data.csv", b"text\n".to_vec()), ("README.md", vec![])],
    );
    let err = parquet_files(&ds("acme/csv", None, "train"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme/csv")
            && err.contains("/api/datasets/acme/csv/revision/main")
            && err.contains("no parquet files")
            && err.contains("data.csv"),
        "{err}"
    );

    hub.add(
        "acme/broken",
        "refs/convert/parquet",
        &[("default/train/0000.parquet", fixture("docs.snappy.parquet"))],
    );
    hub.fail_downloads(Some(500));
    let err = parquet_files(&ds("acme/broken", None, "train"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme/broken")
            && err.contains(&format!(
                "{}/datasets/acme/broken/resolve/refs%2Fconvert%2Fparquet/default/train/0000.parquet",
                hub.url
            ))
            && err.contains("HTTP 500"),
        "{err}"
    );
    hub.fail_downloads(None);
    assert_eq!(
        parquet_files(&ds("acme/broken", None, "train"), &o)
            .unwrap()
            .len(),
        1
    );
}
