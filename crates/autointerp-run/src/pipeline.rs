//! The per-latent pipeline: records stream from the dataset (built on a thread of their own) into
//! `autointerp_pipeline::run`; each latent is explained, then scored by every scorer at once; one
//! writer writes each latent's files (each atomically) and records its failures.
//!
//! Each latent's work runs as a tokio task of its own, so requests in flight keep going while
//! the runner waits for the next record. [`Cancel::stop`] stops taking latents and lets those
//! in flight finish; [`Cancel::abort`] aborts them, and nothing of theirs is written.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use autointerp_client::Usage;
use autointerp_core::layout::Layout;
use autointerp_core::{Explanation, LatentId, LatentRecord};
use autointerp_explain::{write_explanation, DynExplainer, ExplainOutcome};
use autointerp_latents::{BuiltRecord, LatentDataset};
use autointerp_pipeline::{from_fn, BoxError, Stage, StageExt};
use autointerp_score::{DynScorer, ScorerResult};
use tokio::sync::watch;

use crate::layout::{Failure, FailureLog};
use crate::{Cancel, Event, Progress, Result};

/// The explainer and scorers every latent goes through.
#[derive(Debug)]
pub struct Engine {
    /// `None` when explanations are only read.
    pub explainer: Option<Box<dyn DynExplainer>>,
    /// All requested scorers; a job names the ones it still needs.
    pub scorers: Vec<Box<dyn DynScorer>>,
    /// Best-of-K: the sampling explainers and the index in `scorers` of the one that picks
    /// (empty and `None` without it).
    pub samples: Vec<Box<dyn DynExplainer>>,
    /// See [`Engine::samples`].
    pub select: Option<usize>,
    /// Score on the test half of each latent's held-out examples ([`split_held_out`]): set
    /// for every stage of a best-of-K run, so that a rerun that only scores (or resumes)
    /// scores the kept explanations on the examples the choice never saw.
    pub split: bool,
}

/// What is still to do for one latent.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The explanation to score; `None`: explain first.
    pub explanation: Option<Explanation>,
    /// The scorers still to run.
    pub scorers: Vec<ScorerTask>,
}

/// One scorer a latent still needs.
#[derive(Debug, Clone)]
pub struct ScorerTask {
    /// Index into [`Engine::scorers`].
    pub index: usize,
    /// Set when a score file with failed items exists: only those are asked again.
    pub retry: Option<Retry>,
}

/// A score file with failed items, to complete.
#[derive(Debug, Clone)]
pub struct Retry {
    /// The file.
    pub path: PathBuf,
    /// Its failed items: a new result replaces the file only when it has fewer, so a judge
    /// still failing never costs the answers already there.
    pub failed: usize,
}

/// One latent going through the pipeline.
#[derive(Clone)]
pub struct Job {
    /// What the explainer and scorers see: with best-of-K, the test half of the held-out
    /// examples (train examples whole).
    record: Arc<LatentRecord>,
    /// With best-of-K: the whole record (written to `latents/`) and its validation half.
    halves: Option<(Arc<LatentRecord>, Arc<LatentRecord>)>,
    explanation: Option<Explanation>,
    scorers: Arc<[ScorerTask]>,
    /// A random-control job: the explanation is another latent's; scores go to `scores/random/`.
    control: bool,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("latent", &self.record.id.to_string())
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

/// A job after the explainer.
#[derive(Debug)]
pub struct Explained {
    job: Job,
    /// The explainer's outcome; `None` when the explanation was given.
    explained: Option<Result<ExplainOutcome, String>>,
    explanation: Option<Explanation>,
    /// Best-of-K: every sample and the choice.
    samples: Option<Samples>,
    /// Best-of-K: the first sample, when another was chosen (scored on the test half too).
    first: Option<Explanation>,
}

/// A job after the scorers.
#[derive(Debug)]
pub struct Outcome {
    explained: Option<Result<ExplainOutcome, String>>,
    explanation: Option<Explanation>,
    scores: Vec<Scored>,
    samples: Option<Samples>,
    /// Best-of-K: the first sample's score on the test half by the choosing scorer.
    first: Option<Scored>,
}

/// Best-of-K's record of one latent (`samples/<latent>.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Samples {
    /// The scorer that chose.
    pub select: &'static str,
    /// Each sample, in the order drawn.
    pub samples: Vec<Sample>,
    /// The index of the one kept.
    pub chosen: usize,
    /// Tokens of the samples not kept and of the validation scorings (the kept explanation's
    /// are in the run's usage already).
    #[serde(skip)]
    pub extra_usage: Usage,
}

/// One sampled explanation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// The explanation; `None` when the answer held none.
    pub explanation: Option<String>,
    /// Why there is none, or why it could not be scored.
    pub error: Option<String>,
    /// Its score on the validation half.
    pub validation_score: Option<f64>,
}

/// Splits `record`'s held-out examples for best-of-K: the validation half (odd positions of
/// the test examples, which come in quantile order, and of the non-activating ones) and the
/// test half (even positions). Train examples go to both.
pub fn split_held_out(record: &LatentRecord) -> (LatentRecord, LatentRecord) {
    let halves = |v: &[autointerp_core::Example]| {
        let (mut even, mut odd) = (Vec::new(), Vec::new());
        for (i, e) in v.iter().enumerate() {
            if i % 2 == 0 {
                even.push(e.clone())
            } else {
                odd.push(e.clone())
            }
        }
        (even, odd)
    };
    let (test, validation) = halves(&record.test);
    let (silent_test, silent_validation) = halves(&record.non_activating);
    let mut v = record.clone();
    v.test = validation;
    v.non_activating = silent_validation;
    let mut t = record.clone();
    t.test = test;
    t.non_activating = silent_test;
    (v, t)
}

/// What one scorer made of a job.
#[derive(Debug)]
struct Scored {
    name: &'static str,
    /// Failed items of the file this result may replace.
    failed_before: Option<usize>,
    result: Result<ScorerResult, ScoreError>,
}

/// Why a scorer gave no result.
#[derive(Debug)]
enum ScoreError {
    /// The latent has too few examples for this scorer (e.g. intruder trials): no score, and
    /// not a failure.
    TooFew(String),
    /// Scoring failed.
    Failed(String),
}

/// A score after the writer.
enum ScoreState {
    /// Written (or there), every item answered.
    Complete,
    /// Written (or kept) with failed items.
    Incomplete,
    /// No score: the scorer failed as a whole.
    Failed,
}

/// An error with its causes, on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl Engine {
    /// Explains the job's latent unless its explanation was given.
    async fn explain(&self, job: Job) -> Explained {
        if let Some(e) = job.explanation.clone() {
            return Explained {
                job,
                explained: None,
                explanation: Some(e),
                samples: None,
                first: None,
            };
        }
        if let (Some(select), Some((_, validation))) = (self.select, &job.halves) {
            if !self.samples.is_empty() {
                let validation = Arc::clone(validation);
                return self.best_of(job, &validation, select).await;
            }
        }
        let explained = match &self.explainer {
            Some(x) => x.explain_boxed(&job.record).await.map_err(|e| chain(&e)),
            None => Err("no explanation, and no explainer to write one".into()),
        };
        let explanation = explained
            .as_ref()
            .ok()
            .and_then(|o| o.explanation().cloned());
        Explained {
            job,
            explained: Some(explained),
            explanation,
            samples: None,
            first: None,
        }
    }

    /// Best-of-K: every sample, scored on `validation` by scorer `select`; the best kept (the
    /// first among equals; the first explained one when none has a defined score).
    async fn best_of(&self, job: Job, validation: &LatentRecord, select: usize) -> Explained {
        let outcomes =
            futures::future::join_all(self.samples.iter().map(|x| x.explain_boxed(&job.record)))
                .await;
        let scorer = &self.scorers[select];
        let scored = futures::future::join_all(outcomes.iter().map(|o| async move {
            match o {
                Ok(ExplainOutcome::Explained { explanation, .. }) => {
                    match scorer.score_boxed(validation, explanation).await {
                        Ok(r) => (Some(r.score.value).filter(|v| v.is_finite()), None, r.usage),
                        Err(e) => (None, Some(chain(&e)), Usage::default()),
                    }
                }
                Ok(ExplainOutcome::Failed { reason, .. }) => {
                    (None, Some(reason.clone()), Usage::default())
                }
                Err(e) => (None, Some(chain(e)), Usage::default()),
            }
        }))
        .await;
        let explained = |i: usize| matches!(outcomes[i], Ok(ExplainOutcome::Explained { .. }));
        let chosen = (0..outcomes.len())
            .filter(|&i| scored[i].0.is_some())
            .max_by(|&a, &b| {
                let (x, y) = (
                    scored[a].0.unwrap_or(f64::NAN),
                    scored[b].0.unwrap_or(f64::NAN),
                );
                // max_by keeps the last of equals: compare indices the other way round.
                x.total_cmp(&y).then(b.cmp(&a))
            })
            .or_else(|| (0..outcomes.len()).find(|&i| explained(i)))
            .unwrap_or(0);
        let mut extra_usage = Usage::default();
        let samples = outcomes
            .iter()
            .zip(&scored)
            .enumerate()
            .map(|(i, (o, (score, error, usage)))| {
                add_usage(&mut extra_usage, usage);
                if i != chosen {
                    if let Ok(o) = o {
                        add_usage(&mut extra_usage, o.usage());
                    }
                }
                Sample {
                    explanation: o
                        .as_ref()
                        .ok()
                        .and_then(|o| o.explanation().map(|e| e.text.clone())),
                    error: error.clone(),
                    validation_score: *score,
                }
            })
            .collect();
        let first = match &outcomes[0] {
            Ok(ExplainOutcome::Explained { explanation, .. }) => Some(explanation.clone()),
            _ => None,
        };
        let mut outcomes = outcomes;
        let explained = outcomes.swap_remove(chosen).map_err(|e| chain(&e));
        let explanation = explained
            .as_ref()
            .ok()
            .and_then(|o| o.explanation().cloned());
        Explained {
            job,
            explained: Some(explained),
            explanation,
            first: first.filter(|_| chosen != 0),
            samples: Some(Samples {
                select: scorer.scorer_name(),
                samples,
                chosen,
                extra_usage,
            }),
        }
    }

    /// Runs the job's scorers, all at once, on its explanation (none when there is none). A
    /// scorer whose file has failed items asks again only for those, when the file can be read.
    async fn score(&self, x: Explained) -> Outcome {
        let scores = match &x.explanation {
            None => Vec::new(),
            Some(e) => {
                let record = &x.job.record;
                futures::future::join_all(x.job.scorers.iter().map(|task| {
                    let scorer = &self.scorers[task.index];
                    let name = scorer.scorer_name();
                    async move {
                        let previous = task.retry.as_ref().and_then(|r| {
                            autointerp_score::read_score_file(&r.path, name)
                                .inspect_err(|e| tracing::warn!(error = %e, "scoring anew"))
                                .ok()
                        });
                        let result = match &previous {
                            Some(p) => scorer.retry_failed_boxed(record, e, p).await,
                            None => scorer.score_boxed(record, e).await,
                        };
                        Scored {
                            name,
                            failed_before: task.retry.as_ref().map(|r| r.failed),
                            result: result.map_err(|e| {
                                if e.is_skip() {
                                    ScoreError::TooFew(e.to_string())
                                } else {
                                    ScoreError::Failed(chain(&e))
                                }
                            }),
                        }
                    }
                }))
                .await
            }
        };
        // Best-of-K: the first sample on the same test half, by the choosing scorer.
        let first = match (&x.first, self.select) {
            (Some(e), Some(select)) => {
                let scorer = &self.scorers[select];
                let result = scorer.score_boxed(&x.job.record, e).await;
                Some(Scored {
                    name: scorer.scorer_name(),
                    failed_before: None,
                    result: result.map_err(|e| ScoreError::Failed(chain(&e))),
                })
            }
            _ => None,
        };
        Outcome {
            explained: x.explained,
            explanation: x.explanation,
            scores,
            samples: x.samples,
            first,
        }
    }
}

/// The error of a latent aborted by [`Cancel::abort`].
#[derive(Debug)]
struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("aborted (cancelled while in flight)")
    }
}

impl std::error::Error for Aborted {}

/// Runs a stage as a task of its own (so it progresses while the runner waits for input), and
/// aborts it when `abort` turns true.
struct Spawned<S> {
    inner: Arc<S>,
    abort: watch::Receiver<bool>,
}

impl<In, S> Stage<In> for Spawned<S>
where
    In: Send + 'static,
    S: Stage<In> + 'static,
    S::Out: 'static,
{
    type Out = S::Out;

    async fn call(&self, input: In) -> Result<S::Out, BoxError> {
        let inner = Arc::clone(&self.inner);
        let mut task = tokio::spawn(async move { inner.call(input).await });
        let mut abort = self.abort.clone();
        let aborted = async move {
            // A dropped sender means no abort will come.
            if abort.wait_for(|a| *a).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            joined = &mut task => joined.map_err(|e| -> BoxError { format!("the latent's task failed: {e}").into() })?,
            () = aborted => {
                task.abort();
                Err(Box::new(Aborted))
            }
        }
    }
}

/// What the record thread sends.
enum Fed {
    Record(Box<BuiltRecord>),
    /// Latents skipped for having too few activating examples.
    Skipped(usize),
    /// A split that could not be read.
    Error(String),
}

fn feed(dataset: LatentDataset, tx: SyncSender<Fed>) {
    let mut records = dataset.records();
    let mut skipped = 0;
    loop {
        let next = records.next();
        let now = records.skipped();
        if now > skipped && tx.send(Fed::Skipped(now - skipped)).is_err() {
            return;
        }
        skipped = now;
        let msg = match next {
            None => return,
            Some(Ok(built)) => Fed::Record(Box::new(built)),
            Some(Err(e)) => Fed::Error(chain(&e)),
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// The runner's input: records from the record thread, each with its plan, until the records
/// end or the run is cancelled.
struct Jobs<'a> {
    rx: Receiver<Fed>,
    plans: HashMap<LatentId, Plan>,
    control: bool,
    /// Best-of-K: split each record's held-out examples ([`split_held_out`]).
    split: bool,
    stop: Arc<AtomicBool>,
    progress: &'a dyn Progress,
    skipped: usize,
    errors: Vec<String>,
}

impl Iterator for Jobs<'_> {
    type Item = Job;

    fn next(&mut self) -> Option<Job> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Fed::Record(built)) => {
                    let Some(plan) = self.plans.remove(&built.record.id) else {
                        continue;
                    };
                    let (record, halves) = if self.split {
                        let (validation, test) = split_held_out(&built.record);
                        (
                            Arc::new(test),
                            Some((Arc::new(built.record), Arc::new(validation))),
                        )
                    } else {
                        (Arc::new(built.record), None)
                    };
                    return Some(Job {
                        record,
                        halves,
                        explanation: plan.explanation,
                        scorers: plan.scorers.into(),
                        control: self.control,
                    });
                }
                Ok(Fed::Skipped(n)) => {
                    self.skipped += n;
                    self.progress.event(Event::Skipped(n));
                }
                Ok(Fed::Error(e)) => self.errors.push(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// What a phase did.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Latents whose every stage succeeded, every item of every score included.
    pub done: usize,
    /// Latents explained (their explanation written).
    pub explained: usize,
    /// Latents with at least one failed stage, or a score with failed items.
    pub failed: usize,
    /// Of the failed latents, those with a score file some of whose items (examples, trials,
    /// sequences) failed: a failed request or an unparseable answer. Each such score has a line
    /// in `failures.jsonl`, and the same run started again asks for exactly those items.
    pub incomplete: usize,
    /// The failed items in those score files, as the files stand after this phase.
    pub failed_items: usize,
    /// Latents skipped for having too few activating examples.
    pub skipped: usize,
    /// Scores not computed because the latent has too few examples for that scorer (e.g. fewer
    /// test examples than an intruder trial shows): neither written nor failed.
    pub too_few: usize,
    /// Latents aborted while in flight ([`Cancel::abort`]).
    pub aborted: usize,
    /// Tokens and cost.
    pub usage: Usage,
}

/// Adds `more` to `total`; the cost is known when either is.
pub fn add_usage(total: &mut Usage, more: &Usage) {
    total.prompt_tokens += more.prompt_tokens;
    total.completion_tokens += more.completion_tokens;
    if let Some(c) = more.cost {
        total.cost = Some(total.cost.unwrap_or(0.0) + c);
    }
}

/// The one writer: each latent's files, its failures, its progress event.
struct Writer<'a> {
    layout: &'a Layout,
    failures: &'a mut FailureLog,
    progress: &'a dyn Progress,
    tally: Tally,
    /// Usage of the phases before this one.
    before: Usage,
}

impl Writer<'_> {
    fn fail(
        &mut self,
        id: &LatentId,
        stage: String,
        error: String,
        answer: Option<String>,
    ) -> Result<()> {
        self.failures.record(&Failure {
            latent: Some(id.to_string()),
            stage,
            error,
            answer,
            items: None,
        })
    }

    /// Writes a scorer's result, unless it would replace a file with as many failed items or
    /// fewer; logs the items still failed, or the error.
    fn write_score(&mut self, job: &Job, stage: String, s: Scored) -> Result<ScoreState> {
        let (left, error) = match (s.result, s.failed_before) {
            (Ok(r), before) => {
                add_usage(&mut self.tally.usage, &r.usage);
                let failed = r.n_failed();
                let left = match before {
                    Some(before) if failed >= before => before,
                    _ => {
                        r.write_score_file(&self.layout.scores(job.control))?;
                        failed
                    }
                };
                if left == 0 {
                    return Ok(ScoreState::Complete);
                }
                let error = r.failures.first().cloned().unwrap_or_else(|| {
                    format!("{left} items failed without a message (see the score file)")
                });
                (left, error)
            }
            (Err(ScoreError::TooFew(why)), _) => {
                tracing::info!(latent = %job.record.id, %stage, "no score: {why}");
                self.tally.too_few += 1;
                return Ok(ScoreState::Complete);
            }
            // The file there is stays, with its failed items.
            (Err(ScoreError::Failed(e)), Some(before)) => (before, e),
            (Err(ScoreError::Failed(e)), None) => {
                self.fail(&job.record.id, stage, e, None)?;
                return Ok(ScoreState::Failed);
            }
        };
        self.tally.failed_items += left;
        self.failures.record(&Failure {
            latent: Some(job.record.id.to_string()),
            stage,
            error,
            answer: None,
            items: Some(left),
        })?;
        Ok(ScoreState::Incomplete)
    }

    fn write(&mut self, job: Job, result: Result<Outcome, BoxError>) -> Result<()> {
        let id = job.record.id;
        let outcome = match result {
            Ok(o) => o,
            Err(e) if e.is::<Aborted>() => {
                self.tally.aborted += 1;
                return Ok(());
            }
            Err(e) => {
                self.fail(&id, "latent".into(), chain(&*e), None)?;
                self.tally.failed += 1;
                self.finished();
                return Ok(());
            }
        };
        let mut ok = true;
        if job.control {
            if let Some(e) = &outcome.explanation {
                write_explanation(&self.layout.explanations(true), e)?;
            }
        } else {
            let whole = job.halves.as_ref().map_or(&job.record, |(whole, _)| whole);
            self.layout.write_record(whole)?;
        }
        if let Some(samples) = &outcome.samples {
            self.write_samples(&job, samples, &outcome)?;
        }
        match outcome.explained {
            None => {}
            Some(Ok(ExplainOutcome::Explained {
                explanation, usage, ..
            })) => {
                write_explanation(&self.layout.explanations(false), &explanation)?;
                add_usage(&mut self.tally.usage, &usage);
                self.tally.explained += 1;
            }
            Some(Ok(ExplainOutcome::Failed {
                reason,
                answer,
                usage,
                ..
            })) => {
                add_usage(&mut self.tally.usage, &usage);
                self.fail(&id, "explain".into(), reason, Some(answer))?;
                ok = false;
            }
            Some(Err(e)) => {
                self.fail(&id, "explain".into(), e, None)?;
                ok = false;
            }
        }
        let kind = if job.control { "random" } else { "score" };
        let mut incomplete = false;
        for s in outcome.scores {
            let stage = format!("{kind}/{}", s.name);
            match self.write_score(&job, stage, s)? {
                ScoreState::Complete => {}
                ScoreState::Incomplete => (ok, incomplete) = (false, true),
                ScoreState::Failed => ok = false,
            }
        }
        if incomplete {
            self.tally.incomplete += 1;
        }
        if ok {
            self.tally.done += 1;
        } else {
            self.tally.failed += 1;
        }
        self.finished();
        Ok(())
    }

    /// Best-of-K's files: `samples/<latent>.json` (every sample, its validation score, the
    /// choice) and `samples/first/<scorer>/<latent>.txt` (the first sample's test score by the
    /// choosing scorer: the chosen one's own when it is the first).
    fn write_samples(&mut self, job: &Job, samples: &Samples, outcome: &Outcome) -> Result<()> {
        add_usage(&mut self.tally.usage, &samples.extra_usage);
        let dir = self.layout.root().join("samples");
        let json =
            serde_json::to_vec_pretty(samples).map_err(|e| crate::Error::Config(e.to_string()))?;
        autointerp_core::fs::write_atomic(&dir.join(format!("{}.json", job.record.id)), &json)
            .map_err(|e| crate::Error::Config(format!("writing {}: {e}", dir.display())))?;
        let first = if samples.chosen == 0 {
            outcome
                .scores
                .iter()
                .find(|s| s.name == samples.select)
                .and_then(|s| s.result.as_ref().ok())
        } else {
            outcome.first.as_ref().and_then(|s| s.result.as_ref().ok())
        };
        if let Some(s) = &outcome.first {
            if let Ok(r) = &s.result {
                add_usage(&mut self.tally.usage, &r.usage);
            }
        }
        match first {
            Some(r) => {
                r.write_score_file(&dir.join("first"))?;
            }
            None => {
                // No first-sample score this time: an older one (of an earlier explanation)
                // must not be paired with the new kept score.
                let stale = autointerp_score::score_file_path(
                    &dir.join("first"),
                    samples.select,
                    &job.record.id,
                );
                if stale.exists() {
                    std::fs::remove_file(&stale).map_err(|source| crate::Error::Io {
                        what: format!("removing {}", stale.display()),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }

    fn finished(&self) {
        let mut usage = self.before;
        add_usage(&mut usage, &self.tally.usage);
        self.progress.event(Event::LatentFinished {
            tally: &self.tally,
            usage: &usage,
        });
    }
}

/// One pass of the pipeline over `plans`, whose records `dataset` builds.
pub struct Phase<'a> {
    /// Builds the records of the planned latents.
    pub dataset: LatentDataset,
    /// What to do per latent.
    pub plans: BTreeMap<LatentId, Plan>,
    /// Random-control phase.
    pub control: bool,
    /// Shown beside the progress bar.
    pub label: &'a str,
}

/// What every phase of one run shares.
pub struct Shared<'a> {
    /// The explainer and scorers.
    pub engine: Arc<Engine>,
    /// Latents in flight at once.
    pub limit: NonZeroUsize,
    /// Where files go.
    pub layout: &'a Layout,
    /// Stops and aborts the run.
    pub cancel: Cancel,
    /// Where events go.
    pub progress: &'a dyn Progress,
    /// Usage of earlier phases.
    pub usage_before: Usage,
}

/// Runs one phase to the end (or until Ctrl-C). Errors are the writer's (a full disk): the run
/// stops there.
pub async fn run_phase(
    shared: &Shared<'_>,
    failures: &mut FailureLog,
    phase: Phase<'_>,
) -> Result<Tally> {
    shared.progress.event(Event::PhaseStarted {
        label: phase.label,
        latents: phase.plans.len(),
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(shared.limit.get() * 2);
    let dataset = phase.dataset;
    std::thread::Builder::new()
        .name("autointerp-records".into())
        .spawn(move || feed(dataset, tx))
        .map_err(|source| crate::Error::Io {
            what: "starting the record thread".into(),
            source,
        })?;
    let mut jobs = Jobs {
        rx,
        plans: phase.plans.into_iter().collect(),
        control: phase.control,
        split: shared.engine.split,
        stop: shared.cancel.stop_flag(),
        progress: shared.progress,
        skipped: 0,
        errors: Vec::new(),
    };

    let engine = &shared.engine;
    let explain = {
        let engine = Arc::clone(engine);
        from_fn(move |job: Job| {
            let engine = Arc::clone(&engine);
            async move { Ok::<_, BoxError>(engine.explain(job).await) }
        })
    };
    let score = {
        let engine = Arc::clone(engine);
        from_fn(move |x: Explained| {
            let engine = Arc::clone(&engine);
            async move { Ok::<_, BoxError>(engine.score(x).await) }
        })
    };
    let stage = Spawned {
        inner: Arc::new(explain.then(score)),
        abort: shared.cancel.aborted(),
    };
    let mut writer = Writer {
        layout: shared.layout,
        failures,
        progress: shared.progress,
        tally: Tally::default(),
        before: shared.usage_before,
    };
    let result = autointerp_pipeline::run(&mut jobs, stage, shared.limit, |job, r| {
        writer.write(job, r).map_err(BoxError::from)
    })
    .await;
    let mut tally = writer.tally;
    tally.skipped = jobs.skipped;
    for error in std::mem::take(&mut jobs.errors) {
        tally.failed += 1;
        failures.record(&Failure {
            latent: None,
            stage: "record".into(),
            error,
            answer: None,
            items: None,
        })?;
    }
    result.map_err(|e| crate::Error::Config(format!("writing results: {e}")))?;
    shared
        .progress
        .event(Event::PhaseFinished { tally: &tally });
    Ok(tally)
}
