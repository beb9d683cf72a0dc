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
