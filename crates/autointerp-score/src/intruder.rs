//! Intruder detection: among excerpts of one activation quantile plus one intruder, can the
//! scorer find the intruder? Needs no explanation: it scores how interpretable the latent is.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use autointerp_client::{Client, Usage};
use autointerp_core::{Example, Explanation, LatentRecord, Message, Score};
use autointerp_explain::highlight::rehighlight;
use autointerp_explain::prompts::{
    Excerpt, IntruderContext, PromptError, PromptKind, PromptSet, PromptSettings,
};
use autointerp_explain::{above_threshold, render_highlighted, GenerationConfig};
use rand::seq::{index, IndexedRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::classifier::latent_rng;
use crate::error::parse_failure;
use crate::scorer::{add_usage, unless_all_failed};
use crate::{Error, Result, ScoreDetails, Scorer, ScorerResult};

/// Name of the intruder scorer, as in delphi (`scores/intruder/`).
pub const INTRUDER: &str = "intruder";

/// The answer line starts with this marker, followed by the intruder's excerpt number.
pub const INTRUDER_MARKER: &str = "[INTRUDER]:";

/// Options of the intruder scorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntruderConfig {
    /// Excerpts per trial, the intruder included.
    pub n_examples_shown: usize,
    /// Tokens above this fraction of an example's maximum activation are highlighted.
    pub threshold: f32,
    /// Seeds the choice of excerpts, of the intruder's place and of its highlights.
    pub seed: u64,
    /// Whether the scorer is asked to state the shared pattern before answering.
    pub cot: bool,
}

impl Default for IntruderConfig {
    fn default() -> Self {
        Self {
            n_examples_shown: 5,
            threshold: autointerp_explain::highlight::DEFAULT_THRESHOLD,
            seed: 42,
            cot: false,
        }
    }
}

/// One intruder trial, serialised with the field names of delphi's `IntruderSentence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntruderTrial {
    /// The excerpts as shown, highlights included.
    pub examples: Vec<String>,
    /// 0-based position of the intruder in `examples`.
    pub intruder_index: usize,
    /// The quantile the other excerpts were drawn from, 1 = strongest (0 when examples carry
    /// none). Written as delphi numbers quantiles, from 0, so `q - 1`, and `-1` for none.
    #[serde(with = "delphi_chosen_quantile")]
    pub chosen_quantile: u8,
    /// Activations of each excerpt.
    pub activations: Vec<Vec<f32>>,
    /// Tokens of each excerpt.
    pub tokens: Vec<Vec<String>>,
    /// The intruder's distance to the latent, `-1` when it has none (delphi's convention).
    pub intruder_distance: f32,
}

/// `chosen_quantile` in delphi's numbering: 0-based, `-1` for none.
mod delphi_chosen_quantile {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::outcome::{delphi_quantile, our_quantile, NONE};

    pub(super) fn serialize<S: Serializer>(q: &u8, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(if *q == 0 { NONE } else { delphi_quantile(*q) })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        let v = f64::deserialize(d)?;
        if v == NONE as f64 {
            return Ok(0);
        }
        our_quantile(v).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "chosen_quantile {v} is neither -1 nor a quantile in 0..=254"
            ))
        })
    }
}

/// The result of one trial, serialised with the field names of delphi's `IntruderResult`.
/// Unlike delphi, which records an unparseable answer as prediction 0, a failure has
/// `prediction: None` and `correct: None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntruderOutcome {
    /// The scorer's text before the answer marker (its reasoning, with `cot`).
    pub interpretation: String,
    /// The trial.
    pub sample: IntruderTrial,
    /// 0-based index the scorer named; `None` when its answer could not be parsed.
    pub prediction: Option<usize>,
    /// 0-based index of the intruder.
    pub correct_index: usize,
    /// Whether the scorer named the intruder; `None` for a failed trial.
    pub correct: Option<bool>,
}

impl IntruderTrial {
    /// Reads the scorer's answer; an unparseable one gives a failed outcome, with the error.
    pub fn resolve(self, answer: &str) -> (IntruderOutcome, Option<Error>) {
        self.resolve_with(answer, &PromptSettings::defaults(PromptKind::Intruder))
    }

    /// [`IntruderTrial::resolve`] for a prompt with `settings` (see [`parse_intruder_with`]).
    pub fn resolve_with(
        self,
        answer: &str,
        settings: &PromptSettings,
    ) -> (IntruderOutcome, Option<Error>) {
        let (interpretation, prediction, error) =
            match parse_intruder_with(answer, self.examples.len(), settings) {
                Ok((interpretation, p)) => (interpretation, Some(p), None),
                Err(e) => (String::new(), None, Some(e)),
            };
        let outcome = IntruderOutcome {
            interpretation,
            correct_index: self.intruder_index,
            correct: prediction.map(|p| p == self.intruder_index),
            prediction,
            sample: self,
        };
        (outcome, error)
    }

    /// A failed outcome, e.g. when the request itself failed.
    pub fn fail(self) -> IntruderOutcome {
        IntruderOutcome {
            interpretation: String::new(),
            prediction: None,
            correct_index: self.intruder_index,
            correct: None,
            sample: self,
        }
    }
}

fn highlighted_count(e: &Example, threshold: f32) -> usize {
    above_threshold(e, threshold).iter().filter(|b| **b).count()
}

/// The intruder trials of `record`, one per non-activating example, as delphi builds them, except
/// that every trial shows exactly `n_examples_shown` excerpts.
///
/// Test examples are grouped by quantile and the groups taken in turn. Each trial shows
/// `n_examples_shown − 1` examples of one group, drawn without replacement and highlighted
/// correctly, plus one non-activating example inserted at a random place. The intruder is
/// highlighted by its own activations if it has any (a neighbour's, see autointerp-latents),
/// else on as many random tokens as the majority excerpts have highlighted on average (rounded,
/// at least 1).
///
/// delphi shows fewer excerpts when a quantile has fewer test examples than that; a small
/// latent (10 test examples over 10 quantiles) then gets trials of two excerpts, which a judge
/// that cannot tell anything passes half the time and a perfect one can only guess. Here a
/// quantile too small for a trial is pooled with the next weaker ones until the pool is large
/// enough (a small remainder joins the last pool), and the trial's `chosen_quantile` is the one
/// most of its majority excerpts come from (the stronger on a tie).
///
/// # Errors
/// [`Error::TooFewExamples`] when the record has fewer than `n_examples_shown − 1` test
/// examples: the latent is skipped, not scored. [`Error::NotEnoughExamples`] without
/// non-activating examples; [`Error::InvalidConfig`] when `n_examples_shown < 2`.
pub fn intruder_trials(record: &LatentRecord, cfg: &IntruderConfig) -> Result<Vec<IntruderTrial>> {
    if cfg.n_examples_shown < 2 {
        return Err(Error::InvalidConfig(format!(
            "the intruder scorer needs n_examples_shown >= 2, got {}",
            cfg.n_examples_shown
        )));
    }
    let majority = cfg.n_examples_shown - 1;
    if record.test.len() < majority {
        return Err(Error::TooFewExamples {
            latent: record.id,
            scorer: INTRUDER,
            what: "test examples",
            have: record.test.len(),
            need: majority,
        });
    }
    if record.non_activating.is_empty() {
        return Err(Error::NotEnoughExamples {
            latent: record.id,
            what: "no non-activating examples to use as intruders".into(),
        });
    }
    let groups = pooled_quantiles(&record.test, majority);
    let mut rng = latent_rng(cfg.seed, &record.id, "intruder");
    let mut trials = Vec::with_capacity(record.non_activating.len());
    for (i, intruder) in record.non_activating.iter().enumerate() {
        let members = &groups[i % groups.len()];
        let k = majority;
        let chosen: Vec<&Example> = members.choose_multiple(&mut rng, k).copied().collect();
        let mut examples: Vec<&Example> = chosen.clone();
        let mut texts: Vec<String> = chosen
            .iter()
            .map(|e| render_highlighted(&e.str_tokens, &above_threshold(e, cfg.threshold)))
            .collect();
        let own = above_threshold(intruder, cfg.threshold);
        let mask = if own.iter().any(|b| *b) {
            own
        } else {
            let total: usize = chosen
                .iter()
                .map(|e| highlighted_count(e, cfg.threshold))
                .sum();
            let n = ((total as f64 / k as f64).round() as usize).clamp(1, own.len().max(1));
            let mut mask = vec![false; own.len()];
            for j in index::sample(&mut rng, own.len(), n.min(own.len())) {
                mask[j] = true;
            }
            mask
        };
        let at = rng.random_range(0..=k);
        texts.insert(at, render_highlighted(&intruder.str_tokens, &mask));
        examples.insert(at, intruder);
        trials.push(IntruderTrial {
            examples: texts,
            intruder_index: at,
            chosen_quantile: most_common_quantile(&chosen),
            activations: examples.iter().map(|e| e.activations.clone()).collect(),
            tokens: examples.iter().map(|e| e.str_tokens.clone()).collect(),
            intruder_distance: intruder.distance.unwrap_or(-1.0),
        });
    }
    Ok(trials)
}

/// `test` grouped by quantile, strongest first (examples without one first), each group pooled
/// with the next weaker ones until it holds at least `majority` examples; a remainder smaller
/// than that joins the last group. Needs `test.len() >= majority`.
fn pooled_quantiles(test: &[Example], majority: usize) -> Vec<Vec<&Example>> {
    let mut by_quantile: BTreeMap<u8, Vec<&Example>> = BTreeMap::new();
    for e in test {
        by_quantile
            .entry(e.quantile.unwrap_or(0))
            .or_default()
            .push(e);
    }
    let mut groups: Vec<Vec<&Example>> = Vec::new();
    let mut pool: Vec<&Example> = Vec::new();
    for (_, members) in by_quantile {
        pool.extend(members);
        if pool.len() >= majority {
            groups.push(std::mem::take(&mut pool));
        }
    }
    match groups.last_mut() {
        Some(last) => last.extend(pool),
        None => groups.push(pool),
    }
    groups
}

/// The quantile most of `examples` come from, the stronger (lower) on a tie; 0 when they carry
/// none.
fn most_common_quantile(examples: &[&Example]) -> u8 {
    let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
    for e in examples {
        *counts.entry(e.quantile.unwrap_or(0)).or_default() += 1;
    }
    // `max_by_key` keeps the last maximum, so walk from the weakest quantile to the strongest.
    counts
        .into_iter()
        .rev()
        .max_by_key(|&(_, n)| n)
        .map_or(0, |(q, _)| q)
}

/// The intruder prompt for one trial: instructions (system), two worked examples, then the
/// trial's numbered excerpts (user), from the built-in `intruder.jinja`. Excerpts are numbered
/// from 1; [`parse_intruder`] maps the answer back to a 0-based index.
pub fn intruder_prompt(trial: &IntruderTrial, cot: bool) -> Vec<Message> {
    crate::detection::built_in(intruder_prompt_with(&PromptSet::embedded(), trial, cot))
}

/// [`intruder_prompt`] from `prompts`' `intruder.jinja`, the excerpts' highlights redrawn with
/// the template's markers; read the answer with [`parse_intruder_with`] and the template's
/// settings.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this trial.
pub fn intruder_prompt_with(
    prompts: &PromptSet,
    trial: &IntruderTrial,
    cot: bool,
) -> std::result::Result<Vec<Message>, PromptError> {
    let markers = &prompts.settings(PromptKind::Intruder).highlight;
    let context = IntruderContext {
        examples: trial
            .examples
            .iter()
            .map(|e| Excerpt::plain(rehighlight(e, markers)))
            .collect(),
        cot,
    };
    prompts.render_messages(PromptKind::Intruder, &context)
}

/// Reads the intruder's 0-based index from an answer to a prompt of `n` excerpts: the number
/// (1-based, as shown) after the last [`INTRUDER_MARKER`] (any case, colon optional), or the
/// whole answer when it is just a number. Also returns the text before the marker.
///
/// ```
/// use autointerp_score::parse_intruder;
/// assert_eq!(parse_intruder("Most are rivers.\n[INTRUDER]: 3", 5)?, ("Most are rivers.".to_string(), 2));
/// assert!(parse_intruder("[INTRUDER]: 6", 5).is_err());
/// # Ok::<(), autointerp_score::Error>(())
/// ```
pub fn parse_intruder(answer: &str, n: usize) -> Result<(String, usize)> {
    parse_intruder_with(answer, n, &PromptSettings::defaults(PromptKind::Intruder))
}

/// [`parse_intruder`] for a prompt with `settings` (a template's): the number follows its
/// `answer_marker` (without the colon, any case) and counts from its `numbering_base`.
///
/// ```
/// use autointerp_explain::prompts::{PromptKind, PromptSettings};
/// use autointerp_score::parse_intruder_with;
///
/// let mut settings = PromptSettings::defaults(PromptKind::Intruder);
/// settings.answer_marker = "[RESPONSE]:".into();
/// settings.numbering_base = 0;
/// assert_eq!(parse_intruder_with("Odd one.\n[RESPONSE]: 0", 4, &settings)?.1, 0);
/// assert!(parse_intruder_with("[RESPONSE]: 4", 4, &settings).is_err());
/// # Ok::<(), autointerp_score::Error>(())
/// ```
pub fn parse_intruder_with(
    answer: &str,
    n: usize,
    settings: &PromptSettings,
) -> Result<(String, usize)> {
    let marker = settings.answer_marker.trim();
    let tag = marker.trim_end_matches(':').trim_end();
    let base = settings.numbering_base;
    let found = (!tag.is_empty())
        .then(|| {
            answer
                .as_bytes()
                .windows(tag.len())
                .rposition(|w| w.eq_ignore_ascii_case(tag.as_bytes()))
        })
        .flatten();
    let (before, after) = match found {
        Some(at) => (answer[..at].trim(), &answer[at + tag.len()..]),
        None => ("", answer),
    };
    let after = after.trim_start_matches([':', '*', ' ', '\t', '\n', '\r']);
    let after = ["Excerpt", "excerpt", "Example", "example"]
        .iter()
        .find_map(|word| after.strip_prefix(word))
        .unwrap_or(after);
    let after = after.trim_start_matches([' ', '#', '*']);
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(parse_failure(
            format!("no excerpt number after {marker}"),
            answer,
        ));
    }
    // Without the marker, the answer must be the number alone.
    if found.is_none() && !after[digits..].trim().trim_end_matches('.').is_empty() {
        return Err(parse_failure(format!("no {marker} marker"), answer));
    }
    let k: usize = after[..digits]
        .parse()
        .map_err(|_| parse_failure("excerpt number too large", answer))?;
    match k.checked_sub(base).filter(|i| *i < n) {
        Some(i) => Ok((before.to_string(), i)),
        None => Err(parse_failure(
            format!(
                "excerpt {k} is not in {base}..={}",
                (base + n).saturating_sub(1)
            ),
            answer,
        )),
    }
}

/// The intruder scorer: [`intruder_trials`] shown with [`intruder_prompt`], one request per
/// trial ([`IntruderScorer::with_prompts`] renders them from other templates). It needs no explanation (it measures how interpretable the latent's examples are);
/// the one given is ignored.
///
/// The score is the fraction of trials whose intruder was found, among the trials whose answer
/// could be read (0 when none could). Requests are greedy, up to 500 tokens.
#[derive(Debug, Clone)]
pub struct IntruderScorer<C> {
    client: C,
    config: IntruderConfig,
    prompts: Arc<PromptSet>,
    generation: GenerationConfig,
}

impl<C> IntruderScorer<C> {
    /// An intruder scorer asking `client`, with options `config`.
    pub fn new(client: C, config: IntruderConfig) -> Self {
        Self {
            client,
            config,
            prompts: PromptSet::embedded(),
            generation: GenerationConfig::default().with_max_tokens(500),
        }
    }

    /// Renders its prompts from `prompts` instead of the built-in templates, and reads answers
    /// by their answer marker and numbering.
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

    /// The options.
    pub fn config(&self) -> &IntruderConfig {
        &self.config
    }
}

impl<C: Client> IntruderScorer<C> {
    /// Runs `record`'s intruder trials; see [`Scorer::score`].
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = INTRUDER))]
    pub async fn score(&self, record: &LatentRecord) -> Result<ScorerResult> {
        let trials = intruder_trials(record, &self.config)?;
        self.ask(record, trials.into_iter().map(Err).collect())
            .await
    }

    /// Runs again the trials that failed in `previous`, keeping the others' outcomes verbatim;
    /// see [`Scorer::retry_failed`]. All trials run again when `previous` is not the outcomes
    /// of the trials these options build.
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = INTRUDER))]
    pub async fn retry_failed(
        &self,
        record: &LatentRecord,
        previous: &ScoreDetails,
    ) -> Result<ScorerResult> {
        let trials = intruder_trials(record, &self.config)?;
        let old = match previous {
            ScoreDetails::Intruder { outcomes } => outcomes.as_slice(),
            _ => &[],
        };
        let same =
            old.len() == trials.len() && old.iter().zip(&trials).all(|(o, t)| o.sample == *t);
        if !same {
            tracing::debug!("earlier outcomes do not match the trials: running them all");
        }
        let slots = trials
            .into_iter()
            .enumerate()
            .map(|(i, trial)| match old.get(i) {
                Some(o) if same && o.correct.is_some() => Ok(o.clone()),
                _ => Err(trial),
            })
            .collect();
        self.ask(record, slots).await
    }

    /// Asks for the trials in `slots` (`Err`), keeps the outcomes given (`Ok`). Fails only when
    /// every request failed and nothing was kept.
    async fn ask(
        &self,
        record: &LatentRecord,
        slots: Vec<std::result::Result<IntruderOutcome, IntruderTrial>>,
    ) -> Result<ScorerResult> {
        let prompts = slots
            .iter()
            .filter_map(|s| s.as_ref().err())
            .map(|trial| intruder_prompt_with(&self.prompts, trial, self.config.cot))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let settings = self.prompts.settings(PromptKind::Intruder);
        let requests = prompts
            .into_iter()
            .map(|messages| self.client.chat(self.generation.request(messages)));
        let responses = futures::future::join_all(requests).await;
        let responses = if slots.iter().any(std::result::Result::is_ok) {
            responses
        } else {
            unless_all_failed(responses)?
        };
        let mut responses = responses.into_iter();
        let mut outcomes = Vec::with_capacity(slots.len());
        let mut failures = Vec::new();
        let mut usage = Usage::default();
        for slot in slots {
            let trial = match slot {
                Ok(kept) => {
                    outcomes.push(kept);
                    continue;
                }
                Err(trial) => trial,
            };
            let outcome = match responses.next() {
                Some(Ok(r)) => {
                    add_usage(&mut usage, &r.usage);
                    let (outcome, error) = trial.resolve_with(&r.text, settings);
                    if let Some(e) = error {
                        failures.push(e.to_string());
                    }
                    outcome
                }
                Some(Err(e)) => {
                    failures.push(Error::Client(e).to_string());
                    trial.fail()
                }
                None => trial.fail(),
            };
            outcomes.push(outcome);
        }
        let scored = outcomes.iter().filter(|o| o.correct.is_some()).count();
        let right = outcomes.iter().filter(|o| o.correct == Some(true)).count();
        let n_failed = outcomes.len() - scored;
        if n_failed > 0 {
            tracing::debug!(n_failed, "intruder trials failed");
        }
        Ok(ScorerResult {
            score: Score {
                latent: record.id,
                scorer: INTRUDER.to_string(),
                value: if scored == 0 {
                    0.0
                } else {
                    right as f64 / scored as f64
                },
                n_failed,
            },
            details: ScoreDetails::Intruder { outcomes },
            failures,
            usage,
        })
    }
}

impl<C: Client> Scorer for IntruderScorer<C> {
    fn name(&self) -> &'static str {
        INTRUDER
    }
    fn score(
        &self,
        record: &LatentRecord,
        _explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        IntruderScorer::score(self, record)
    }
    fn retry_failed(
        &self,
        record: &LatentRecord,
        _explanation: &Explanation,
        previous: &ScoreDetails,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        IntruderScorer::retry_failed(self, record, previous)
    }
    fn reads_explanation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_marker_is_the_templates() {
        assert_eq!(
            PromptSettings::defaults(PromptKind::Intruder).answer_marker,
            INTRUDER_MARKER
        );
    }

    #[test]
    fn parses_answers() {
        assert_eq!(parse_intruder("[INTRUDER]: 1", 4).unwrap().1, 0);
        assert_eq!(parse_intruder("**[Intruder]:** Excerpt 4", 4).unwrap().1, 3);
        assert_eq!(
            parse_intruder("[INTRUDER]: 2\nthinking again\n[INTRUDER]: 3", 4)
                .unwrap()
                .1,
            2
        );
        assert_eq!(parse_intruder(" 2. ", 4).unwrap().1, 1);
        for bad in [
            "",
            "[INTRUDER]: none",
            "[INTRUDER]: 0",
            "[INTRUDER]: 5",
            "I think 2",
            "[INTRUDER]: 99999999999999999999999",
        ] {
            assert!(parse_intruder(bad, 4).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(answer in "\\PC{0,40}", n in 0usize..8) {
            if let Ok((_, k)) = parse_intruder(&answer, n) {
                proptest::prop_assert!(k < n);
            }
        }
    }
}
