//! `autointerp report`: summary tables, plots and an HTML browser for a results folder;
//! `autointerp export`: its explanations and scores for Neuronpedia, and a SAEBench-style summary.

use std::path::PathBuf;

use anyhow::{Context, Result};
use autointerp_report::{generate_report, Bootstrap, NeuronpediaOptions, ReportConfig};
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

/// `autointerp export`.
#[derive(Debug, clap::Subcommand)]
pub enum ExportArgs {
    /// Explanations (and score rows) as Neuronpedia's bulk-import files,
    /// `<model>/<source>/explanations/batch-<n>.jsonl.gz`.
    Neuronpedia {
        /// The results folder (`results/<name>` of `autointerp run`).
        results_dir: PathBuf,
        /// Neuronpedia's model id, e.g. `gemma-2-2b`.
        #[arg(long)]
        model_id: String,
        /// Neuronpedia's source id of each hook point: `{layer}` is its layer number,
        /// `{hookpoint}` its name, e.g. `{layer}-gemmascope-res-16k`.
        #[arg(long, default_value = "")]
        source_template: String,
        /// The source id of one hook point (`layers.12=12-res-16k`), before the template.
        #[arg(long, value_parser = key_value)]
        source: Vec<(String, String)>,
        /// `explanationModelName` when run_config.json names no explainer model.
        #[arg(long)]
        explanation_model: Option<String>,
        /// Leave out the score rows.
        #[arg(long)]
        no_scores: bool,
        /// Where to write [default: RESULTS_DIR/neuronpedia].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Per scorer: the mean over latents with its 95 % bootstrap CI, as SAEBench names them
    /// (`autointerp_score`, `autointerp_std_dev`), failures and the random control.
    Saebench {
        /// The results folder.
        results_dir: PathBuf,
        /// Where to write [default: RESULTS_DIR/saebench.json].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected HOOKPOINT=SOURCE")?;
    Ok((k.into(), v.into()))
}

pub fn export(args: ExportArgs) -> Result<()> {
    match args {
        ExportArgs::Neuronpedia {
            results_dir,
            model_id,
            source_template,
            source,
            explanation_model,
            no_scores,
            out,
        } => {
            let mut opts =
                NeuronpediaOptions::new(model_id, source_template).with_scores(!no_scores);
            for (hook, id) in source {
                opts = opts.with_source(hook, id);
            }
            if let Some(m) = explanation_model {
                opts = opts.with_explanation_model_name(m);
            }
            if let Some(out) = out {
                opts = opts.with_out_dir(out);
            }
            let done = autointerp_report::export_neuronpedia(&results_dir, &opts)?;
            println!(
                "{} explanations and {} scores of {} latents ({} without an explanation) in {}",
                done.n_explanations,
                done.n_scores,
                done.n_latents,
                done.n_without_explanation,
                done.out_dir.display()
            );
        }
        ExportArgs::Saebench { results_dir, out } => {
            let summary = autointerp_report::saebench_summary(&results_dir, &Bootstrap::default())?;
            let out = out.unwrap_or_else(|| results_dir.join("saebench.json"));
            summary
                .write_json(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", out.display());
        }
    }
    Ok(())
}
