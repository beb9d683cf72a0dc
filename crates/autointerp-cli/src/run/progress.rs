//! The run engine's events drawn as progress bars (or, when stderr is not a terminal, as a line
//! per tenth of a phase).

use std::sync::Mutex;
use std::time::Duration;

use autointerp_run::TenthLines;
use autointerp_run::{Event, Progress};
use indicatif::ProgressBar;

use crate::common::{bar, log_tenth, spinner};

/// The bar of the phase in progress, and a spinner while a model loads.
#[derive(Default)]
pub struct Bars {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bar: Option<(ProgressBar, TenthLines)>,
    spinner: Option<ProgressBar>,
}

impl Bars {
    /// Removes what is still drawn.
    pub fn clear(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bar, _)) = state.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(s) = state.spinner.take() {
            s.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn event(&self, event: Event<'_>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(event, Event::Loading(_)) {
            if let Some(s) = state.spinner.take() {
                s.finish_and_clear();
            }
        }
        match event {
            Event::Notice(text) => eprintln!("{text}"),
            Event::Loading(what) => {
                if let Some(s) = state.spinner.replace(spinner(what)) {
                    s.finish_and_clear();
                }
            }
            Event::Caching {
                tokens_done,
                tokens_total,
            } => {
                let (b, lines) = state.bar.get_or_insert_with(|| {
                    (bar(tokens_total as u64, "tokens"), TenthLines::new("cache"))
                });
                b.set_position(tokens_done as u64);
                log_tenth(lines, b, "tokens");
            }
            Event::PhaseStarted { label, latents } => {
                let b = bar(latents as u64, "latents");
                b.enable_steady_tick(Duration::from_millis(500));
                b.set_message(label.to_string());
                state.bar = Some((b, TenthLines::new("latents")));
            }
            Event::LatentFinished { tally, usage } => {
                if let Some((b, lines)) = &mut state.bar {
                    b.inc(1);
                    let tokens = usage.prompt_tokens + usage.completion_tokens;
                    let cost = usage
                        .cost
                        .map_or_else(String::new, |c| format!(" · ${c:.4}"));
                    let status = format!("{} failed · {tokens} tokens{cost}", tally.failed);
                    log_tenth(lines, b, &status);
                    b.set_message(status);
                }
            }
            Event::Skipped(n) => {
                if let Some((b, _)) = &state.bar {
                    b.inc(n as u64);
                }
            }
            Event::PhaseFinished { .. } => {
                if let Some((b, _)) = state.bar.take() {
                    b.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}
