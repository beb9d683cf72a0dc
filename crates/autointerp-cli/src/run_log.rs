//! `run.log` in a results folder: what `run`, `explain` and `score` did, kept beside what they
//! wrote, for the researcher who comes back to a 20-hour run the next day. It holds the command
//! line (credentials in URLs redacted), the log events at `info` and above (or what `RUST_LOG`
//! asks for), and the summary printed at the end. Each command appends, so a resumed run's log
//! follows the killed one's.
//!
//! The log file is opened only once the command knows its results folder, after the logger is
//! installed: until then the file layer writes nowhere.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::fmt::MakeWriter;

/// The open `run.log`, once a command has named it.
static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Opens (appending) `path` as this process's run log and writes the command line to it.
///
/// # Errors
/// When the file cannot be opened or written.
pub fn open(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the results folder {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the run log {}", path.display()))?;
    let argv: Vec<String> = std::env::args()
        .map(|a| autointerp_client::redact_url(&a))
        .collect();
    writeln!(
        file,
        "\n=== autointerp {} ({}): {}",
        env!("CARGO_PKG_VERSION"),
        humantime_now(),
        argv.join(" ")
    )
    .with_context(|| format!("writing the run log {}", path.display()))?;
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(())
}

/// Writes `text` to the run log, if one is open. A log that cannot be written is not worth
/// stopping a run for: the error is dropped.
pub fn write(text: &str) {
    if let Some(file) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let _ = file.write_all(text.as_bytes());
    }
}

/// Prints a line on stderr and writes it to the run log.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        eprintln!("{line}");
        $crate::run_log::write(&line);
        $crate::run_log::write("\n");
    }};
}
pub(crate) use say;

/// The `tracing` writer of the run log (see [`open`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunLog;

impl<'a> MakeWriter<'a> for RunLog {
    type Writer = RunLog;

    fn make_writer(&'a self) -> Self::Writer {
        RunLog
    }
}

impl Write for RunLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(file) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            file.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Seconds since the Unix epoch, as UTC `YYYY-MM-DD HH:MM:SS`.
fn humantime_now() -> String {
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
