//! Causal scorers: does the explanation say what the latent *does* to the model's output?
//!
//! Both ask an [`Intervener`] for the latent's intervention: a few neutral prompts continued by
//! the subject model as it is and with the latent's decoder direction added at its hook point,
//! at a strength calibrated per latent to a target KL divergence of the next-token
//! distribution (so latents are comparable). Paulo et al. (2024) §3.3.5 score explanations this
//! way; delphi's open pull request #151 proposes the surprisal variant.
//!
//! - [`InterventionScorer`] (`intervention`): a judge reads the explanation and, per prompt,
//!   the two continuations in a seeded random order, and says which one was steered. Score:
//!   accuracy over the prompts (chance 0.5).
//! - [`SurprisalInterventionScorer`] (`surprisal-intervention`): a base model's log-probability
//!   of the explanation after the steered text minus after the clean text, averaged over the
//!   prompts and divided by the KL the steering reached: nats of evidence for the explanation
//!   per nat the output moved (0: the explanation is no likelier after steering).

use std::future::Future;

use autointerp_client::{Client, Intervener, Intervention, SteeredPair, TokenScorer, Usage};
use autointerp_core::{Explanation, LatentRecord, Message, Score};
use autointerp_explain::GenerationConfig;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::classifier::latent_rng;
use crate::scorer::{add_usage, unless_all_failed};
use crate::{Error, Result, ScoreDetails, Scorer, ScorerResult};

/// Name of the judged intervention scorer (`scores/intervention/`).
pub const INTERVENTION: &str = "intervention";
/// Name of the surprisal intervention scorer (`scores/surprisal-intervention/`).
pub const SURPRISAL_INTERVENTION: &str = "surprisal-intervention";

/// One prompt's trial of the judged intervention scorer: a record of its score file, which
/// repeats the latent's intervention in every record (a score file is a list, as delphi's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterventionTrial {
    /// The latent's steering.
    #[serde(flatten)]
    pub intervention: InterventionSummary,
    /// The prompt and its two continuations.
    #[serde(flatten)]
    pub pair: SteeredPair,
    /// Whether the steered continuation was shown first (as continuation 1).
    pub steered_first: bool,
    /// The continuation the judge named (1 or 2); `None` when the answer could not be read.
    pub answer: Option<u8>,
    /// Whether that was the steered one; `None` for a failed trial.
    pub correct: Option<bool>,
    /// The judge's answer as written.
    pub raw: Option<String>,
}

/// One prompt's outcome of the surprisal intervention scorer (a score file record, as
/// [`InterventionTrial`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurprisalInterventionOutcome {
    /// The latent's steering.
    #[serde(flatten)]
    pub intervention: InterventionSummary,
    /// The prompt and its two continuations.
    #[serde(flatten)]
    pub pair: SteeredPair,
    /// Log-probability (nats) of the explanation after the clean text.
    pub clean_logprob: Option<f64>,
    /// Log-probability of the explanation after the steered text.
    pub steered_logprob: Option<f64>,
}

impl SurprisalInterventionOutcome {
    /// Steered minus clean log-probability; `None` for a failed prompt.
    pub fn gain(&self) -> Option<f64> {
        Some(self.steered_logprob? - self.clean_logprob?)
    }
}

/// The intervention both causal scorers record beside their outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterventionSummary {
    /// The multiplier of the decoder direction.
    pub strength: f64,
    /// The KL it was calibrated to.
    pub target_kl: f64,
    /// The KL reached.
    pub kl: f64,
    /// Whether the calibration reached the target.
    pub converged: bool,
}

impl From<&Intervention> for InterventionSummary {
    fn from(i: &Intervention) -> Self {
        Self {
            strength: i.strength,
            target_kl: i.target_kl,
            kl: i.kl,
            converged: i.converged,
        }
    }
}

/// The judge's prompt: which continuation shows the described feature amplified?
pub fn intervention_prompt(
    explanation: &str,
    prompt: &str,
    first: &str,
    second: &str,
) -> Vec<Message> {
    let system = "A language model wrote two continuations of the same text. For one of them, \
                  one feature inside the model was turned up. You get a description of that \
                  feature. Decide which continuation was written with the feature turned up: the \
                  one that shows more of what the description names (its words, its topic, its \
                  style). Answer with a single digit, 1 or 2.";
    let user = format!(
        "Feature: {}\n\nText: {}\n\nContinuation 1: {}\n\nContinuation 2: {}\n\nWhich \
         continuation was written with the feature turned up? Answer 1 or 2.",
        explanation.trim(),
        prompt.trim(),
        first.trim(),
        second.trim(),
    );
    vec![Message::system(system), Message::user(user)]
}

/// The digit a judge answered: from the answer's first token's logprobs when there are some
/// (the likelier of `1` and `2` among the alternatives), else the first `1` or `2` in the text.
fn read_answer(text: &str, logprobs: Option<&autointerp_client::TokenLogprobs>) -> Option<u8> {
    if let Some(first) = logprobs {
        let lp = |digit: &str| {
            first
                .top
                .iter()
                .filter(|(t, _)| t.trim() == digit)
                .map(|&(_, lp)| lp)
                .fold(f32::NEG_INFINITY, f32::max)
        };
        let (one, two) = (lp("1"), lp("2"));
        if one.is_finite() || two.is_finite() {
            return Some(if one >= two { 1 } else { 2 });
        }
    }
    text.chars().find_map(|c| match c {
        '1' => Some(1),
        '2' => Some(2),
        _ => None,
    })
}

/// The judged intervention scorer (`intervention`): for each of the [`Intervener`]'s prompts a
/// judge reads the explanation and the clean and steered continuations, in a seeded random
/// order, and names the steered one. Score: the share named right (chance 0.5).
#[derive(Debug, Clone)]
pub struct InterventionScorer<C, I> {
    client: C,
    intervener: I,
    seed: u64,
    generation: GenerationConfig,
    logprobs: Option<u8>,
}

impl<C, I> InterventionScorer<C, I> {
    /// A scorer asking `client` to judge `intervener`'s continuations; `seed` orders each pair.
    pub fn new(client: C, intervener: I, seed: u64) -> Self {
        Self {
            client,
            intervener,
            seed,
            generation: GenerationConfig::default().with_max_tokens(8),
            logprobs: None,
        }
    }

    /// Sets the judge's generation options.
    #[must_use]
    pub fn with_generation(mut self, generation: GenerationConfig) -> Self {
        self.generation = generation;
        self
    }

    /// Reads the answer from the first token's `k` top logprobs (a judge too small to write a
    /// clean digit still ranks `1` and `2`).
    #[must_use]
    pub fn with_logprobs(mut self, k: Option<u8>) -> Self {
        self.logprobs = k;
        self
    }
}

impl<C: Client, I: Intervener> InterventionScorer<C, I> {
    /// Scores `explanation` of `record`'s latent; see [`Scorer::score`].
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = INTERVENTION))]
    pub async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> Result<ScorerResult> {
        let intervention = self.intervener.intervene(record.id).await?;
        let mut rng = latent_rng(self.seed, &record.id, INTERVENTION);
        let summary = InterventionSummary::from(intervention.as_ref());
        let trials: Vec<InterventionTrial> = intervention
            .pairs
            .iter()
            .map(|pair| InterventionTrial {
                intervention: summary.clone(),
                pair: pair.clone(),
                steered_first: rng.random_bool(0.5),
                answer: None,
                correct: None,
                raw: None,
            })
            .collect();
        let asks = trials.iter().map(|t| {
            let (a, b) = if t.steered_first {
                (&t.pair.steered, &t.pair.clean)
            } else {
                (&t.pair.clean, &t.pair.steered)
            };
            let mut req = self.generation.request(intervention_prompt(
                &explanation.text,
                &t.pair.prompt,
                a,
                b,
            ));
            if let Some(k) = self.logprobs {
                req = req.with_logprobs(k);
            }
            self.client.chat(req)
        });
        let answers = unless_all_failed(futures::future::join_all(asks).await)?;
        let mut usage = Usage::default();
        let mut failures = Vec::new();
        let mut outcomes = Vec::with_capacity(trials.len());
        for (mut t, answer) in trials.into_iter().zip(answers) {
            match answer {
                Ok(r) => {
                    add_usage(&mut usage, &r.usage);
                    let first = r.logprobs.as_ref().and_then(|l| l.first());
                    t.answer = read_answer(&r.text, first);
                    t.correct = t.answer.map(|a| (a == 1) == t.steered_first);
                    if t.answer.is_none() {
                        failures.push(format!("no 1 or 2 in the judge's answer {:?}", r.text));
                    }
                    t.raw = Some(r.text);
                }
                Err(e) => failures.push(Error::Client(e).to_string()),
            }
            outcomes.push(t);
        }
        let scored = outcomes.iter().filter(|t| t.correct.is_some()).count();
        let right = outcomes.iter().filter(|t| t.correct == Some(true)).count();
        Ok(ScorerResult {
            score: Score {
                latent: record.id,
                scorer: INTERVENTION.to_string(),
                value: if scored == 0 {
                    f64::NAN
                } else {
                    right as f64 / scored as f64
                },
                n_failed: outcomes.len() - scored,
            },
            details: ScoreDetails::Intervention { trials: outcomes },
            failures,
            usage,
        })
    }
}

impl<C: Client, I: Intervener> Scorer for InterventionScorer<C, I> {
    fn name(&self) -> &'static str {
        INTERVENTION
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        InterventionScorer::score(self, record, explanation)
    }
}

/// The surprisal intervention score of `outcomes`: their mean gain (steered minus clean
/// log-probability of the explanation) divided by the KL the steering reached; NaN when no
/// prompt was scored, or when the calibration did not reach its target KL.
pub fn surprisal_intervention_value(outcomes: &[SurprisalInterventionOutcome]) -> f64 {
    let gains: Vec<f64> = outcomes
        .iter()
        .filter_map(SurprisalInterventionOutcome::gain)
        .collect();
    let Some(first) = outcomes.first() else {
        return f64::NAN;
    };
    let kl = first.intervention.kl;
    // Unconverged calibration: a latent whose direction barely moves the output would divide
    // ordinary gains by a tiny KL.
    if gains.is_empty() || !first.intervention.converged || kl.is_nan() || kl <= 0.0 {
        return f64::NAN;
    }
    gains.iter().sum::<f64>() / gains.len() as f64 / kl
}

/// The text a base model reads before the explanation: the prompt and one continuation, then
/// a line that the explanation completes.
pub fn surprisal_intervention_prefix(prompt: &str, continuation: &str) -> String {
    format!(
        "Passage: {}{}\n\nThe passage above dwells unusually much on:",
        prompt.trim_end(),
        continuation
    )
}

/// The surprisal intervention scorer (`surprisal-intervention`): a base model's
/// log-probability of the explanation after the steered text minus after the clean text, per
/// prompt; the score is [`surprisal_intervention_value`].
#[derive(Debug, Clone)]
pub struct SurprisalInterventionScorer<T, I> {
    model: T,
    intervener: I,
}

impl<T, I> SurprisalInterventionScorer<T, I> {
    /// A scorer reading log-probabilities from `model` after `intervener`'s continuations.
    pub fn new(model: T, intervener: I) -> Self {
        Self { model, intervener }
    }
}

impl<T: TokenScorer, I: Intervener> SurprisalInterventionScorer<T, I> {
    /// Scores `explanation` of `record`'s latent; see [`Scorer::score`].
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = SURPRISAL_INTERVENTION))]
    pub async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> Result<ScorerResult> {
        let intervention = self.intervener.intervene(record.id).await?;
        let target = format!(" {}", explanation.text.trim());
        let sum = |lps: Vec<f32>| -> Option<f64> {
            let s: f64 = lps.iter().map(|&l| f64::from(l)).sum();
            (!lps.is_empty() && s.is_finite()).then_some(s)
        };
        let asks = intervention.pairs.iter().map(|pair| {
            let clean = surprisal_intervention_prefix(&pair.prompt, &pair.clean);
            let steered = surprisal_intervention_prefix(&pair.prompt, &pair.steered);
            let target = &target;
            async move {
                let (c, s) = futures::join!(
                    self.model.logprobs(&clean, target),
                    self.model.logprobs(&steered, target)
                );
                Ok::<_, autointerp_client::Error>((c?, s?))
            }
        });
        let results = unless_all_failed(futures::future::join_all(asks).await)?;
        let mut failures = Vec::new();
        let summary = InterventionSummary::from(intervention.as_ref());
        let outcomes: Vec<SurprisalInterventionOutcome> = intervention
            .pairs
            .iter()
            .zip(results)
            .map(|(pair, r)| {
                let (clean_logprob, steered_logprob) = match r {
                    Ok((c, s)) => (sum(c), sum(s)),
                    Err(e) => {
                        failures.push(Error::Client(e).to_string());
                        (None, None)
                    }
                };
                SurprisalInterventionOutcome {
                    intervention: summary.clone(),
                    pair: pair.clone(),
                    clean_logprob,
                    steered_logprob,
                }
            })
            .collect();
        let scored = outcomes
            .iter()
            .filter_map(SurprisalInterventionOutcome::gain)
            .count();
        let value = surprisal_intervention_value(&outcomes);
        Ok(ScorerResult {
            score: Score {
                latent: record.id,
                scorer: SURPRISAL_INTERVENTION.to_string(),
                value,
                n_failed: outcomes.len() - scored,
            },
            details: ScoreDetails::SurprisalIntervention { outcomes },
            failures,
            usage: Usage::default(),
        })
    }
}

impl<T: TokenScorer, I: Intervener> Scorer for SurprisalInterventionScorer<T, I> {
    fn name(&self) -> &'static str {
        SURPRISAL_INTERVENTION
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        SurprisalInterventionScorer::score(self, record, explanation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_client::TokenLogprobs;

    #[test]
    fn answers_are_read_from_logprobs_then_text() {
        let lp = TokenLogprobs {
            token: "1".into(),
            logprob: -0.9,
            top: vec![("1".into(), -0.9), (" 2".into(), -0.5)],
        };
        assert_eq!(read_answer("1", Some(&lp)), Some(2));
        assert_eq!(read_answer("Continuation 2.", None), Some(2));
        assert_eq!(read_answer("The first one: 1", None), Some(1));
        assert_eq!(read_answer("neither", None), None);
        let none = TokenLogprobs {
            token: "x".into(),
            logprob: -0.1,
            top: vec![("x".into(), -0.1)],
        };
        assert_eq!(read_answer("2", Some(&none)), Some(2));
    }
}
