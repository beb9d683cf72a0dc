//! `autointerp report`: summary tables, plots and an HTML browser for a results folder.

use std::path::PathBuf;

use anyhow::Result;
use autointerp_report::{generate_report, ReportConfig};
use autointerp_run::overrides::number;

/// `autointerp report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The results folder (`results/<name>` of `autointerp run`).
    results_dir: PathBuf,
    /// Where to write (default: `RESULTS_DIR/report`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Examples per group per latent shown in the HTML page.
    #[arg(long, default_value_t = 10, value_parser = number::<usize>)]
    max_examples: usize,
    /// Skip the PNG/SVG plots.
    #[arg(long)]
    no_plots: bool,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let mut cfg = ReportConfig::default()
        .with_plots(!args.no_plots)
        .with_max_examples(args.max_examples);
    if let Some(out) = args.out {
        cfg = cfg.with_out_dir(out);
    }
    let report = generate_report(&args.results_dir, &cfg)?;
    println!("{}", report.summary.to_text());
    println!("report: {}", report.out_dir.join("index.html").display());
    Ok(())
}
