//! What detection and fuzzing share: batches of examples, the 0/1 answer parser, and label
//! probabilities from token logprobs.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use autointerp_client::{Client, TokenLogprobs, Usage};
use autointerp_core::{Explanation, LatentId, LatentRecord, Message};
use autointerp_explain::prompts::{PromptKind, PromptSet};
use autointerp_explain::GenerationConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::parse_failure;
use crate::scorer::{add_usage, unless_all_failed};
use crate::{ClassifierSummary, Error, ExampleOutcome, Result, ScoreDetails, Scorer, ScorerResult};

/// Options shared by the classifier scorers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Examples per prompt (delphi's `num_examples_per_scorer_prompt`, default 5). More examples
    /// per prompt cost fewer calls but make the answer format harder to keep.
    pub n_examples_shown: usize,
    /// Tokens above this fraction of an example's maximum activation count as highlighted.
    pub threshold: f32,
    /// Seeds the shuffles and the fuzzed highlights. Each latent draws from its own stream, so
    /// results do not depend on the order in which latents are scored.
    pub seed: u64,
    /// How answers are asked for and read.
    pub answer: AnswerMode,
}

/// How a classifier scorer asks for its answers and reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// [`ClassifierConfig::n_examples_shown`] excerpts per prompt, answered with a generated
    /// list such as `[1,0,1]` that [`parse_labels`] reads; probabilities come from the list's
    /// token logprobs when the server returns them. delphi's way, and the cheapest in calls.
    #[default]
    List,
    /// One excerpt per prompt (`n_examples_shown` is not used), answered with one generated
    /// token. The label is whichever of `1` and `0` the model puts more probability on among
    /// the first token's top logprobs, and `P(1) / (P(0) + P(1))` is its probability, so there
    /// is no text to parse: even a model too small to keep a list format (a 135M in-process
    /// explainer) gives a usable answer every time. Needs a backend that returns top logprobs
    /// (the in-process engine, vLLM, OpenAI); costs one short request per excerpt.
    Logprob,
}

/// Top alternatives asked for on the one answer token in [`AnswerMode::Logprob`]: OpenAI's
/// maximum, enough for `0` and `1` to be among them whenever the model considers them at all.
const FIRST_TOKEN_TOP: u8 = 20;

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            n_examples_shown: 5,
            threshold: autointerp_explain::highlight::DEFAULT_THRESHOLD,
            seed: 42,
            answer: AnswerMode::List,
        }
    }
}

impl ClassifierConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.n_examples_shown == 0 {
            return Err(Error::InvalidConfig(
                "n_examples_shown must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Examples per prompt under this configuration's [`AnswerMode`].
    pub(crate) fn batch_size(&self) -> usize {
        match self.answer {
            AnswerMode::List => self.n_examples_shown,
            AnswerMode::Logprob => 1,
        }
    }
}

/// A random generator for one latent and one purpose, derived from `seed`.
pub(crate) fn latent_rng(seed: u64, latent: &LatentId, stream: &str) -> ChaCha8Rng {
    // FNV-1a over the latent's name and the stream, mixed into the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in latent.to_string().bytes().chain([0]).chain(stream.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(seed ^ h)
}

/// Examples shown together in one classifier prompt. Each item carries the excerpt as shown
/// (`text`) and the right answer (`activating`); `prediction` is filled in by [`Batch::resolve`].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The examples, in the order shown.
    pub items: Vec<ExampleOutcome>,
}

/// The outcomes of one batch, and why its answer could not be used, if it could not.
#[derive(Debug)]
pub struct BatchResult {
    /// One outcome per example; all failed (`prediction: None`) when `failure` is set.
    pub outcomes: Vec<ExampleOutcome>,
    /// Why the answer was unusable.
    pub failure: Option<Error>,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The numbered excerpts as they appear in the prompt: `Excerpt 1: …`, one per line.
    pub fn excerpts(&self) -> String {
        self.items
            .iter()
            .enumerate()
            .map(|(i, o)| {
                format!(
                    "Excerpt {}: {}",
                    i + 1,
                    o.text.as_deref().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Reads the scorer's answer into the outcomes: one 0/1 label per example
    /// ([`parse_labels`]), with probabilities when token `logprobs` of the answer are given
    /// ([`label_probabilities`]). An unparseable answer or one of the wrong length marks every
    /// example of the batch as failed.
    pub fn resolve(self, answer: &str, logprobs: Option<&[TokenLogprobs]>) -> BatchResult {
        self.resolve_numbered(answer, logprobs, 1)
    }

    /// [`Batch::resolve`] for a prompt that numbers its excerpts from `numbering_base` (a
    /// template's `numbering_base`), so that `Excerpt k: 1` lines are read by that numbering.
    pub fn resolve_numbered(
        mut self,
        answer: &str,
        logprobs: Option<&[TokenLogprobs]>,
        numbering_base: usize,
    ) -> BatchResult {
        match parse_labels_with(answer, self.len(), numbering_base) {
            Ok(labels) => {
                let probs = logprobs.and_then(|lp| {
                    label_probabilities_numbered(answer, lp, self.len(), numbering_base)
                });
                for (i, (item, label)) in self.items.iter_mut().zip(labels).enumerate() {
                    item.set_prediction(Some(label), probs.as_ref().map(|p| p[i]));
                }
                BatchResult {
                    outcomes: self.items,
                    failure: None,
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Reads a one-excerpt batch's answer in [`AnswerMode::Logprob`]: the label and probability
    /// come from the first answer token's top logprobs ([`first_token_probability`]), whatever
    /// the text says. Fails when there are no logprobs or neither label is among them.
    pub fn resolve_first_token(
        mut self,
        answer: &str,
        logprobs: Option<&[TokenLogprobs]>,
    ) -> BatchResult {
        if self.len() != 1 {
            let why = Error::InvalidConfig(format!(
                "a logprob answer covers one excerpt, this batch has {}",
                self.len()
            ));
            return self.fail(why);
        }
        let Some(first) = logprobs.and_then(<[TokenLogprobs]>::first) else {
            return self.fail(parse_failure(
                "no token logprobs in the answer: the logprob answer mode needs a backend that \
                 returns them (the in-process engine, vLLM, OpenAI)",
                answer,
            ));
        };
        match first_token_probability(first) {
            Some(p) => {
                self.items[0].set_prediction(Some(p >= 0.5), Some(p));
                BatchResult {
                    outcomes: self.items,
                    failure: None,
                }
            }
            None => self.fail(parse_failure(
                "neither 1 nor 0 among the first answer token's top logprobs",
                answer,
            )),
        }
    }

    /// Marks every example as failed, e.g. when the LLM call itself failed.
    pub fn fail(mut self, why: Error) -> BatchResult {
        for item in &mut self.items {
            item.set_prediction(None, None);
        }
        BatchResult {
            outcomes: self.items,
            failure: Some(why),
        }
    }
}

/// Splits `examples` into batches of `n` (the last may be smaller).
pub(crate) fn into_batches(examples: Vec<ExampleOutcome>, n: usize) -> Vec<Batch> {
    examples
        .chunks(n)
        .map(|c| Batch { items: c.to_vec() })
        .collect()
}

/// Reads `n` labels (1 = yes, 0 = no) from a classifier's answer.
///
/// Accepted, tried in this order:
/// 1. a bracketed list of `0`/`1` (or `true`/`false`, quoted or not), anywhere in the answer,
///    even inside prose or a code fence — the last list of exactly `n` entries wins;
/// 2. one `Excerpt k: 1` (or `Example k: 1`) line per excerpt, `k` running over `1..=n`
///    ([`parse_labels_with`] for another first number);
/// 3. a line holding only `n` labels separated by commas or spaces, optionally after a label
///    such as `Answer:` (brackets forgotten).
///
/// A list of the wrong length, or no list at all, is a [`Error::ParseFailure`].
///
/// ```
/// use autointerp_score::parse_labels;
/// assert_eq!(parse_labels("Sure!\n```json\n[1, 0, 1]\n```", 3)?, vec![true, false, true]);
/// assert_eq!(parse_labels("Answer: 0 1", 2)?, vec![false, true]);
/// assert!(parse_labels("[1,0]", 3).is_err());
/// # Ok::<(), autointerp_score::Error>(())
/// ```
pub fn parse_labels(answer: &str, n: usize) -> Result<Vec<bool>> {
    parse_labels_with(answer, n, 1)
}

/// [`parse_labels`] for a prompt that numbers its excerpts from `numbering_base`: the
/// `Excerpt k: 1` lines must then run over `numbering_base..numbering_base + n`.
///
/// ```
/// use autointerp_score::parse_labels_with;
/// assert_eq!(parse_labels_with("Example 0: 1\nExample 1: 0", 2, 0)?, vec![true, false]);
/// assert!(parse_labels_with("Example 1: 1\nExample 2: 0", 2, 0).is_err());
/// # Ok::<(), autointerp_score::Error>(())
/// ```
pub fn parse_labels_with(answer: &str, n: usize, numbering_base: usize) -> Result<Vec<bool>> {
    parse_labels_span(answer, n, numbering_base).map(|(labels, _)| labels)
}

fn label(item: &str) -> Option<bool> {
    let item = item
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == '`' || c == '*');
    match item.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Labels separated by commas, semicolons or whitespace; `None` unless every item is a label.
fn label_list(s: &str) -> Option<Vec<bool>> {
    let items: Vec<&str> = s
        .split([',', ';', ' ', '\t', '\n', '\r'])
        .filter(|i| !i.trim().is_empty())
        .collect();
    if items.is_empty() {
        return None;
    }
    items.into_iter().map(label).collect()
}

/// The labels and the byte range of the answer they were read from.
pub(crate) fn parse_labels_span(
    answer: &str,
    n: usize,
    numbering_base: usize,
) -> Result<(Vec<bool>, Range<usize>)> {
    let wrong_len = |got: usize| parse_failure(format!("expected {n} labels, found {got}"), answer);

    // 1. Bracketed lists.
    let mut lists = Vec::new();
    for (open, _) in answer.match_indices('[') {
        let rest = &answer[open + 1..];
        let Some(close) = rest.find(']') else {
            continue;
        };
        let inner = &rest[..close];
        if inner.contains('[') {
            continue;
        }
        if let Some(l) = label_list(inner) {
            lists.push((l, open..open + close + 2));
        }
    }
    if let Some(found) = lists.iter().rev().find(|(l, _)| l.len() == n) {
        return Ok(found.clone());
    }
    if let Some((l, _)) = lists.last() {
        return Err(wrong_len(l.len()));
    }

    // 2. `Excerpt k: v` lines.
    let mut per_line: Vec<(usize, bool, Range<usize>)> = Vec::new();
    let mut offset = 0;
    for line in answer.split_inclusive('\n') {
        if let Some((k, v)) = excerpt_line(line) {
            per_line.push((k, v, offset..offset + line.len()));
        }
        offset += line.len();
    }
    if per_line.len() == n
        && per_line
            .iter()
            .enumerate()
            .all(|(i, (k, _, _))| *k == i + numbering_base)
        && n > 0
    {
        let span = per_line[0].2.start..per_line[n - 1].2.end;
        return Ok((per_line.into_iter().map(|(_, v, _)| v).collect(), span));
    }

    // 3. A bare line of labels.
    let mut offset = answer.len();
    for line in answer.split_inclusive('\n').rev() {
        offset -= line.len();
        let body = line.rsplit_once(':').map_or(line, |(_, after)| after);
        let body = body.trim().trim_end_matches('.');
        if let Some(l) = label_list(body) {
            if l.len() != n {
                return Err(wrong_len(l.len()));
            }
            return Ok((l, offset..offset + line.len()));
        }
    }
    Err(parse_failure("no list of 0/1 labels", answer))
}

/// `Excerpt 3: 1`, `- Example 3 = 0`, `**Excerpt 3**: 1 (mentions a river)` → `(3, label)`.
fn excerpt_line(line: &str) -> Option<(usize, bool)> {
    let l = line
        .trim()
        .trim_start_matches(['-', '*', ' '])
        .to_ascii_lowercase();
    let rest = l
        .strip_prefix("excerpt")
        .or_else(|| l.strip_prefix("example"))?
        .trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let k: usize = rest[..digits].parse().ok()?;
    let rest = rest[digits..].trim_start_matches(['*', ' ', ':', '=', '-', ')']);
    let first = rest.split([' ', ',', '(', '.']).next()?;
    Some((k, label(first)?))
}

/// Text of a token without list punctuation, to tell whether it is a `0` or `1` label.
fn token_label(token: &str) -> Option<bool> {
    match token.trim_matches(|c: char| c.is_whitespace() || "[](),;\"'`".contains(c)) {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// `Yes` / `No` in any case, the one-token answers of [`AnswerMode::Logprob`] prompts.
fn word_label(token: &str) -> Option<bool> {
    match token.trim().to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// The probability of a `1` at each of the `n` labels of `answer`, from the answer's token
/// logprobs: `P(1) / (P(0) + P(1))`, summing over the sampled token and its top alternatives
/// whose text (without list punctuation) is `1` or `0` — delphi's rule, made exact.
///
/// The label tokens are located inside the list that [`parse_labels`] reads when the tokens
/// spell the answer exactly, else taken as the last `n` label tokens. `None` when the answer
/// has no `n` labels, the label tokens cannot be matched one to one, or a label position puts no
/// probability on either label.
pub fn label_probabilities(answer: &str, tokens: &[TokenLogprobs], n: usize) -> Option<Vec<f32>> {
    label_probabilities_numbered(answer, tokens, n, 1)
}

/// [`label_probabilities`] for a prompt that numbers its excerpts from `numbering_base`.
fn label_probabilities_numbered(
    answer: &str,
    tokens: &[TokenLogprobs],
    n: usize,
    numbering_base: usize,
) -> Option<Vec<f32>> {
    let (_, span) = parse_labels_span(answer, n, numbering_base).ok()?;
    let spelled: String = tokens.iter().map(|t| t.token.as_str()).collect();
    let positions: Vec<&TokenLogprobs> = if spelled == answer {
        let mut at = 0;
        let mut found = Vec::new();
        for t in tokens {
            let range = at..at + t.token.len();
            at = range.end;
            if range.start < span.end && range.end > span.start && token_label(&t.token).is_some() {
                found.push(t);
            }
        }
        found
    } else {
        let all: Vec<&TokenLogprobs> = tokens
            .iter()
            .filter(|t| token_label(&t.token).is_some())
            .collect();
        all[all.len().saturating_sub(n)..].to_vec()
    };
    if positions.len() != n {
        return None;
    }
    positions
        .into_iter()
        .map(|t| probability_of_yes(t, token_label))
        .collect::<Option<Vec<f32>>>()
}

/// `P(yes) / (P(no) + P(yes))` at one answer position, summing over the sampled token and its
/// top alternatives that `label` reads as yes or no; `None` when neither has any probability
/// there (e.g. `-inf` logprobs, or no label in the top k).
fn probability_of_yes(t: &TokenLogprobs, label: impl Fn(&str) -> Option<bool>) -> Option<f32> {
    let (mut p0, mut p1) = (0.0f64, 0.0f64);
    let sampled_listed = t.top.iter().any(|(tok, _)| *tok == t.token);
    let sampled = (!sampled_listed).then(|| (t.token.clone(), t.logprob));
    for (tok, lp) in t.top.iter().cloned().chain(sampled) {
        match label(&tok) {
            Some(true) => p1 += f64::from(lp).exp(),
            Some(false) => p0 += f64::from(lp).exp(),
            None => {}
        }
    }
    (p0 + p1 > 0.0).then(|| (p1 / (p0 + p1)) as f32)
}

/// The probability of `1` of a one-token answer ([`AnswerMode::Logprob`]): as
/// [`label_probabilities`] reads a list's labels, with `Yes`/`No` counted as `1`/`0` too, since
/// a lone answer may be a word.
pub fn first_token_probability(t: &TokenLogprobs) -> Option<f32> {
    probability_of_yes(t, |tok| token_label(tok).or_else(|| word_label(tok)))
}

/// What makes a classifier scorer detection or fuzzing: its options, its batches and its
/// prompts. The requests, the answer reading and the metrics are [`ClassifierScorer`]'s.
pub trait ClassifierTask: Send + Sync + 'static {
    /// The task's options.
    type Config: Clone + std::fmt::Debug + Send + Sync;
    /// The scorer's name: its `scores/<name>/` folder.
    const NAME: &'static str;
    /// The batching, threshold, seed and answer mode inside the options.
    fn classifier(config: &Self::Config) -> &ClassifierConfig;
    /// The record's shuffled batches, each item with its right answer.
    fn batches(record: &LatentRecord, config: &Self::Config) -> Result<Vec<Batch>>;
    /// The prompt of one batch in [`AnswerMode::List`], from the built-in templates.
    fn prompt(explanation: &str, batch: &Batch) -> Vec<Message>;
    /// The prompt of one excerpt in [`AnswerMode::Logprob`], from the built-in templates.
    fn prompt_one(explanation: &str, excerpt: &str) -> Vec<Message>;
    /// The templates of [`ClassifierTask::render`] and [`ClassifierTask::render_one`], whose
    /// `numbering_base` the answers are read by; `None` (the default): a task written in Rust,
    /// whose excerpts are numbered from 1.
    fn templates() -> Option<(PromptKind, PromptKind)> {
        None
    }
    /// The prompt of one batch from `prompts`' templates; by default [`ClassifierTask::prompt`].
    fn render(prompts: &PromptSet, explanation: &str, batch: &Batch) -> Result<Vec<Message>> {
        let _ = prompts;
        Ok(Self::prompt(explanation, batch))
    }
    /// The prompt of one excerpt from `prompts`' templates; by default
    /// [`ClassifierTask::prompt_one`].
    fn render_one(prompts: &PromptSet, explanation: &str, excerpt: &str) -> Result<Vec<Message>> {
        let _ = prompts;
        Ok(Self::prompt_one(explanation, excerpt))
    }
}

/// A scorer that shows an LLM excerpts and asks a yes/no question about each
/// ([`DetectionScorer`](crate::DetectionScorer), [`FuzzingScorer`](crate::FuzzingScorer)).
#[derive(Debug, Clone)]
pub struct ClassifierScorer<C, T: ClassifierTask> {
    client: C,
    config: T::Config,
    prompts: Arc<PromptSet>,
    generation: GenerationConfig,
    logprobs: Option<u8>,
}

/// Top alternatives asked for per answer token by the classifier scorers, by default.
const DEFAULT_LOGPROBS: u8 = 5;

impl<C, T: ClassifierTask> ClassifierScorer<C, T> {
    /// A scorer asking `client`, with options `config`; greedy requests of up to 200 tokens with
    /// the top 5 logprobs of each answer token.
    pub fn new(client: C, config: T::Config) -> Self {
        Self {
            client,
            config,
            prompts: PromptSet::embedded(),
            generation: GenerationConfig::default().with_max_tokens(200),
            logprobs: Some(DEFAULT_LOGPROBS),
        }
    }

    /// Renders its prompts from `prompts` instead of the built-in templates, and reads answers
    /// by their numbering.
    #[must_use]
    pub fn with_prompts(mut self, prompts: Arc<PromptSet>) -> Self {
        self.prompts = prompts;
        self
    }

    /// Sets the sampling options of its requests.
    #[must_use]
    pub fn with_generation(mut self, generation: GenerationConfig) -> Self {
        self.generation = generation;
        self
    }

    /// Asks for the top `k` logprobs of each answer token (`Some(k)`, for the AUC), or for none.
    /// [`AnswerMode::Logprob`] always asks for 20 on its one answer token.
    #[must_use]
    pub fn with_logprobs(mut self, k: Option<u8>) -> Self {
        self.logprobs = k;
        self
    }

    /// The options.
    pub fn config(&self) -> &T::Config {
        &self.config
    }
}

impl<C: Client, T: ClassifierTask> ClassifierScorer<C, T> {
    /// Scores `explanation` on `record`'s test and non-activating examples; see [`Scorer::score`].
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = T::NAME))]
    pub async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> Result<ScorerResult> {
        let batches = T::batches(record, &self.config)?;
        self.ask(
            record,
            explanation,
            batches.into_iter().map(Ask::Yes).collect(),
        )
        .await
    }

    /// Asks again for the batches that hold a failed example of `previous`, with the same
    /// seeded batches, and keeps the other batches' outcomes verbatim; see
    /// [`Scorer::retry_failed`].
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = T::NAME))]
    pub async fn retry_failed(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        previous: &ScoreDetails,
    ) -> Result<ScorerResult> {
        let batches = T::batches(record, &self.config)?;
        let plan = match previous {
            ScoreDetails::Classifier { outcomes, .. } => reuse(batches, outcomes),
            _ => Err(batches),
        };
        let plan = plan.unwrap_or_else(|batches| {
            tracing::debug!("earlier outcomes do not match the batches: scoring them all");
            batches.into_iter().map(Ask::Yes).collect()
        });
        self.ask(record, explanation, plan).await
    }

    /// Sends the batches to ask, all at once, and reads their answers; kept batches pass
    /// through. Fails only when every request failed and nothing was kept.
    async fn ask(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        plan: Vec<Ask>,
    ) -> Result<ScorerResult> {
        let answer = T::classifier(&self.config).answer;
        let prompts = &*self.prompts;
        let prompt = |batch: &Batch| match answer {
            AnswerMode::List => T::render(prompts, &explanation.text, batch),
            AnswerMode::Logprob => {
                let excerpt = batch.items.first().and_then(|o| o.text.as_deref());
                T::render_one(prompts, &explanation.text, excerpt.unwrap_or_default())
            }
        };
        let (mut asked, mut kept) = (Vec::new(), Vec::new());
        for (i, a) in plan.into_iter().enumerate() {
            match a {
                Ask::Yes(batch) => asked.push((i, batch)),
                Ask::Keep(batch) => kept.push((i, batch)),
            }
        }
        // A template that fails on this latent fails it before anything is sent.
        let messages = asked
            .iter()
            .map(|(_, batch)| prompt(batch))
            .collect::<Result<Vec<_>>>()?;
        let numbering_base =
            T::templates().map_or(1, |(list, _)| prompts.settings(list).numbering_base);
        let requests = messages.into_iter().map(|messages| {
            let mut req = self.generation.request(messages);
            match answer {
                AnswerMode::List => {
                    if let Some(k) = self.logprobs {
                        req = req.with_logprobs(k);
                    }
                }
                AnswerMode::Logprob => {
                    req = req
                        .with_max_tokens(1)
                        .with_temperature(0.0)
                        .with_logprobs(FIRST_TOKEN_TOP);
                }
            }
            self.client.chat(req)
        });
        let responses = futures::future::join_all(requests).await;
        let responses = if kept.is_empty() {
            unless_all_failed(responses)?
        } else {
            responses
        };
        let mut failures = Vec::new();
        let mut usage = Usage::default();
        let mut answered: Vec<(usize, Vec<ExampleOutcome>)> = kept
            .into_iter()
            .map(|(i, batch)| (i, batch.items))
            .collect();
        for ((i, batch), response) in asked.into_iter().zip(responses) {
            let result = match response {
                Ok(r) => {
                    add_usage(&mut usage, &r.usage);
                    match answer {
                        AnswerMode::List => {
                            batch.resolve_numbered(&r.text, r.logprobs.as_deref(), numbering_base)
                        }
                        AnswerMode::Logprob => {
                            batch.resolve_first_token(&r.text, r.logprobs.as_deref())
                        }
                    }
                }
                Err(e) => batch.fail(Error::Client(e)),
            };
            if let Some(why) = result.failure {
                // Recorded in the score file and its failed count; a log line per batch would
                // flood the terminal.
                tracing::debug!(error = %why, "classifier batch failed");
                failures.push(why.to_string());
            }
            answered.push((i, result.outcomes));
        }
        // Outcomes in the order shown, whichever batches were asked now.
        answered.sort_by_key(|(i, _)| *i);
        let outcomes: Vec<ExampleOutcome> = answered.into_iter().flat_map(|(_, o)| o).collect();
        let summary = ClassifierSummary::from_outcomes(&outcomes);
        Ok(ScorerResult {
            score: summary.score(record.id, T::NAME),
            details: ScoreDetails::Classifier { outcomes, summary },
            failures,
            usage,
        })
    }
}

/// Whether a batch is asked, or kept with its earlier outcomes.
enum Ask {
    Yes(Batch),
    Keep(Batch),
}

/// The batches to ask again: those holding a failed example of `previous`; the others keep
/// their earlier outcomes. `Err(batches)` when `previous` is not the outcomes of these examples
/// in this order (another seed, record or highlighting), judged by each example's text as shown
/// and its right answer.
fn reuse(batches: Vec<Batch>, previous: &[ExampleOutcome]) -> Result<Vec<Ask>, Vec<Batch>> {
    let total: usize = batches.iter().map(Batch::len).sum();
    let same = |new: &ExampleOutcome, old: &ExampleOutcome| {
        new.text == old.text && new.activating == old.activating
    };
    let matches = total == previous.len()
        && batches
            .iter()
            .flat_map(|b| &b.items)
            .zip(previous)
            .all(|(new, old)| same(new, old));
    if !matches {
        return Err(batches);
    }
    let mut at = 0;
    Ok(batches
        .into_iter()
        .map(|batch| {
            let old = &previous[at..at + batch.len()];
            at += batch.len();
            if old.iter().any(ExampleOutcome::failed) {
                Ask::Yes(batch)
            } else {
                Ask::Keep(Batch {
                    items: old.to_vec(),
                })
            }
        })
        .collect())
}

impl<C: Client, T: ClassifierTask> Scorer for ClassifierScorer<C, T> {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        ClassifierScorer::score(self, record, explanation)
    }
    fn retry_failed(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        previous: &ScoreDetails,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        ClassifierScorer::retry_failed(self, record, explanation, previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(s: &str, n: usize) -> Option<Vec<u8>> {
        parse_labels(s, n)
            .ok()
            .map(|l| l.into_iter().map(u8::from).collect())
    }

    #[test]
    fn parses_lists_in_many_shapes() {
        assert_eq!(labels("[1,0,1]", 3), Some(vec![1, 0, 1]));
        assert_eq!(
            labels("The answer is [1, 0, 1] because...", 3),
            Some(vec![1, 0, 1])
        );
        assert_eq!(labels("```python\n[0,0,1]\n```", 3), Some(vec![0, 0, 1]));
        assert_eq!(labels("[\"1\", \"0\"]", 2), Some(vec![1, 0]));
        assert_eq!(labels("[true, false]", 2), Some(vec![1, 0]));
        assert_eq!(labels("1, 0, 1", 3), Some(vec![1, 0, 1]));
        assert_eq!(labels("My answer:\n0 1 1.", 3), Some(vec![0, 1, 1]));
        assert_eq!(labels("Answer: 1", 1), Some(vec![1]));
        assert_eq!(
            labels("Excerpt 1: 1\nExcerpt 2: 0 (no river)\n**Excerpt 3**: 1", 3),
            Some(vec![1, 0, 1])
        );
        // Prose citing a short list before the real one: the list of the right length wins.
        assert_eq!(
            labels("Like [1] said: [0,1,0,0]", 4),
            Some(vec![0, 1, 0, 0])
        );
        assert_eq!(labels("[[1,0]]", 2), Some(vec![1, 0]));
    }

    #[test]
    fn wrong_length_and_garbage_fail() {
        assert_eq!(labels("[1,0]", 3), None);
        assert_eq!(labels("1 0 1 1", 3), None);
        assert_eq!(labels("I cannot tell.", 2), None);
        assert_eq!(labels("", 1), None);
        assert_eq!(labels("[1, 2, 0]", 3), None);
        assert_eq!(labels("[yes, no]", 2), None);
    }

    fn tok(token: &str, top: &[(&str, f32)]) -> TokenLogprobs {
        let logprob = top
            .iter()
            .find(|(t, _)| *t == token)
            .map_or(0.0, |(_, lp)| *lp);
        TokenLogprobs {
            token: token.into(),
            logprob,
            top: top.iter().map(|(t, lp)| (t.to_string(), *lp)).collect(),
        }
    }

    #[test]
    fn probabilities_from_top_logprobs() {
        let ln = |p: f32| p.ln();
        let tokens = vec![
            tok("[", &[("[", 0.0)]),
            tok("1", &[("1", ln(0.6)), ("0", ln(0.2)), ("x", ln(0.2))]),
            tok(",", &[(",", 0.0)]),
            tok("0", &[("0", ln(0.9)), (" 1", ln(0.1))]),
            tok("]", &[("]", 0.0)]),
        ];
        let p = label_probabilities("[1,0]", &tokens, 2).unwrap();
        assert!(
            (p[0] - 0.75).abs() < 1e-6 && (p[1] - 0.1).abs() < 1e-6,
            "{p:?}"
        );
        // Prose containing digits before the list is skipped.
        let mut with_prose = vec![
            tok("Example", &[]),
            tok(" 1", &[(" 1", 0.0)]),
            tok(": ", &[]),
        ];
        with_prose.extend(tokens.clone());
        let p2 = label_probabilities("Example 1: [1,0]", &with_prose, 2).unwrap();
        assert_eq!(p, p2);
        // The sampled token counts even when the API lists no alternatives.
        let bare = vec![tok("[1", &[]), tok(",0]", &[])];
        assert_eq!(
            label_probabilities("[1,0]", &bare, 2).unwrap(),
            vec![1.0, 0.0]
        );
        assert_eq!(label_probabilities("[1,0]", &tokens[..3], 2), None);
        // A label position without any probability on 0 or 1 gives no probabilities.
        let mut dead = tokens.clone();
        dead[1] = TokenLogprobs {
            token: "1".into(),
            logprob: f32::NEG_INFINITY,
            top: vec![],
        };
        assert_eq!(label_probabilities("[1,0]", &dead, 2), None);
    }

    #[test]
    fn first_token_probability_reads_digits_and_words() {
        let ln = |p: f32| p.ln();
        let t = tok(
            " 1",
            &[
                (" 1", ln(0.5)),
                ("1", ln(0.1)),
                ("0", ln(0.2)),
                ("The", ln(0.2)),
            ],
        );
        assert!((first_token_probability(&t).unwrap() - 0.75).abs() < 1e-6);
        let t = tok("Yes", &[("Yes", ln(0.3)), (" no", ln(0.6))]);
        assert!((first_token_probability(&t).unwrap() - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(first_token_probability(&tok("The", &[("The", 0.0)])), None);
    }

    #[test]
    fn resolve_records_failures_explicitly() {
        let item = |activating| ExampleOutcome {
            str_tokens: vec![],
            activations: vec![],
            quantile: None,
            distance: None,
            activating,
            prediction: None,
            probability: None,
            correct: None,
            text: Some("t".into()),
        };
        let batch = Batch {
            items: vec![item(true), item(false)],
        };
        let ok = batch.clone().resolve("[1,1]", None);
        assert!(ok.failure.is_none());
        assert_eq!(
            ok.outcomes.iter().map(|o| o.correct).collect::<Vec<_>>(),
            vec![Some(true), Some(false)]
        );
        let bad = batch.resolve("[1]", None);
        assert!(matches!(bad.failure, Some(Error::ParseFailure { .. })));
        assert!(bad
            .outcomes
            .iter()
            .all(|o| o.failed() && o.correct.is_none()));
    }

    proptest! {
        #[test]
        fn round_trips_any_label_list(
            bits in prop::collection::vec(any::<bool>(), 1..12),
            prose in "[A-Za-z .]{0,30}",
            sep in prop::sample::select(vec![",", ", ", " ,", " "]),
            fence in any::<bool>(),
            brackets in any::<bool>(),
        ) {
            let list = bits.iter().map(|b| if *b { "1" } else { "0" }).collect::<Vec<_>>().join(sep);
            let list = if brackets { format!("[{list}]") } else { list };
            let body = if fence { format!("```\n{list}\n```") } else { list };
            let answer = format!("{prose}\n{body}");
            prop_assert_eq!(parse_labels(&answer, bits.len()).unwrap(), bits.clone());
            prop_assert!(parse_labels(&answer, bits.len() + 1).is_err());
        }

        #[test]
        fn never_panics(answer in "\\PC{0,60}", n in 0usize..6) {
            if let Ok(l) = parse_labels(&answer, n) {
                prop_assert_eq!(l.len(), n);
            }
        }
    }
}
