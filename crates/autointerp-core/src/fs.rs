//! Atomic file writes: a file is either its old contents or all of its new ones, even after a
//! crash, so a reader never sees half a file. And [`DirLock`], which keeps a second process out of
//! a folder that one is writing.
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

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, Write};
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

/// `.<name>.tmp<digits>`: what [`AtomicFile`] writes before its rename.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".tmp")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporary files that interrupted atomic writes left in `dir` (not below it);
/// returns how many. A missing folder has none.
///
/// Call it only while holding the folder's [`DirLock`]: the temporary files of a live writer
/// look the same.
pub fn remove_temp_files(dir: &Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        if entry.path().is_file() && name.to_str().is_some_and(is_temp_name) {
            std::fs::remove_file(entry.path()).map_err(|source| Error::Io {
                path: entry.path(),
                source,
            })?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// An exclusive lock on a folder that one autointerp command writes (a cache, a results
/// folder): a second command on the same folder fails at once with [`Error::Locked`], naming
/// the process that holds it, instead of deleting that process's temporary and spill files.
///
/// The lock is the operating system's advisory lock on `<dir>/.autointerp.lock`, so it ends
/// with the process however it ends: a `kill -9` leaves no stale lock behind. The file holds
/// the holder's pid and host, for the error message. Dropping the lock removes the file.
/// Locks are per process *and* per acquisition: the same process cannot take one folder's lock
/// twice.
///
/// ```
/// use autointerp_core::fs::DirLock;
///
/// # fn main() -> autointerp_core::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let lock = DirLock::acquire(dir.path())?;
/// let err = DirLock::acquire(dir.path()).unwrap_err();
/// assert!(err.to_string().contains(&std::process::id().to_string()));
/// drop(lock);
/// DirLock::acquire(dir.path())?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    /// Holds the lock while open.
    file: File,
}

impl DirLock {
    /// Name of the lock file in the locked folder.
    pub const FILE_NAME: &'static str = ".autointerp.lock";

    /// Takes the lock on `dir`, creating the folder if needed.
    ///
    /// # Errors
    /// [`Error::Locked`] when another holder has it; [`Error::Io`] naming the lock file when it
    /// cannot be created or locked.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::FILE_NAME);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    // The holder writes its name just after locking; it may not have yet.
                    let _ = file.read_to_string(&mut holder);
                    return Err(Error::Locked {
                        path,
                        holder: describe_holder(&holder),
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
            }
            // A holder that ended between our open and our lock removed the file we opened:
            // that lock guards nothing another process can find, so take the lock again.
            if !is_current(&file, &path) {
                continue;
            }
            let me = Holder::this_process();
            let json = serde_json::to_vec(&me).unwrap_or_default();
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            file.write_all(&json).map_err(io)?;
            return Ok(Self { path, file });
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Removed while still locked, so that no one locks a file about to vanish unnoticed
        // (see `is_current`); without that check (off Unix) the file stays.
        if cfg!(unix) {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// What the lock file holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Holder {
    pid: u32,
    host: String,
}

impl Holder {
    fn this_process() -> Self {
        Self {
            pid: std::process::id(),
            host: hostname(),
        }
    }
}

/// The holder as the error message names it.
fn describe_holder(contents: &str) -> String {
    match serde_json::from_str::<Holder>(contents) {
        Ok(h) => {
            let me = Holder::this_process();
            let this = if h.pid == me.pid && h.host == me.host {
                " (this process)"
            } else {
                ""
            };
            format!("process {} on host {}{this}", h.pid, h.host)
        }
        Err(_) => "another process (it has not written its pid yet)".into(),
    }
}

fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn is_current(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Off Unix the lock file is never removed, so the open file is always the current one.
#[cfg(not(unix))]
fn is_current(_: &File, _: &Path) -> bool {
    true
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

    #[test]
    fn a_locked_folder_names_its_holder_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let lock_file = dir.path().join(DirLock::FILE_NAME);
        assert!(lock_file.is_file());
        let err = DirLock::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Locked { .. }), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id()))
                && msg.contains("this process")
                && msg.contains(DirLock::FILE_NAME),
            "{msg}"
        );
        // From another thread too: the lock is per acquisition, not per thread.
        let path = dir.path().to_path_buf();
        assert!(std::thread::spawn(move || DirLock::acquire(&path).is_err())
            .join()
            .unwrap());
        drop(lock);
        assert!(!lock_file.exists(), "the lock file goes with the lock");
        let again = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(again.path(), lock_file);
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken() {
        // A killed holder leaves its file, but the OS has dropped its lock.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DirLock::FILE_NAME),
            r#"{"pid": 1, "host": "elsewhere"}"#,
        )
        .unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let held = std::fs::read_to_string(lock.path()).unwrap();
        assert!(held.contains(&std::process::id().to_string()), "{held}");
    }

    #[test]
    fn temp_names_and_their_removal() {
        assert!(is_temp_name(".layers.0_latent3.txt.tmp1234"));
        assert!(!is_temp_name("layers.0_latent3.txt"));
        assert!(!is_temp_name(".hidden.tmp"));
        assert!(!is_temp_name(".x.tmpabc"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".a.json.tmp99"), b"half").unwrap();
        std::fs::write(dir.path().join("a.json"), b"{}").unwrap();
        assert_eq!(remove_temp_files(dir.path()).unwrap(), 1);
        assert_eq!(names(dir.path()), vec!["a.json"]);
        assert_eq!(remove_temp_files(&dir.path().join("missing")).unwrap(), 0);
    }
}
