//! The run engine of autointerp as a library: what `autointerp run`, `explain` and `score` do,
//! for any Rust program.
//!
//! A [`Run`] takes one [`RunConfig`] (built in code, or read from TOML or a saved
//! `run_config.json`), opens the latent cache, plans what is left to do from the files that exist
//! (so a killed run resumes), streams latent records from a thread of their own into the
//! explainer and every scorer with bounded concurrency, and has one writer write each latent's
//! record, explanation and score files (each atomically) and its failures
//! (`failures.jsonl`). With `random_control` it then scores every latent again with another
//! latent's explanation. Progress arrives as [`Event`]s; a [`Cancel`] token stops it.
//!
//! The folder layout is [`Layout`] (from autointerp-core, so that the report, which does not
//! link libtorch, reads the same names). The client, explainer and scorers are boxed values built
//! from the config; [`Run::with_client`] and [`Run::with_scorer`] put in others.
//!
//! ```no_run
//! use autointerp_run::{Run, RunConfig, ScorerKind};
//!
//! # async fn go() -> autointerp_run::Result<()> {
//! let config = RunConfig {
//!     model: "HuggingFaceTB/SmolLM2-135M".into(),
//!     explainer_base_url: Some("http://localhost:8000/v1".into()),
//!     explainer_model: "Qwen/Qwen2.5-7B-Instruct".into(),
//!     scorers: vec![ScorerKind::Detection],
//!     name: "smollm2".into(),
//!     ..RunConfig::default()
//! };
//! let summary = Run::new(config)?.execute(&()).await?;
//! println!("{} latents done", summary.main.done);
//! # Ok(()) }
//! ```
//!
//! This crate links libtorch (through the in-process engine and the tokenizer's model crate);
//! caching itself is autointerp-cache's.
//!
//! Example: `cargo run -p autointerp-run --example run_pipeline`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod build;
mod cache;
mod config;
mod delphi;
#[cfg(feature = "clap")]
pub mod delphi_args;
mod error;
mod firing_counts;
mod layout;
mod neighbours;
pub mod overrides;
mod pipeline;
mod plan;
mod progress;
mod run_log;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use autointerp_client::{Embedder, SharedClient, Usage};
use autointerp_core::{HookPoint, LatentId};
use autointerp_explain::DynExplainer;
use autointerp_latents::{HookCache, LatentCache, LatentDataset, LatentsConfig, NeighbourLists};
use autointerp_model::Tokenizer;
use autointerp_score::{DynScorer, Needs};

pub use autointerp_core::layout::Layout;
pub use build::preflight;
pub use cache::{ensure_cache, Cached};
pub use config::{
    ConfigFile, ExplainerKind, FuzzMode, NeighboursType, NonActivatingSource, Overwrite, Provider,
    RunConfig, ScorerKind,
};
pub use delphi::{
    DelphiCacheConfig, DelphiConstructorConfig, DelphiRunConfig, DelphiSamplerConfig,
};
pub use error::{Error, Result};
pub use firing_counts::torch_dict_of_longs;
pub use layout::{load_explanations, Failure, FailureLog};
pub use pipeline::{add_usage, Tally};
pub use progress::{Cancel, Event, Progress, TenthLines};
pub use run_log::RunLog;

use crate::error::{ensure, Context};
use crate::pipeline::{Engine, Phase, Shared};

/// Which stages a run does: `autointerp run` both, `explain` and `score` one each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stages {
    /// Write explanations (unless the config's explainer is `none`).
    pub explain: bool,
    /// Score explanations (with the config's scorers and any added).
    pub score: bool,
}

impl Stages {
    /// Explain, then score.
    pub const ALL: Self = Self {
        explain: true,
        score: true,
    };
    /// Explain only.
    pub const EXPLAIN: Self = Self {
        explain: true,
        score: false,
    };
    /// Score the explanations that exist.
    pub const SCORE: Self = Self {
        explain: false,
        score: true,
    };
}

/// What a run did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunSummary {
    /// The main phase (each latent with its own explanation).
    pub main: Tally,
    /// The random-control phase, when there was one.
    pub control: Option<Tally>,
    /// Latents whose explanation and every score existed before this run.
    pub already_done: usize,
    /// Latents left unscored because they have no explanation and none was to be written.
    pub unexplained: usize,
    /// Lines this run added to `failures.jsonl`.
    pub failures_written: usize,
    /// Tokens and cost of both phases.
    pub usage: Usage,
    /// The results folder.
    pub layout: Layout,
    /// Whether the [`Cancel`] token stopped the run before the end (what was written is
    /// complete; the same run started again resumes).
    pub cancelled: bool,
}

impl RunSummary {
    /// What the run did, as lines for a person: latents done, failed and skipped (under
    /// `min_examples` activating examples), score files with failed items, the control, tokens
    /// and cost, where failures and results are.
    pub fn lines(&self, min_examples: usize) -> Vec<String> {
        let main = &self.main;
        let mut out = vec![format!(
            "{} latents done ({} explained), {} failed; {} already done; {} skipped (fewer \
             than {min_examples} activating examples)",
            main.done, main.explained, main.failed, self.already_done, main.skipped
        )];
        let phases = std::iter::once(("", main))
            .chain(self.control.as_ref().map(|c| ("random control: ", c)));
        for (what, t) in phases {
            if t.incomplete > 0 {
                out.push(format!(
                    "{what}{} latents have scores with failed items ({} items); run the same \
                     command again to retry exactly those",
                    t.incomplete, t.failed_items
                ));
            }
            if t.too_few > 0 {
                out.push(format!(
                    "{what}{} scores not computed: too few examples for the scorer",
                    t.too_few
                ));
            }
        }
        if let Some(r) = &self.control {
            out.push(format!(
                "random control: {} latents scored, {} failed",
                r.done, r.failed
            ));
        }
        let cost = self
            .usage
            .cost
            .map_or_else(String::new, |c| format!(", cost ${c:.4}"));
        out.push(format!(
            "tokens: {} prompt + {} completion{cost}",
            self.usage.prompt_tokens, self.usage.completion_tokens
        ));
        if self.failures_written > 0 {
            out.push(format!(
                "failures recorded in {}",
                self.layout.failures().display()
            ));
        }
        out.push(format!("results in {}", self.layout.root().display()));
        out
    }
}

/// One run over a latent cache: see the crate docs.
pub struct Run {
    config: RunConfig,
    stages: Stages,
    cache: Option<PathBuf>,
    out: Option<PathBuf>,
    tokenizer: Option<Tokenizer>,
    client: Option<SharedClient>,
    explainer: Option<Box<dyn DynExplainer>>,
    extra_scorers: Vec<Box<dyn DynScorer>>,
    cancel: Cancel,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("config", &self.config)
            .field("stages", &self.stages)
            .field("cache", &self.cache)
            .field("out", &self.out)
            .field("extra_scorers", &self.extra_scorers)
            .finish_non_exhaustive()
    }
}

impl Run {
    /// A run of both stages with `config`, reading the cache in and writing to
    /// `<results_dir>/<name>`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting when `config` is invalid.
    pub fn new(config: RunConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            stages: Stages::ALL,
            cache: None,
            out: None,
            tokenizer: None,
            client: None,
            explainer: None,
            extra_scorers: Vec::new(),
            cancel: Cancel::new(),
        })
    }

    /// Runs only these stages.
    #[must_use]
    pub fn stages(mut self, stages: Stages) -> Self {
        self.stages = stages;
        self
    }

    /// Reads the latent cache from `dir` (a results folder or an `autointerp cache --out`
    /// folder) instead of the output folder.
    #[must_use]
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        self
    }

    /// Writes into `dir` instead of `<results_dir>/<name>`.
    #[must_use]
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out = Some(dir.into());
        self
    }

    /// Decodes the examples with `tokenizer` instead of loading the config's.
    #[must_use]
    pub fn with_tokenizer(mut self, tokenizer: Tokenizer) -> Self {
        self.tokenizer = Some(tokenizer);
        self
    }

    /// Asks `client` instead of the provider the config names (the explainer and every LLM
    /// scorer): a scripted client in tests, a client with middleware of one's own.
    #[must_use]
    pub fn with_client(mut self, client: SharedClient) -> Self {
        self.client = Some(client);
        self
    }

    /// Explains with `explainer` instead of the config's.
    #[must_use]
    pub fn with_explainer(mut self, explainer: Box<dyn DynExplainer>) -> Self {
        self.explainer = Some(explainer);
        self
    }

    /// Adds a scorer of one's own after the config's; its files go to `scores/<name>/`, and the
    /// random control runs it too when it reads the explanation.
    #[must_use]
    pub fn with_scorer(mut self, scorer: Box<dyn DynScorer>) -> Self {
        self.extra_scorers.push(scorer);
        self
    }

    /// The settings.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The token that stops this run; clone it before [`Run::execute`].
    pub fn cancel_token(&self) -> Cancel {
        self.cancel.clone()
    }

    /// The output folder's layout.
    pub fn layout(&self) -> Layout {
        Layout::new(
            self.out
                .clone()
                .unwrap_or_else(|| self.config.results_dir.join(&self.config.name)),
        )
    }

    /// Runs the stages to the end, or until cancelled. Must be called inside a tokio runtime
    /// (records are built on a thread of their own; each latent is a task).
    ///
    /// # Errors
    /// Settings at fault, an unreadable cache, a client or model that cannot be built, a write
    /// that fails (a full disk). Failed requests and unusable answers are not errors: they are
    /// counted in the [`Tally`] and logged in `failures.jsonl`; a cancelled run is not one
    /// either ([`RunSummary::cancelled`]).
    pub async fn execute(self, progress: &dyn Progress) -> Result<RunSummary> {
        let Self {
            mut config,
            stages,
            cache,
            out,
            tokenizer,
            client,
            explainer,
            extra_scorers,
            cancel,
        } = self;
        let layout = Layout::new(out.unwrap_or_else(|| config.results_dir.join(&config.name)));
        // Another run on this folder would delete this one's temporary files, and it theirs.
        let _lock = autointerp_core::fs::DirLock::acquire(layout.root())?;
        let cache_dir = cache.unwrap_or_else(|| layout.root().to_path_buf());
        let cache = LatentCache::open(&cache_dir)?;
        let tokenizer = match tokenizer {
            Some(t) => t,
            None => {
                if config.model.is_empty() {
                    config.model = cache_model(&cache)?;
                }
                load_tokenizer(&config)?
            }
        };
        if config.hookpoints.is_empty() {
            // Saved explicitly: delphi's `log_results` is given the hook points to read.
            config.hookpoints = cache.hooks().iter().map(|h| h.hook().to_string()).collect();
        }
        save_config(&config, &layout)?;
        firing_counts::write_for_cache(&cache, &layout)?;
        execute(
            Inputs {
                cfg: &config,
                cache: &cache,
                layout: &layout,
                stages,
                tok: tokenizer,
                client,
                explainer,
                extra_scorers,
                cancel,
            },
            progress,
        )
        .await
    }
}

/// The model named in the cache's `config.json` (`model_name`), whose tokenizer decodes it.
fn cache_model(cache: &LatentCache) -> Result<String> {
    cache
        .hooks()
        .iter()
        .find_map(|h| h.model_name().map(str::to_owned))
        .context("no model known to decode the cache's tokens: pass --model")
}

/// The tokenizer that decodes a run's examples: the config's `tokenizer` when set, else the
/// model's.
pub fn load_tokenizer(cfg: &RunConfig) -> Result<Tokenizer> {
    let source = cfg.tokenizer.as_deref().unwrap_or(&cfg.model);
    Tokenizer::load(source).with_context(|| format!("the tokenizer of {source:?}"))
}

/// Writes the effective settings as `run_config.json`, atomically: our keys, and beside them
/// delphi's that are not ours (`cache_cfg`, `constructor_cfg`, `sampler_cfg`, `hf_token`,
/// `pipeline_num_proc`, `num_gpus`, `max_memory`, `verbose`), so that delphi's tools read the
/// file too. Hook points are written by their canonical names (`layers.6`), as score files name
/// them. [`RunConfig::from_json_file`] reads the file back as it was.
pub fn save_config(cfg: &RunConfig, layout: &Layout) -> Result<()> {
    // Credentials in a URL (`user:pass@`, `?key=`) stay out of a file that gets shared.
    let mut cfg = cfg.clone();
    for url in [&mut cfg.explainer_base_url, &mut cfg.embedding_base_url]
        .into_iter()
        .flatten()
    {
        *url = autointerp_client::redact_url(url);
    }
    if let Ok(hooks) = cfg.hooks() {
        cfg.hookpoints = hooks.iter().map(HookPoint::to_string).collect();
    }
    let json = serde_json::to_vec_pretty(&delphi::saved_form(&cfg)?)?;
    autointerp_core::fs::write_atomic(&layout.run_config(), &json)?;
    Ok(())
}

/// A token decoder shared by the datasets of both phases.
type Decode = Arc<dyn Fn(u32) -> String + Send + Sync>;

/// What the records of a run are built with besides the cache and the config: the neighbour
/// lists and the embedder, when the config's non-activating source needs them.
struct RecordDeps {
    neighbours: HashMap<HookPoint, NeighbourLists>,
    embedder: Option<Arc<dyn Embedder>>,
}

/// A dataset over `ids`, or `None` when there are none.
fn dataset_of<'a>(
    cache: &LatentCache,
    cfg: &LatentsConfig,
    decode: &Decode,
    deps: &RecordDeps,
    ids: impl IntoIterator<Item = &'a LatentId>,
    batch: usize,
) -> Result<Option<LatentDataset>> {
    let mut by_hook: BTreeMap<HookPoint, Vec<u32>> = BTreeMap::new();
    for id in ids {
        by_hook.entry(id.hookpoint).or_default().push(id.index);
    }
    if by_hook.is_empty() {
        return Ok(None);
    }
    let d = Arc::clone(decode);
    let mut builder =
        LatentDataset::builder(cache.clone(), cfg.clone(), move |t: u32| d(t)).batch(batch);
    for (hook, ls) in by_hook {
        if let Some(lists) = deps.neighbours.get(&hook) {
            builder = builder.neighbours(hook, lists.clone());
        }
        builder = builder.latents(hook, ls);
    }
    if let Some(e) = &deps.embedder {
        builder = builder.embedder(Arc::clone(e));
    }
    Ok(Some(builder.build()?))
}

/// What [`execute`] works with.
struct Inputs<'a> {
    cfg: &'a RunConfig,
    cache: &'a LatentCache,
    layout: &'a Layout,
    stages: Stages,
    tok: Tokenizer,
    client: Option<SharedClient>,
    explainer: Option<Box<dyn DynExplainer>>,
    extra_scorers: Vec<Box<dyn DynScorer>>,
    cancel: Cancel,
}

/// Runs the explain and score stages over the chosen latents of the cache.
async fn execute(inputs: Inputs<'_>, progress: &dyn Progress) -> Result<RunSummary> {
    let Inputs {
        cfg,
        cache,
        layout,
        stages,
        tok,
        client,
        explainer,
        extra_scorers,
        cancel,
    } = inputs;
    let latents_cfg = cfg.latents_config()?;
    let removed = layout.remove_temp_files()?;
    if removed > 0 {
        tracing::info!(removed, "removed temporary files of an interrupted run");
    }

    // The latents chosen.
    let hooks: Vec<HookPoint> = if cfg.hookpoints.is_empty() {
        cache.hooks().iter().map(HookCache::hook).collect()
    } else {
        cfg.hooks()?
    };
    let mut selection = BTreeSet::new();
    for hook in hooks {
        let width = cache.hook(hook)?.width();
        selection.extend(
            cfg.latent_indices(hook, width)?
                .into_iter()
                .map(|i| LatentId::new(hook, i)),
        );
    }

    // The client, explainer and scorers.
    let kinds = if stages.score {
        cfg.scorer_kinds()
    } else {
        Vec::new()
    };
    let explains = stages.explain && (explainer.is_some() || cfg.explainer != ExplainerKind::None);
    let llm_explains = explains && explainer.is_none() && cfg.explainer != ExplainerKind::Tokens;
    let needs_chat = llm_explains || kinds.iter().any(|k| k.uses_chat());
    let chat = match client {
        Some(client) => Some(build::Chat {
            client,
            local: None,
        }),
        None if needs_chat => Some(build::chat_client(cfg, progress)?),
        None => None,
    };
    let chosen_hooks: Vec<HookPoint> = selection
        .iter()
        .map(|l| l.hookpoint)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // The model steered by the intervention scorers and the output-centric explainers (these
    // show its token changes when the model and coders load here, and only the vocabulary
    // projection otherwise).
    let steers = explains && explainer.is_none() && cfg.explainer.steers();
    let intervener = if kinds.iter().any(|k| k.asks(Needs::Intervener)) {
        Some(Arc::new(build::intervener(
            cfg,
            chat.as_ref(),
            &chosen_hooks,
            progress,
        )?))
    } else if steers {
        match build::intervener(cfg, chat.as_ref(), &chosen_hooks, progress) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                progress.event(Event::Notice(&format!(
                    "the {:?} explainer shows no token changes: {e:#}",
                    cfg.explainer
                )));
                None
            }
        }
    } else {
        None
    };
    let explainer = match explainer {
        Some(e) if explains => Some(e),
        _ if explains => {
            build::explainer(cfg, chat.as_ref().map(|c| &c.client), intervener.as_ref())?
        }
        _ => None,
    };
    let embedder = if build::needs_embedder(cfg, &kinds) {
        Some(build::embedder(cfg, progress)?)
    } else {
        None
    };
    let mut scorers = build::scorers(
        cfg,
        &kinds,
        chat.as_ref(),
        embedder.as_ref(),
        intervener.as_ref(),
        progress,
    )?;
    if stages.score {
        scorers.extend(extra_scorers);
    }
    ensure!(
        explainer.is_some() || !scorers.is_empty(),
        "nothing to do: no explainer and no scorers"
    );
    let names: Vec<&'static str> = scorers.iter().map(|s| s.scorer_name()).collect();
    let reads_explanation: Vec<bool> = scorers
        .iter()
        .map(|s| s.scorer_reads_explanation())
        .collect();
    // Best-of-K: the sampling explainers, and the scorer that picks among them.
    let (samples, select) = if explains && explainer.is_some() && cfg.explainer_samples > 1 {
        ensure!(
            stages.score,
            "--explainer-samples {} picks the best sample with a scorer: run `autointerp run` \
             (or `score`'s stage) with --scorers",
            cfg.explainer_samples
        );
        // The causal scorers (those that steer the model) score every sample on the same
        // prompts whatever the examples: choosing with one would measure the gain on the data
        // the choice was made on. `kinds` are the first of the run's scorers, in order.
        let causal = |i: usize| kinds.get(i).is_some_and(|k| k.asks(Needs::Intervener));
        let select = match cfg.explainer_select {
            Some(kind) => {
                ensure!(
                    !kind.asks(Needs::Intervener),
                    "--explainer-select {}: a causal scorer scores every sample on the same \
                     steered prompts, so it cannot choose on examples apart from those it is \
                     tested on; choose with detection, fuzz, simulation, embedding or surprisal",
                    kind.name()
                );
                names
                    .iter()
                    .position(|n| *n == kind.name())
                    .with_context(|| {
                        format!(
                            "--explainer-select {}: not among the run's --scorers ({})",
                            kind.name(),
                            names.join(", ")
                        )
                    })?
            }
            None => (0..names.len())
                .find(|&i| reads_explanation[i] && !causal(i))
                .with_context(|| {
                    "--explainer-samples needs a scorer that reads the latent's examples and the \
                     explanation (detection, fuzz, simulation, embedding or surprisal) to choose \
                     with"
                })?,
        };
        let samples =
            build::sample_explainers(cfg, chat.as_ref().map(|c| &c.client), intervener.as_ref())?;
        (samples, Some(select))
    } else {
        (Vec::new(), None)
    };
    let engine = Engine {
        explainer,
        scorers,
        samples,
        select,
        split: cfg.explainer_samples > 1,
    };

    // What is left to do.
    let redo_explanations = explains && cfg.overwrites(Overwrite::Explanations);
    let redo_scores = cfg.overwrites(Overwrite::Scores) || redo_explanations;
    let todo = plan::plan(
        layout,
        &selection,
        explains,
        &names,
        (redo_scores, redo_explanations),
    )?;
    let (plans, finished, unexplained) = (todo.plans, todo.finished, todo.unexplained);
    if unexplained > 0 {
        progress.event(Event::Notice(&format!(
            "{unexplained} latents have no explanation in {}: not scored",
            layout.explanations(false).display()
        )));
    }
    let control = stages.score && cfg.random_control && reads_explanation.contains(&true);
    let mut retried: HashSet<LatentId> = plans.keys().copied().collect();
    if control {
        retried.extend(selection.iter().filter(|id| {
            (0..names.len()).any(|i| {
                reads_explanation[i] && (redo_scores || !plan::finished(layout, names[i], id, true))
            })
        }));
    }
    let mut failures = FailureLog::open(&layout.failures(), &retried)?;

    let mut deps = RecordDeps {
        neighbours: HashMap::new(),
        embedder: (cfg.non_activating_source == NonActivatingSource::Embedding)
            .then_some(embedder)
            .flatten(),
    };
    if cfg.non_activating_source == NonActivatingSource::Neighbours
        && (!plans.is_empty() || control)
    {
        let mut by_hook: BTreeMap<HookPoint, Vec<u32>> = BTreeMap::new();
        for id in &selection {
            by_hook.entry(id.hookpoint).or_default().push(id.index);
        }
        deps.neighbours = neighbours::neighbour_lists(cfg, cache, &by_hook, progress)?;
    }

    let decode: Decode = Arc::new(tok.into_token_decoder());
    let limit =
        NonZeroUsize::new(cfg.max_concurrency).context("max_concurrency must be at least 1")?;
    let batch = (cfg.max_concurrency * 4).clamp(16, 256);
    let mut shared = Shared {
        engine: Arc::new(engine),
        limit,
        layout,
        cancel: cancel.clone(),
        progress,
        usage_before: Usage::default(),
    };
    let label = match (explains, names.is_empty()) {
        (true, true) => "explaining",
        (true, false) => "explaining and scoring",
        _ => "scoring",
    };
    let mut main = Tally::default();
    if let Some(dataset) = dataset_of(cache, &latents_cfg, &decode, &deps, plans.keys(), batch)? {
        let phase = Phase {
            dataset,
            plans,
            control: false,
            label,
        };
        main = pipeline::run_phase(&shared, &mut failures, phase).await?;
    }
    let mut random = None;
    if control && !cancel.is_stopped() {
        shared.usage_before = main.usage;
        let redo = (redo_scores, redo_explanations);
        let plans = plan::control_plans(
            progress,
            cfg,
            layout,
            &selection,
            &names,
            &reads_explanation,
            redo,
        )?;
        let mut tally = Tally::default();
        if let Some(dataset) = dataset_of(cache, &latents_cfg, &decode, &deps, plans.keys(), batch)?
        {
            let phase = Phase {
                dataset,
                plans,
                control: true,
                label: "random control",
            };
            tally = pipeline::run_phase(&shared, &mut failures, phase).await?;
        }
        random = Some(tally);
    }
    let mut usage = main.usage;
    if let Some(r) = &random {
        add_usage(&mut usage, &r.usage);
    }
    Ok(RunSummary {
        main,
        control: random,
        already_done: finished,
        unexplained,
        failures_written: failures.written(),
        usage,
        layout: layout.clone(),
        cancelled: cancel.is_stopped(),
    })
}
