//! `run.log` in a results folder: what `run`, `explain` and `score` did, kept beside what they
//! wrote, for the researcher who comes back to a 20-hour run the next day. It holds the command
//! line (credentials in URLs redacted), the log events a program sends it (the CLI: `info` and
//! above, or what `RUST_LOG` asks for), and the summary printed at the end. Each command
//! appends, so a resumed run's log follows the killed one's.
//!
//! A [`RunLog`] starts closed and is opened once the program knows its results folder, so that
//! a logger installed at start-up can hold it from the beginning: until then it writes nowhere.
//!
//! ```
//! use std::io::Write;
//! let dir = tempfile::tempdir()?;
//! let log = autointerp_run::RunLog::default();
//! log.write_line("dropped: not open yet");
//! log.open(&dir.path().join("run.log"), &["autointerp".into(), "run".into()])?;
//! log.write_line("12 latents done");
//! (&log).write_all(b"an event\n")?;
//! let text = std::fs::read_to_string(dir.path().join("run.log"))?;
//! assert!(text.contains(": autointerp run\n12 latents done\nan event\n"));
//! assert!(!text.contains("dropped"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Context, Result};

/// A results folder's `run.log`: cheap to clone (every clone writes to the same file), closed
/// until [`open`](Self::open)ed.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    file: Arc<Mutex<Option<File>>>,
}

impl RunLog {
    /// Opens (appending) `path` as this log and writes a header with `argv`, the command line,
    /// its credentials in URLs redacted.
    ///
    /// # Errors
    /// When the folder or the file cannot be created or written.
    pub fn open(&self, path: &Path, argv: &[String]) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the results folder {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the run log {}", path.display()))?;
        let argv: Vec<String> = argv
            .iter()
            .map(|a| autointerp_client::redact_url(a))
            .collect();
        writeln!(
            file,
            "\n=== autointerp {} ({}): {}",
            env!("CARGO_PKG_VERSION"),
            utc_now(),
            argv.join(" ")
        )
        .with_context(|| format!("writing the run log {}", path.display()))?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(())
    }

    /// Appends `line` and a newline, if the log is open. A log that cannot be written is not
    /// worth stopping a run for: the error is dropped.
    pub fn write_line(&self, line: &str) {
        let _ = (&*self).write_all(format!("{line}\n").as_bytes());
    }
}

impl Write for &RunLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(file) = self.file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            file.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Now, as UTC `YYYY-MM-DD HH:MM:SS`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
    }
}
