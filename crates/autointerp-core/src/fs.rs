//! Atomic file writes: a file is either its old contents or all of its new ones, even after a
//! crash, so a reader never sees half a file.
//!
//! ```
//! use std::io::Write;
//! use autointerp_core::fs::{write_atomic, AtomicFile};
//!
//! # fn main() -> autointerp_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! write_atomic(&dir.path().join("small.json"), b"{}")?;
//!
//! // Large files are streamed into a temporary file that `commit` renames into place.
//! let mut file = AtomicFile::create(&dir.path().join("big.txt"))?;
//! file.write_all(b"many lines\n").unwrap();
//! file.commit()?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that
/// `path` holds either its old contents or all of the new ones, even after a crash. Creates the
/// folder if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    file.commit()
}

/// A file written in pieces and replaced atomically: the bytes go to `.<name>.tmp<pid>` beside
/// `path`, and [`AtomicFile::commit`] syncs that file and renames it over `path`. Dropped
/// without a commit, the temporary file is removed and `path` is untouched.
///
/// Writes are buffered.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once committed.
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path`, creating its folder if needed.
    pub fn create(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let file = File::create(&tmp).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The file this will replace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and syncs everything written, then renames the temporary file over the target.
    pub fn commit(mut self) -> Result<()> {
        let result = (|| {
            let Some(out) = self.out.take() else {
                return Ok(());
            };
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&self.tmp, &self.path)
        })();
        // On failure, `drop` removes the temporary file.
        result.map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().map_or(Ok(0), |o| o.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.write_all(buf),
            None => Err(std::io::Error::other("write after commit")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().map_or(Ok(()), |o| o.flush())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Not committed (or the commit failed): leave the target as it was.
        if self.out.take().is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(&dir.path().join("sub")), vec!["a.json"]);
    }

    #[test]
    fn an_uncommitted_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, b"old").unwrap();
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"half of the new").unwrap();
        assert_eq!(names(dir.path()).len(), 2);
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["a.txt"]);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir_all(path.join("inner")).unwrap();
        let err = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("taken"), "{err}");
        assert_eq!(names(dir.path()), vec!["taken"]);
    }
}
