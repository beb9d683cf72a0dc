//! Pieces the commands share: loading models, parsing lists, progress bars.

use std::time::Duration;

use anyhow::{Context, Result};
use autointerp_core::HookPoint;
use autointerp_model::{DType, Model, Tokenizer};
use autointerp_run::TenthLines;
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

/// Hook point names (each may be a comma-separated list), checked against the model.
pub fn parse_hookpoints(list: &[String], model: &Model) -> Result<Vec<HookPoint>> {
    let hooks = model.parse_hook_points(list)?;
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

/// Logs a line per tenth of `bar`'s way (with `msg`) when the bar is hidden: stderr is not a
/// terminal.
pub fn log_tenth(lines: &mut TenthLines, bar: &ProgressBar, msg: &str) {
    let line = lines.line(bar.position(), bar.length().unwrap_or(0));
    if let Some(line) = line.filter(|_| bar.is_hidden()) {
        eprintln!("{line} {msg}");
    }
}

/// A spinner for a step of unknown length.
pub fn spinner(msg: &str) -> ProgressBar {
    let s = ProgressBar::new_spinner();
    s.set_message(msg.to_string());
    s.enable_steady_tick(Duration::from_millis(120));
    s
}
