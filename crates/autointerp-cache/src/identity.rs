//! Cheap digests of the files behind a model or a sparse-coder source, so that a checkpoint is
//! resumed only by a run over the same weights.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Bytes read from each end of a file.
const END_BYTES: u64 = 1 << 20;
/// Folder depth walked: a sparsify or GemmaScope repo nests coders up to four levels deep.
const MAX_DEPTH: usize = 6;
/// Files digested under one folder; past that the count stands for the rest.
const MAX_FILES: usize = 10_000;

/// FNV-1a, 64 bit: a stable hash (std's `DefaultHasher` may change between Rust releases, and a
/// checkpoint must outlive a toolchain update).
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The FNV-1a offset basis.
pub(crate) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A digest of what a model or sparse-coder source (as `Model::load` and `load_coders` take it)
/// stands for, for [`crate::CacheConfig::identity`]:
/// - a local file or folder: its absolute path, then per file below it (hidden ones and those
///   deeper than six levels aside) its relative path, size, modification time, and its first
///   and last MiB, so replaced weights change it without reading them whole;
/// - a Hub repo id: the commit the local Hub cache holds for it (`refs/main`), which names its
///   files;
/// - anything else (`neurons:32`): the source as given.
///
/// Unreadable files are digested as unreadable rather than failing: this only decides whether
/// a checkpoint is resumed, and loading the weights reports the real error.
pub fn source_identity(source: &str) -> String {
    let path = Path::new(source);
    if path.exists() {
        let root = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut files = Vec::new();
        walk(&root, 0, &mut files);
        files.sort();
        let mut h = fnv1a(root.to_string_lossy().bytes(), FNV_START);
        let n = files.len();
        for file in files.iter().take(MAX_FILES) {
            let rel = file.strip_prefix(&root).unwrap_or(file);
            h = fnv1a(rel.to_string_lossy().bytes(), h);
            h = digest_file(file, h);
        }
        return format!("{source}: {n} files {h:016x}");
    }
    if autointerp_core::is_hub_repo_id(source) {
        let cache = hf_hub::Cache::from_env();
        let refs = cache
            .path()
            .join(hf_hub::Repo::model(source.to_string()).folder_name())
            .join("refs")
            .join("main");
        let commit = std::fs::read_to_string(refs).unwrap_or_else(|_| "not cached".into());
        return format!("{source}@{}", commit.trim());
    }
    source.to_string()
}

/// The files below `dir` (or `dir` itself when it is a file), skipping hidden entries.
fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>) {
    if dir.is_file() {
        files.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if files.len() > MAX_FILES {
            return;
        }
        let hidden = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with('.'));
        let path = entry.path();
        if hidden {
            continue;
        }
        if path.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, depth + 1, files);
            }
        } else {
            files.push(path);
        }
    }
}

/// Adds a file's size, modification time and first and last [`END_BYTES`] to `h`.
fn digest_file(path: &Path, mut h: u64) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return fnv1a(*b"unreadable", h);
    };
    let len = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    h = fnv1a(len.to_le_bytes(), h);
    h = fnv1a(mtime.to_le_bytes(), h);
    let Ok(mut file) = std::fs::File::open(path) else {
        return fnv1a(*b"unreadable", h);
    };
    let mut buf = Vec::with_capacity(END_BYTES as usize);
    let mut read_at = |offset: u64, h: u64| -> u64 {
        buf.clear();
        let read = file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| (&mut file).take(END_BYTES).read_to_end(&mut buf));
        match read {
            Ok(_) => fnv1a(buf.iter().copied(), h),
            Err(_) => fnv1a(*b"unreadable", h),
        }
    };
    h = read_at(0, h);
    if len > END_BYTES {
        h = read_at(len.saturating_sub(END_BYTES).max(END_BYTES), h);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_weights_change_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let sae = dir.path().join("layers.0");
        std::fs::create_dir_all(&sae).unwrap();
        std::fs::write(sae.join("cfg.json"), "{}").unwrap();
        std::fs::write(sae.join("sae.safetensors"), vec![1u8; 3 << 20]).unwrap();
        let source = dir.path().to_str().unwrap();
        let a = source_identity(source);
        assert_eq!(a, source_identity(source), "stable");
        // Same size and modification time, a changed byte in the last MiB.
        let weights = sae.join("sae.safetensors");
        let mtime = std::fs::metadata(&weights).unwrap().modified().unwrap();
        let mut bytes = vec![1u8; 3 << 20];
        bytes[(3 << 20) - 10] = 2;
        std::fs::write(&weights, &bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&weights)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let b = source_identity(source);
        assert_ne!(a, b);
        // Hidden entries (a checkpoint's `.cache`) are not weights.
        std::fs::create_dir_all(dir.path().join(".cache")).unwrap();
        std::fs::write(dir.path().join(".cache/x"), "y").unwrap();
        assert_eq!(b, source_identity(source));
        assert_eq!(source_identity("neurons:32"), "neurons:32");
    }
}
