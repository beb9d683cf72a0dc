//! Fuzzing: can the scorer tell correctly highlighted excerpts from wrongly highlighted ones?

use autointerp_core::{Example, LatentRecord, Message};
use autointerp_explain::{above_threshold, render_highlighted};
use rand::seq::{index, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::classifier::{into_batches, latent_rng, ClassifierScorer, ClassifierTask};
use crate::detection::{pending, query, query_one, shots_messages, shots_one_messages};
use crate::{Batch, ClassifierConfig, Error, ExampleOutcome, Result};

/// Name of the fuzzing scorer, as in delphi (`scores/fuzz/`).
pub const FUZZ: &str = "fuzz";

/// Where the wrongly highlighted excerpts come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FuzzMode {
    /// delphi's default: non-activating examples with random tokens highlighted, as many as the
    /// test examples' correct highlighting has on average (rounded up).
    #[default]
    Default,
    /// delphi's `active`: each test example a second time, with as many wrong tokens
    /// highlighted as its correct highlighting has. Harder: the text itself is on topic.
    Active,
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
/// (answer 1). Wrongly highlighted (answer 0), by [`FuzzMode`]:
/// - `Default`: each non-activating example with `ceil(mean number of highlighted tokens per
///   test example)` random tokens highlighted. A non-activating example that does carry
///   activations (e.g. copied from a neighbouring latent) is highlighted by them instead, as
///   delphi does.
/// - `Active`: each test example again, with as many random non-highlighted tokens highlighted
///   as its correct highlighting has, marked `activating: false` (delphi's distance `-1`).
///
/// Wrong tokens are drawn uniformly without replacement from the latent's seeded generator; an
/// example with no token left to mark wrongly is left out.
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
    let mut items: Vec<ExampleOutcome> = Vec::new();
    match cfg.mode {
        FuzzMode::Default => {
            if record.non_activating.is_empty() {
                return Err(missing("no non-activating examples to highlight wrongly"));
            }
            let total: usize = record
                .test
                .iter()
                .map(|e| correct(e).iter().filter(|b| **b).count())
                .sum();
            let n_wrong = total.div_ceil(record.test.len()).max(1);
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
                let k = own.iter().filter(|b| **b).count();
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

const SYSTEM: &str = "You are a careful linguist checking a description of a language-model feature against text.

You will be given a description of what the feature responds to, followed by numbered text excerpts. \
In each excerpt some tokens are marked between << and >>. Some excerpts are marked correctly and some \
are not: any mix is possible, including all or none.

An excerpt is marked correctly only if every marked token is one the description says the feature \
responds to. Answer with one number per excerpt, in order: 1 if the excerpt is marked correctly, 0 if \
any marked token does not fit. Write the numbers as a list such as [1,0,0] and nothing else.";

const SHOTS: [(&str, &[&str], &str); 3] = [
    (
        "Units of time right after a number, stating a duration.",
        &[
            "The flight takes about six<< hours>> from here",
            "She bought<< three>> apples and a<< pear>>",
            "Let the dough rest for ten<< minutes>> before rolling",
            "What<< time>> is it in Tokyo right now?",
        ],
        "[1,0,1,0]",
    ),
    (
        "Names of programming languages.",
        &[
            "He ported the whole library from<< Java>> to<< Kotlin>>",
            "The<< island>> is famous for its coffee",
            "Most scripts here are written in<< Perl>>",
        ],
        "[1,0,1]",
    ),
    (
        "Negation words (not, n't, never), especially before a positive word.",
        &[
            "I<< don't>> like waiting in line",
            "The results were<< never>> good enough",
            "It is not a<< pleasant>> smell",
        ],
        "[1,1,0]",
    ),
];

const SYSTEM_ONE: &str = "You are a careful linguist checking a description of a language-model feature against text.

You will be given a description of what the feature responds to and one text excerpt in which some \
tokens are marked between << and >>. The marking may be right or wrong.

The marking is right only if every marked token is one the description says the feature responds \
to. Answer 1 if the marking is right, 0 if any marked token does not fit: one digit and nothing else.";

const SHOTS_ONE: [(&str, &str, &str); 4] = [
    (
        "Units of time right after a number, stating a duration.",
        "Let the dough rest for ten<< minutes>> before rolling",
        "1",
    ),
    (
        "Names of programming languages.",
        "The<< island>> is famous for its coffee",
        "0",
    ),
    (
        "Negation words (not, n't, never), especially before a positive word.",
        "The results were<< never>> good enough",
        "1",
    ),
    (
        "Units of time right after a number, stating a duration.",
        "She bought<< three>> apples and a<< pear>>",
        "0",
    ),
];

/// The fuzzing prompt for one excerpt in [`AnswerMode::Logprob`](crate::AnswerMode::Logprob): instructions asking for a
/// single digit (system), four worked examples, then the explanation and the highlighted
/// excerpt (user).
pub fn fuzz_prompt_one(explanation: &str, excerpt: &str) -> Vec<Message> {
    let mut messages = vec![Message::system(SYSTEM_ONE)];
    messages.extend(shots_one_messages(&SHOTS_ONE));
    messages.push(Message::user(query_one(explanation, excerpt)));
    messages
}

/// The fuzzing prompt for one batch: instructions (system), three worked examples, then the
/// explanation and the batch's highlighted excerpts (user). The answer is read with
/// [`Batch::resolve`].
pub fn fuzz_prompt(explanation: &str, batch: &Batch) -> Vec<Message> {
    let mut messages = vec![Message::system(SYSTEM)];
    messages.extend(shots_messages(&SHOTS));
    messages.push(Message::user(query(explanation, &batch.excerpts())));
    messages
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
}

/// The fuzzing scorer: [`fuzz_batches`] shown with [`fuzz_prompt`] (or [`fuzz_prompt_one`] in
/// [`AnswerMode::Logprob`](crate::AnswerMode::Logprob)(crate::AnswerMode::Logprob)), one request per batch.
///
/// Scored as [`DetectionScorer`](crate::DetectionScorer) is: balanced accuracy, with the ROC AUC
/// of the probability of `1` in the details when the answers came with logprobs. Requests are
/// greedy, up to 200 tokens, with the top 5 logprobs of each answer token.
pub type FuzzingScorer<C> = ClassifierScorer<C, Fuzzing>;
