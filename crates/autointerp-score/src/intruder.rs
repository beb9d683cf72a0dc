//! Intruder detection: among excerpts of one activation quantile plus one intruder, can the
//! scorer find the intruder? Needs no explanation: it scores how interpretable the latent is.

use std::collections::BTreeMap;
use std::future::Future;

use autointerp_client::{Client, Usage};
use autointerp_core::{Example, Explanation, LatentRecord, Message, Score};
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
    /// The quantile the other excerpts were drawn from (0 when examples carry none).
    pub chosen_quantile: u8,
    /// Activations of each excerpt.
    pub activations: Vec<Vec<f32>>,
    /// Tokens of each excerpt.
    pub tokens: Vec<Vec<String>>,
    /// The intruder's distance to the latent, `-1` when it has none (delphi's convention).
    pub intruder_distance: f32,
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
        let (interpretation, prediction, error) = match parse_intruder(answer, self.examples.len())
        {
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

/// The intruder trials of `record`, one per non-activating example, as delphi builds them.
///
/// Test examples are grouped by quantile and the groups taken in turn. Each trial shows up to
/// `n_examples_shown − 1` examples of one group, drawn without replacement and highlighted
/// correctly, plus one non-activating example inserted at a random place. The intruder is
/// highlighted by its own activations if it has any, else on as many random tokens as the
/// majority excerpts have highlighted on average (rounded, at least 1).
pub fn intruder_trials(record: &LatentRecord, cfg: &IntruderConfig) -> Result<Vec<IntruderTrial>> {
    if cfg.n_examples_shown < 2 {
        return Err(Error::InvalidConfig(
            "the intruder scorer needs n_examples_shown >= 2".into(),
        ));
    }
    let missing = |what: &str| Error::NotEnoughExamples {
        latent: record.id,
        what: what.into(),
    };
    if record.test.is_empty() {
        return Err(missing("no test examples for intruder trials"));
    }
    if record.non_activating.is_empty() {
        return Err(missing("no non-activating examples to use as intruders"));
    }
    let mut groups: BTreeMap<u8, Vec<&Example>> = BTreeMap::new();
    for e in &record.test {
        groups.entry(e.quantile.unwrap_or(0)).or_default().push(e);
    }
    let groups: Vec<(u8, Vec<&Example>)> = groups.into_iter().collect();
    let mut rng = latent_rng(cfg.seed, &record.id, "intruder");
    let mut trials = Vec::with_capacity(record.non_activating.len());
    for (i, intruder) in record.non_activating.iter().enumerate() {
        let (quantile, members) = &groups[i % groups.len()];
        let k = (cfg.n_examples_shown - 1).min(members.len());
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
            chosen_quantile: *quantile,
            activations: examples.iter().map(|e| e.activations.clone()).collect(),
            tokens: examples.iter().map(|e| e.str_tokens.clone()).collect(),
            intruder_distance: intruder.distance.unwrap_or(-1.0),
        });
    }
    Ok(trials)
}

const SYSTEM: &str = "You are a careful linguist playing an odd-one-out game with text.

You will be given numbered text excerpts. All but one of them were chosen because the same feature of \
a language model is active in them, and the tokens where it is active are marked between << and >>. \
The remaining excerpt, the intruder, was chosen differently: its marked tokens, if any, are not what \
the feature responds to.

Find the pattern the excerpts share, then the one excerpt that does not fit it. There is exactly one \
intruder. Finish with a line that starts with [INTRUDER]: followed by the intruder's excerpt number only.";

const SYSTEM_COT: &str =
    "\n\nBefore that line, say in one or two sentences what most excerpts have in common \
and why the intruder does not fit.";

const SHOTS: [(&[&str], &str, &str); 2] = [
    (
        &[
            "The flight takes about six<< hours>> from here",
            "Let the dough rest for ten<< minutes>> before rolling",
            "She bought three apples and a<< pear>>",
            "The warranty lasts two<< years>> from purchase",
        ],
        "Excerpts 1, 2 and 4 mark a unit of time after a number; excerpt 3 marks a fruit.",
        "3",
    ),
    (
        &[
            "Our team meets every<< Tuesday>> at noon",
            "He ported the library from<< Java>> to<< Kotlin>>",
            "Most scripts here are written in<< Perl>>",
            "The legacy code is in<< Visual Basic>>",
            "I wrote the parser in<< Rust>>",
        ],
        "Excerpts 2 to 5 mark names of programming languages; excerpt 1 marks a weekday.",
        "1",
    ),
];

fn numbered(excerpts: &[impl AsRef<str>]) -> String {
    let lines: Vec<String> = excerpts
        .iter()
        .enumerate()
        .map(|(i, e)| format!("Excerpt {}: {}", i + 1, e.as_ref()))
        .collect();
    format!("Excerpts:\n{}", lines.join("\n"))
}

/// The intruder prompt for one trial: instructions (system), two worked examples, then the
/// trial's numbered excerpts (user). Excerpts are numbered from 1; [`parse_intruder`] maps the
/// answer back to a 0-based index.
pub fn intruder_prompt(trial: &IntruderTrial, cot: bool) -> Vec<Message> {
    let mut system = SYSTEM.to_string();
    if cot {
        system.push_str(SYSTEM_COT);
    }
    let mut messages = vec![Message::system(system)];
    for (excerpts, reasoning, answer) in SHOTS {
        messages.push(Message::user(numbered(excerpts)));
        let answer = if cot {
            format!("{reasoning}\n{INTRUDER_MARKER} {answer}")
        } else {
            format!("{INTRUDER_MARKER} {answer}")
        };
        messages.push(Message::assistant(answer));
    }
    messages.push(Message::user(numbered(&trial.examples)));
    messages
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
    let tag = "[intruder]";
    let found = answer
        .as_bytes()
        .windows(tag.len())
        .rposition(|w| w.eq_ignore_ascii_case(tag.as_bytes()));
    let (before, after) = match found {
        Some(at) => (answer[..at].trim(), &answer[at + tag.len()..]),
        None => ("", answer),
    };
    let after = after.trim_start_matches([':', '*', ' ', '\t', '\n', '\r']);
    let after = after
        .strip_prefix("Excerpt")
        .or_else(|| after.strip_prefix("excerpt"))
        .unwrap_or(after);
    let after = after.trim_start_matches([' ', '#', '*']);
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(parse_failure("no excerpt number after [INTRUDER]:", answer));
    }
    // Without the marker, the answer must be the number alone.
    if found.is_none() && !after[digits..].trim().trim_end_matches('.').is_empty() {
        return Err(parse_failure("no [INTRUDER]: marker", answer));
    }
    let k: usize = after[..digits]
        .parse()
        .map_err(|_| parse_failure("excerpt number too large", answer))?;
    if k == 0 || k > n {
        return Err(parse_failure(
            format!("excerpt {k} is not in 1..={n}"),
            answer,
        ));
    }
    Ok((before.to_string(), k - 1))
}

/// The intruder scorer: [`intruder_trials`] shown with [`intruder_prompt`], one request per
/// trial. It needs no explanation (it measures how interpretable the latent's examples are);
/// the one given is ignored.
///
/// The score is the fraction of trials whose intruder was found, among the trials whose answer
/// could be read (0 when none could). Requests are greedy, up to 500 tokens.
#[derive(Debug, Clone)]
pub struct IntruderScorer<C> {
    client: C,
    config: IntruderConfig,
    generation: GenerationConfig,
}

impl<C> IntruderScorer<C> {
    /// An intruder scorer asking `client`, with options `config`.
    pub fn new(client: C, config: IntruderConfig) -> Self {
        Self {
            client,
            config,
            generation: GenerationConfig::default().with_max_tokens(500),
        }
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
        let requests = trials.iter().map(|trial| {
            self.client.chat(
                self.generation
                    .request(intruder_prompt(trial, self.config.cot)),
            )
        });
        let responses = unless_all_failed(futures::future::join_all(requests).await)?;
        let mut outcomes = Vec::with_capacity(trials.len());
        let mut failures = Vec::new();
        let mut usage = Usage::default();
        for (trial, response) in trials.into_iter().zip(responses) {
            let outcome = match response {
                Ok(r) => {
                    add_usage(&mut usage, &r.usage);
                    let (outcome, error) = trial.resolve(&r.text);
                    if let Some(e) = error {
                        failures.push(e.to_string());
                    }
                    outcome
                }
                Err(e) => {
                    failures.push(Error::Client(e).to_string());
                    trial.fail()
                }
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
    fn reads_explanation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
