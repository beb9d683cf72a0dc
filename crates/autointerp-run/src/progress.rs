//! What a run tells its caller while it works, and how the caller stops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use autointerp_client::Usage;
use tokio::sync::watch;

use crate::Tally;

/// Something that happened in a run, for a progress bar or a log.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A message for the user (a skipped control, latents without an explanation).
    Notice(&'a str),
    /// A model is being loaded into this process (seconds to minutes).
    Loading(&'a str),
    /// The cache stage has run the model over `tokens_done` of `tokens_total` tokens.
    Caching {
        /// Tokens done (resumed ones included).
        tokens_done: usize,
        /// Tokens to cache.
        tokens_total: usize,
    },
    /// A phase starts: `latents` latents to go through, with `label` saying what is done to
    /// them (`explaining and scoring`, `random control`).
    PhaseStarted {
        /// What the phase does.
        label: &'a str,
        /// Latents planned.
        latents: usize,
    },
    /// One latent is finished (its files written, or its failures logged).
    LatentFinished {
        /// The phase so far.
        tally: &'a Tally,
        /// Tokens and cost of the whole command so far.
        usage: &'a Usage,
    },
    /// Latents skipped for having too few activating examples.
    Skipped(usize),
    /// The phase is over.
    PhaseFinished {
        /// What it did.
        tally: &'a Tally,
    },
}

/// Receives a run's [`Event`]s. `()` ignores them; a closure `Fn(Event<'_>)` is a `Progress`.
pub trait Progress: Send + Sync {
    /// Called from the run's task; should return quickly.
    fn event(&self, event: Event<'_>);
}

impl Progress for () {
    fn event(&self, _: Event<'_>) {}
}

impl<F: Fn(Event<'_>) + Send + Sync> Progress for F {
    fn event(&self, event: Event<'_>) {
        self(event);
    }
}

/// Stops a run from outside: [`Cancel::stop`] takes no new latents and lets those in flight
/// finish; [`Cancel::abort`] also drops those in flight (nothing of theirs is written). Either
/// way what is written is complete, and the same run started again resumes. Clones share one
/// state (the CLI trips it from its Ctrl-C handler).
#[derive(Debug, Clone)]
pub struct Cancel {
    stop: Arc<AtomicBool>,
    abort: Arc<watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A token nobody has tripped.
    pub fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            abort: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Takes no new latents.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Takes no new latents and aborts those in flight.
    pub fn abort(&self) {
        self.stop();
        self.abort.send_replace(true);
    }

    /// Whether [`Cancel::stop`] (or [`Cancel::abort`]) was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    pub(crate) fn aborted(&self) -> watch::Receiver<bool> {
        self.abort.subscribe()
    }
}

/// Progress as log lines, for when no bar can be drawn (stderr a log file, a batch job): one line
/// per tenth of the way, so that a long run's log shows it is alive and how fast it goes.
///
/// ```
/// let mut lines = autointerp_run::TenthLines::new("cache");
/// assert_eq!(lines.line(0, 100), None);
/// assert!(lines.line(10, 100).unwrap().starts_with("cache: 10% (10/100, "));
/// assert_eq!(lines.line(15, 100), None);
/// ```
#[derive(Debug)]
pub struct TenthLines {
    what: String,
    next: u64,
    started: std::time::Instant,
    /// The position at the first call: work resumed from a checkpoint is not this run's pace.
    first: Option<u64>,
}

impl TenthLines {
    /// Lines prefixed with `what`.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            next: 1,
            started: std::time::Instant::now(),
            first: None,
        }
    }

    /// The line to log at `pos` of `len`, when it has passed the next tenth: the percentage,
    /// the position and the pace since the first call.
    pub fn line(&mut self, pos: u64, len: u64) -> Option<String> {
        let first = *self.first.get_or_insert(pos);
        if len == 0 || pos * 10 < self.next * len {
            return None;
        }
        while self.next * len <= pos * 10 {
            self.next += 1;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let done = pos - first.min(pos);
        let rate = done as f64 / secs.max(1e-9);
        // Slow items (latents) read better as seconds each.
        let pace = if rate >= 1.0 {
            format!("{rate:.0}/s")
        } else {
            format!("{:.1} s each", secs / done.max(1) as f64)
        };
        Some(format!(
            "{}: {:.0}% ({pos}/{len}, {pace})",
            self.what,
            100.0 * pos as f64 / len as f64
        ))
    }
}
