//! Fuzzing: can the scorer tell correctly highlighted excerpts from wrongly highlighted ones?

use autointerp_core::{Example, LatentRecord, Message};
use autointerp_explain::{above_threshold, render_highlighted};
use rand::seq::{index, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::classifier::{into_batches, latent_rng, ClassifierScorer, ClassifierTask};
use crate::detection::{built_in, classifier_prompt, classifier_prompt_one, pending};
use crate::{Batch, ClassifierConfig, Error, ExampleOutcome, Result};
use autointerp_explain::prompts::{PromptError, PromptKind, PromptSet};

/// Name of the fuzzing scorer, as in delphi (`scores/fuzz/`).
pub const FUZZ: &str = "fuzz";

/// Where the wrongly highlighted excerpts come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FuzzMode {
    /// delphi's default: non-activating examples with random tokens highlighted (how many:
    /// [`WrongCount`]).
    #[default]
    Default,
    /// delphi's `active`: each test example a second time, with wrong tokens highlighted (how
    /// many: [`WrongCount`]). Harder: the text itself is on topic.
    Active,
}

/// How many tokens a wrongly highlighted excerpt gets (excerpts highlighted by their own
/// activations, such as a neighbour's non-activating examples, are not counted this way).
///
/// The correct excerpts highlight only the tokens above the threshold, while delphi counts
/// every nonzero activation. For a latent with many weak activations (say 6 nonzero tokens, 2
/// above the threshold) delphi's wrong excerpts then carry three times as many highlights as
/// the right ones, and a judge can answer from the count alone without reading the
/// explanation. [`WrongCount::MatchHighlighted`] removes that cue; [`WrongCount::MeanNonzero`]
/// is the default so that scores compare with delphi's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WrongCount {
    /// delphi's: `ceil(mean number of nonzero activations per test example)`, the same for
    /// every wrongly highlighted excerpt, in both [`FuzzMode`]s.
    #[default]
    MeanNonzero,
    /// As many as the correct highlighting shows: in [`FuzzMode::Default`],
    /// `ceil(mean number of tokens above the threshold per test example)`; in
    /// [`FuzzMode::Active`], each test example's own number of tokens above the threshold.
    MatchHighlighted,
}

/// Options of the fuzzing scorer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FuzzConfig {
    /// Batching, highlighting threshold and seed.
    #[serde(flatten)]
    pub classifier: ClassifierConfig,
    /// Where the wrongly highlighted excerpts come from.
    pub mode: FuzzMode,
    /// How many tokens each wrongly highlighted excerpt gets.
    pub wrong_count: WrongCount,
}

/// `k` distinct random positions among those not highlighted in `correct`, as a mask; `None`
/// when no position is free.
fn wrong_mask(correct: &[bool], k: usize, rng: &mut impl Rng) -> Option<Vec<bool>> {
    let free: Vec<usize> = (0..correct.len()).filter(|&i| !correct[i]).collect();
    if free.is_empty() || k == 0 {
        return None;
    }
    let mut mask = vec![false; correct.len()];
    for i in index::sample(rng, free.len(), k.min(free.len())) {
        mask[free[i]] = true;
    }
    Some(mask)
}

/// The fuzzing batches of `record`, shuffled and batched like detection's.
///
/// Correctly highlighted: every test example, with its tokens above the threshold highlighted
/// (answer 1). Wrongly highlighted (answer 0), by [`FuzzMode`], with as many wrong tokens as
/// [`FuzzConfig::wrong_count`] says (delphi's `ceil(mean nonzero activations per test
/// example)` by default):
/// - `Default`: each non-activating example with that many random tokens highlighted. A
///   non-activating example that does carry activations (a neighbouring latent's, see
///   autointerp-latents) is highlighted by its own tokens above the threshold instead, as
///   delphi does; delphi decides this for all of them by the first one, we per example.
/// - `Active`: each test example again, with that many of its tokens not above the threshold
///   highlighted, marked `activating: false` (delphi's distance `-1`).
///
/// Wrong tokens are drawn uniformly without replacement from the latent's seeded generator
/// (delphi always includes token `len − len / 4` among them; we do not); an example with no
/// token left to mark wrongly is left out.
pub fn fuzz_batches(record: &LatentRecord, cfg: &FuzzConfig) -> Result<Vec<Batch>> {
    let c = &cfg.classifier;
    c.validate()?;
    let missing = |what: &str| Error::NotEnoughExamples {
        latent: record.id,
        what: what.into(),
    };
    if record.test.is_empty() {
        return Err(missing("no test examples to fuzz"));
    }
    let mut rng = latent_rng(c.seed, &record.id, "fuzz");
    let correct = |e: &Example| above_threshold(e, c.threshold);
    let n_correct = |e: &Example| correct(e).iter().filter(|b| **b).count();
    let mean_ceil = |count: &dyn Fn(&Example) -> usize| {
        let total: usize = record.test.iter().map(count).sum();
        total.div_ceil(record.test.len()).max(1)
    };
    let mean_nonzero =
        mean_ceil(&|e: &Example| e.activations.iter().filter(|a| **a != 0.0).count());
    let mut items: Vec<ExampleOutcome> = Vec::new();
    match cfg.mode {
        FuzzMode::Default => {
            if record.non_activating.is_empty() {
                return Err(missing("no non-activating examples to highlight wrongly"));
            }
            let n_wrong = match cfg.wrong_count {
                WrongCount::MeanNonzero => mean_nonzero,
                WrongCount::MatchHighlighted => mean_ceil(&n_correct),
            };
            for e in &record.non_activating {
                let own = correct(e);
                let mask = if own.iter().any(|b| *b) {
                    Some(own)
                } else {
                    wrong_mask(&own, n_wrong, &mut rng)
                };
                if let Some(mask) = mask {
                    items.push(pending(e, false, render_highlighted(&e.str_tokens, &mask)));
                }
            }
        }
        FuzzMode::Active => {
            for e in &record.test {
                let own = correct(e);
                let k = match cfg.wrong_count {
                    WrongCount::MeanNonzero => mean_nonzero,
                    WrongCount::MatchHighlighted => own.iter().filter(|b| **b).count(),
                };
                if let Some(mask) = wrong_mask(&own, k, &mut rng) {
                    let mut o = pending(e, false, render_highlighted(&e.str_tokens, &mask));
                    o.distance = None;
                    items.push(o);
                }
            }
        }
    }
    items.extend(
        record
            .test
            .iter()
            .map(|e| pending(e, true, render_highlighted(&e.str_tokens, &correct(e)))),
    );
    items.shuffle(&mut rng);
    Ok(into_batches(items, c.batch_size()))
}

/// The fuzzing prompt for one excerpt in [`AnswerMode::Logprob`](crate::AnswerMode::Logprob):
/// instructions asking for a single digit (system), four worked examples, then the explanation
/// and the highlighted excerpt (user), from the built-in `fuzzing_one.jinja`.
pub fn fuzz_prompt_one(explanation: &str, excerpt: &str) -> Vec<Message> {
    built_in(fuzz_prompt_one_with(
        &PromptSet::embedded(),
        explanation,
        excerpt,
    ))
}

/// [`fuzz_prompt_one`] from `prompts`' `fuzzing_one.jinja`, the excerpt's highlights redrawn
/// with the template's markers.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this excerpt.
pub fn fuzz_prompt_one_with(
    prompts: &PromptSet,
    explanation: &str,
    excerpt: &str,
) -> std::result::Result<Vec<Message>, PromptError> {
    classifier_prompt_one(prompts, PromptKind::FuzzingOne, explanation, excerpt)
}

/// The fuzzing prompt for one batch: instructions (system), three worked examples, then the
/// explanation and the batch's highlighted excerpts (user), from the built-in
/// `fuzzing.jinja`. The answer is read with [`Batch::resolve`].
pub fn fuzz_prompt(explanation: &str, batch: &Batch) -> Vec<Message> {
    built_in(fuzz_prompt_with(&PromptSet::embedded(), explanation, batch))
}

/// [`fuzz_prompt`] from `prompts`' `fuzzing.jinja`, the excerpts' highlights redrawn with the
/// template's markers; read the answer with [`Batch::resolve_numbered`] and the template's
/// `numbering_base`.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this batch.
pub fn fuzz_prompt_with(
    prompts: &PromptSet,
    explanation: &str,
    batch: &Batch,
) -> std::result::Result<Vec<Message>, PromptError> {
    classifier_prompt(prompts, PromptKind::Fuzzing, explanation, batch)
}

/// The fuzzing task of a [`ClassifierScorer`]: highlighted excerpts, "is the highlighting
/// right?".
#[derive(Debug, Clone, Copy, Default)]
pub struct Fuzzing;

impl ClassifierTask for Fuzzing {
    type Config = FuzzConfig;
    const NAME: &'static str = FUZZ;

    fn classifier(config: &FuzzConfig) -> &ClassifierConfig {
        &config.classifier
    }
    fn batches(record: &LatentRecord, config: &FuzzConfig) -> Result<Vec<Batch>> {
        fuzz_batches(record, config)
    }
    fn prompt(explanation: &str, batch: &Batch) -> Vec<Message> {
        fuzz_prompt(explanation, batch)
    }
    fn prompt_one(explanation: &str, excerpt: &str) -> Vec<Message> {
        fuzz_prompt_one(explanation, excerpt)
    }
    fn templates() -> Option<(PromptKind, PromptKind)> {
        Some((PromptKind::Fuzzing, PromptKind::FuzzingOne))
    }
    fn render(prompts: &PromptSet, explanation: &str, batch: &Batch) -> Result<Vec<Message>> {
        Ok(fuzz_prompt_with(prompts, explanation, batch)?)
    }
    fn render_one(prompts: &PromptSet, explanation: &str, excerpt: &str) -> Result<Vec<Message>> {
        Ok(fuzz_prompt_one_with(prompts, explanation, excerpt)?)
    }
}

/// The fuzzing scorer: [`fuzz_batches`] shown with [`fuzz_prompt`] (or [`fuzz_prompt_one`] in
/// [`AnswerMode::Logprob`](crate::AnswerMode::Logprob)), one request per batch;
/// [`ClassifierScorer::with_prompts`] renders them from other templates.
///
/// Scored as [`DetectionScorer`](crate::DetectionScorer) is: balanced accuracy, with the ROC AUC
/// of the probability of `1` in the details when the answers came with logprobs. Requests are
/// greedy, up to 200 tokens, with the top 5 logprobs of each answer token.
pub type FuzzingScorer<C> = ClassifierScorer<C, Fuzzing>;
