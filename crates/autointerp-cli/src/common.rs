//! Pieces the commands share: loading models, parsing lists, progress bars.

use std::time::Duration;

use anyhow::{Context, Result};
use autointerp_core::HookPoint;
use autointerp_model::{DType, Model, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};

/// Device and precision options shared by commands that run a model.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `f32`, `bf16` or `f16`.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// Loads a model (HF folder, `.gguf` file or Hub id) and its tokenizer.
pub fn load_model(spec: &str, dev: &DeviceArgs) -> Result<(Model, Option<Tokenizer>)> {
    let device = autointerp_model::parse_device(&dev.device)?;
    let dtype: DType = dev.dtype.parse()?;
    let spinner = spinner(&format!("loading {spec}"));
    let loaded =
        Model::load(spec, device, dtype).with_context(|| format!("loading model {spec:?}"))?;
    spinner.finish_and_clear();
    Ok(loaded)
}

/// Like [`load_model`], for commands that need the tokenizer.
pub fn load_model_with_tokenizer(spec: &str, dev: &DeviceArgs) -> Result<(Model, Tokenizer)> {
    let (model, tok) = load_model(spec, dev)?;
    let tok = tok.with_context(|| {
        format!("model {spec:?} has no tokenizer (tokenizer.json or GGUF metadata)")
    })?;
    Ok((model, tok))
}

/// Parses hook point names (each may still hold a comma-separated list) and checks each against
/// the model (layer in range).
pub fn parse_hookpoints(list: &[String], model: &Model) -> Result<Vec<HookPoint>> {
    let mut hooks = Vec::new();
    let names = list.iter().flat_map(|s| s.split(','));
    for name in names.map(str::trim).filter(|s| !s.is_empty()) {
        let hook: HookPoint = name.parse()?;
        model
            .hook_dim(hook)
            .with_context(|| format!("hook point {name:?}"))?;
        if !hooks.contains(&hook) {
            hooks.push(hook);
        }
    }
    anyhow::ensure!(!hooks.is_empty(), "--hookpoints is empty");
    Ok(hooks)
}

/// A progress bar over `len` items of `unit`, on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Where a hidden bar (stderr not a terminal: a log file, a batch job) still reports: one line
/// per tenth of the way, so that a long run's log shows it is alive and how fast it goes.
#[derive(Debug)]
pub struct LogLines {
    what: String,
    next: u64,
    started: std::time::Instant,
    /// The position at the first update: work resumed from a checkpoint is not this run's pace.
    first: Option<u64>,
}

impl LogLines {
    /// Lines prefixed with `what`.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            next: 1,
            started: std::time::Instant::now(),
            first: None,
        }
    }

    /// Logs a line when `bar` is hidden and has passed the next tenth; `msg` is appended.
    pub fn update(&mut self, bar: &ProgressBar, msg: &str) {
        let (pos, len) = (bar.position(), bar.length().unwrap_or(0));
        let first = *self.first.get_or_insert(pos);
        if !bar.is_hidden() || len == 0 || pos * 10 < self.next * len {
            return;
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
        eprintln!(
            "{}: {:.0}% ({pos}/{len}, {pace}) {msg}",
            self.what,
            100.0 * pos as f64 / len as f64
        );
    }
}

/// A spinner for a step of unknown length.
pub fn spinner(msg: &str) -> ProgressBar {
    let s = ProgressBar::new_spinner();
    s.set_message(msg.to_string());
    s.enable_steady_tick(Duration::from_millis(120));
    s
}
