//! `autointerp demo`: the whole pipeline, offline, on SmolLM2-135M-Instruct and the State of the
//! Union corpus: train a small TopK SAE on an early layer (once), cache its latents, explain and
//! score a few of them with the in-process engine (plus the random-explanation control), and
//! write the report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use autointerp_core::assets::cache_root;
use autointerp_run::overrides::number;

use crate::common::{load_model_with_tokenizer, DeviceArgs};
use crate::run::{run_with_config, ExplainerKind, Provider, RunConfig, ScorerKind};
use crate::train::{train, TrainArgs};

/// `autointerp demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Hook point of the SAE. Early layers have the most token-like latents, which the token
    /// explainer and the two scorers can tell apart from the control; at `layers.15` a
    /// 100k-token SAE's latents are too mixed for 20 latents to show it.
    #[arg(long, default_value = "layers.1", visible_alias = "hookpoints")]
    hookpoint: String,
    /// Tokens the SAE trains on (only when no SAE is cached yet).
    #[arg(long, default_value_t = 100_000, value_parser = number::<usize>)]
    train_tokens: usize,
    /// Tokens to cache.
    #[arg(long, default_value_t = 500_000, value_parser = number::<usize>)]
    n_tokens: usize,
    /// Latents to explain and score (among the first ones, those with enough examples). With
    /// the 135M in-process explainer on two CPU cores each takes about 15 s.
    #[arg(long, default_value_t = 30, value_parser = number::<u32>)]
    n_latents: u32,
    /// Who explains: `tokens` names each latent's most frequent activating tokens (no LLM; the
    /// baseline every LLM explanation must beat); `default` and `contrastive` ask SmolLM2-135M
    /// in process, a weak explainer whose explanations are mostly summaries of the text.
    #[arg(long, value_enum, default_value = "tokens")]
    explainer: ExplainerKind,
    /// Scorers, each beside the random-explanation control. The default two do not need a
    /// capable judge: the sentence-embedding scorer (all-MiniLM-L6-v2) and surprisal (SmolLM2 as
    /// the base model). `detection` and `fuzz` ask SmolLM2-135M, which is close to chance as a
    /// judge (it answers "yes" to nearly everything).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "embedding,surprisal"
    )]
    scorers: Vec<ScorerKind>,
    /// Where runs are written (the demo's is `<results-dir>/demo`).
    #[arg(long, default_value = "results")]
    results_dir: PathBuf,
    /// Redo everything: retrain the SAE and recompute the cache, explanations and scores.
    #[arg(long)]
    fresh: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// What the demo runs on, fetched by `scripts/fetch-assets.sh` when missing.
struct Assets {
    /// SmolLM2-135M-Instruct: the model, the explainer and the classifier scorers.
    gguf: PathBuf,
    /// all-MiniLM-L6-v2: the embedding scorer.
    minilm: PathBuf,
    /// The State of the Union corpus.
    sotu: PathBuf,
}

fn assets() -> Result<Assets> {
    use autointerp_core::assets::{fetch, Asset};
    let all = [Asset::Smollm2, Asset::Minilm, Asset::Sotu];
    if !all.iter().all(|a| a.is_fetched()) {
        eprintln!(
            "fetching SmolLM2-135M-Instruct, all-MiniLM-L6-v2 and the State of the Union corpus (once)..."
        );
    }
    Ok(Assets {
        gguf: fetch(Asset::Smollm2)?,
        minilm: fetch(Asset::Minilm)?,
        sotu: fetch(Asset::Sotu)?,
    })
}

pub fn run(args: DemoArgs) -> Result<()> {
    let Assets { gguf, minilm, sotu } = assets()?;
    let model_spec = gguf.to_string_lossy().into_owned();
    let sae_root = cache_root()
        .join("demo-sae")
        .join(format!("{}-{}", args.hookpoint, args.train_tokens));
    let sae_dir = sae_root.join(&args.hookpoint);
    if args.fresh || !sae_dir.join("sae.safetensors").exists() {
        eprintln!(
            "[1/3] training a TopK SAE (width 8 x 576, k 32) on {} tokens at {}",
            args.train_tokens, args.hookpoint
        );
        let (model, tok) = load_model_with_tokenizer(&model_spec, &args.device)?;
        let targs = TrainArgs {
            model: model_spec.clone(),
            hookpoint: args.hookpoint.clone(),
            dataset: sotu.to_string_lossy().into_owned(),
            dataset_column: "text".into(),
            n_tokens: args.train_tokens,
            expansion_factor: 8,
            k: 32,
            ctx_len: 256,
            batch_size: 8,
            lr: None,
            // A different document order from the cached tokens'.
            seed: 1,
            eval_tokens: 8_192,
            device: args.device.clone(),
            out: sae_root.clone(),
        };
        train(&targs, &model, &tok).context("training the demo SAE")?;
    } else {
        eprintln!("[1/3] reusing the SAE in {}", sae_dir.display());
    }

    eprintln!(
        "[2/3] caching {} tokens, explaining and scoring {} latents with the in-process engine",
        args.n_tokens, args.n_latents
    );
    let cfg = RunConfig {
        model: model_spec.clone(),
        sparse_model: sae_dir.to_string_lossy().into_owned(),
        hookpoints: vec![args.hookpoint.clone()],
        dataset: Some(sotu.to_string_lossy().into_owned()),
        n_tokens: args.n_tokens,
        skip_first_token: true,
        device: args.device.device.clone(),
        dtype: args.device.dtype.clone(),
        max_latents: Some(args.n_latents),
        min_examples: 20,
        // A 135M explainer on two CPU cores: small prompts, short answers.
        n_examples_train: 12,
        n_examples_test: 20,
        n_non_activating: 20,
        explainer_max_tokens: 64,
        // Asked plainly, the 135M explainer often goes on listing excerpts instead of answering.
        explainer_prefill: true,
        explainer: args.explainer,
        explainer_provider: Provider::Local,
        explainer_model: model_spec.clone(),
        scorers: args.scorers.clone(),
        embedding_model: Some(format!("local:{}", minilm.display())),
        surprisal_model: Some(model_spec),
        // A 135M scorer cannot keep a `[1,0,…]` list format; one digit read from logprobs it can.
        classifier_answer: autointerp_score::AnswerMode::Logprob,
        // The surprisal prefixes in flight (~18 MB each in f32); more only raises the peak RSS.
        engine_prefix_cache_bytes: Some(96 << 20),
        random_control: true,
        max_concurrency: 4,
        name: "demo".into(),
        results_dir: args.results_dir.clone(),
        // Explanations of another explainer, or scores of other settings, are redone.
        overwrite: if args.fresh {
            vec![
                crate::run::Overwrite::Cache,
                crate::run::Overwrite::Explanations,
            ]
        } else {
            vec![]
        },
        ..RunConfig::default()
    };
    run_with_config(cfg)?;

    eprintln!("[3/3] writing the report");
    let results = args.results_dir.join("demo");
    let report =
        autointerp_report::generate_report(&results, &autointerp_report::ReportConfig::default())?;
    println!("{}", report.summary.to_text());
    println!("results: {}", results.display());
    println!("report:  {}", report.out_dir.join("index.html").display());
    Ok(())
}
