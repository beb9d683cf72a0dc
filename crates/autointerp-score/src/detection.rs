//! Detection: can the scorer tell, from the explanation alone, which excerpts activate the latent?

use autointerp_core::{Example, LatentRecord, Message};
use autointerp_explain::escape_text;
use rand::seq::SliceRandom;

use crate::classifier::{into_batches, latent_rng, ClassifierScorer, ClassifierTask};
use crate::{Batch, ClassifierConfig, Error, ExampleOutcome, Result};

/// Name of the detection scorer, as in delphi (`scores/detection/`).
pub const DETECTION: &str = "detection";

/// An outcome for `example` shown as `text`, not yet answered.
pub(crate) fn pending(example: &Example, activating: bool, text: String) -> ExampleOutcome {
    ExampleOutcome {
        str_tokens: example.str_tokens.clone(),
        activations: example.activations.clone(),
        quantile: example.quantile,
        distance: example.distance,
        activating,
        prediction: None,
        probability: None,
        correct: None,
        text: Some(text),
    }
}

/// The detection batches of `record`: its non-activating examples (answer 0) and its test
/// examples (answer 1), shown as plain text without highlights, shuffled with the latent's
/// seeded generator, in batches of [`ClassifierConfig::n_examples_shown`] (the last may be
/// smaller; batches of one in [`AnswerMode::Logprob`](crate::AnswerMode::Logprob)).
pub fn detection_batches(record: &LatentRecord, cfg: &ClassifierConfig) -> Result<Vec<Batch>> {
    cfg.validate()?;
    if record.test.is_empty() {
        return Err(Error::NotEnoughExamples {
            latent: record.id,
            what: "no test examples to detect".into(),
        });
    }
    let mut items: Vec<ExampleOutcome> = record
        .non_activating
        .iter()
        .map(|e| pending(e, false, escape_text(&e.text())))
        .chain(
            record
                .test
                .iter()
                .map(|e| pending(e, true, escape_text(&e.text()))),
        )
        .collect();
    items.shuffle(&mut latent_rng(cfg.seed, &record.id, "detection"));
    Ok(into_batches(items, cfg.batch_size()))
}

const SYSTEM: &str = "You are a careful linguist checking a description of a language-model feature against text.

You will be given a description of what the feature responds to, followed by numbered text excerpts. \
Decide for each excerpt whether the feature would be active anywhere in it, judging only by the description.

Answer with one number per excerpt, in order: 1 if the feature is active in the excerpt, 0 if it is not. \
Write the numbers as a list such as [1,0,0] and nothing else.";

const SHOTS: [(&str, &[&str], &str); 3] = [
    (
        "Units of time right after a number, stating a duration.",
        &[
            "The flight takes about six hours from here",
            "She bought three apples and a pear",
            "Let the dough rest for ten minutes before rolling",
            "What time is it in Tokyo right now?",
        ],
        "[1,0,1,0]",
    ),
    (
        "Names of programming languages.",
        &[
            "The island is famous for its coffee and volcanic beaches",
            "He ported the whole library from Java to Kotlin",
            "Our team meets every Tuesday at noon",
        ],
        "[0,1,0]",
    ),
    (
        "Negation words (not, n't, never), especially before a positive word.",
        &[
            "I don't like waiting in line",
            "The results were never good enough for him",
            "It is not a pleasant smell",
            "We will not forget this kindness",
        ],
        "[1,1,1,1]",
    ),
];

const SYSTEM_ONE: &str =
    "You are a careful linguist checking a description of a language-model feature against text.

You will be given a description of what the feature responds to and one text excerpt. \
Decide whether the feature would be active anywhere in the excerpt, judging only by the description.

Answer 1 if it would be active, 0 if not: one digit and nothing else.";

const SHOTS_ONE: [(&str, &str, &str); 4] = [
    (
        "Units of time right after a number, stating a duration.",
        "Let the dough rest for ten minutes before rolling",
        "1",
    ),
    (
        "Names of programming languages.",
        "The island is famous for its coffee and volcanic beaches",
        "0",
    ),
    (
        "Negation words (not, n't, never), especially before a positive word.",
        "We will not forget this kindness",
        "1",
    ),
    (
        "Units of time right after a number, stating a duration.",
        "She bought three apples and a pear",
        "0",
    ),
];

/// The user message of a one-excerpt classifier prompt.
pub(crate) fn query_one(explanation: &str, excerpt: &str) -> String {
    format!(
        "Feature description: {}\n\nExcerpt: {excerpt}",
        escape_text(explanation.trim())
    )
}

/// Worked examples of a one-excerpt classifier prompt, as user/assistant turns.
pub(crate) fn shots_one_messages(shots: &[(&str, &str, &str)]) -> Vec<Message> {
    shots
        .iter()
        .flat_map(|(explanation, excerpt, answer)| {
            [
                Message::user(query_one(explanation, excerpt)),
                Message::assistant(*answer),
            ]
        })
        .collect()
}

/// The user message of a classifier prompt.
pub(crate) fn query(explanation: &str, excerpts: &str) -> String {
    format!(
        "Feature description: {}\n\nExcerpts:\n{excerpts}",
        escape_text(explanation.trim())
    )
}

pub(crate) fn shots_messages(shots: &[(&str, &[&str], &str)]) -> Vec<Message> {
    let mut messages = Vec::new();
    for (explanation, excerpts, answer) in shots {
        let excerpts: Vec<String> = excerpts
            .iter()
            .enumerate()
            .map(|(i, e)| format!("Excerpt {}: {e}", i + 1))
            .collect();
        messages.push(Message::user(query(explanation, &excerpts.join("\n"))));
        messages.push(Message::assistant(*answer));
    }
    messages
}

/// The detection prompt for one batch: instructions (system), three worked examples, then the
/// explanation and the batch's numbered excerpts (user). The answer is read with
/// [`Batch::resolve`].
pub fn detection_prompt(explanation: &str, batch: &Batch) -> Vec<Message> {
    let mut messages = vec![Message::system(SYSTEM)];
    messages.extend(shots_messages(&SHOTS));
    messages.push(Message::user(query(explanation, &batch.excerpts())));
    messages
}

/// The detection prompt for one excerpt in [`AnswerMode::Logprob`](crate::AnswerMode::Logprob): instructions asking for a
/// single digit (system), four worked examples, then the explanation and the excerpt (user).
pub fn detection_prompt_one(explanation: &str, excerpt: &str) -> Vec<Message> {
    let mut messages = vec![Message::system(SYSTEM_ONE)];
    messages.extend(shots_one_messages(&SHOTS_ONE));
    messages.push(Message::user(query_one(explanation, excerpt)));
    messages
}

/// The detection task of a [`ClassifierScorer`]: plain excerpts, "which activate the latent?".
#[derive(Debug, Clone, Copy, Default)]
pub struct Detection;

impl ClassifierTask for Detection {
    type Config = ClassifierConfig;
    const NAME: &'static str = DETECTION;

    fn classifier(config: &ClassifierConfig) -> &ClassifierConfig {
        config
    }
    fn batches(record: &LatentRecord, config: &ClassifierConfig) -> Result<Vec<Batch>> {
        detection_batches(record, config)
    }
    fn prompt(explanation: &str, batch: &Batch) -> Vec<Message> {
        detection_prompt(explanation, batch)
    }
    fn prompt_one(explanation: &str, excerpt: &str) -> Vec<Message> {
        detection_prompt_one(explanation, excerpt)
    }
}

/// The detection scorer: [`detection_batches`] shown with [`detection_prompt`] (or
/// [`detection_prompt_one`] in [`AnswerMode::Logprob`](crate::AnswerMode::Logprob)(crate::AnswerMode::Logprob)), one request
/// per batch.
///
/// The score is the balanced accuracy over the examples whose answer could be read
/// ([`ClassifierSummary::score`](crate::ClassifierSummary::score)); the details hold the
/// outcomes, the metrics, and the ROC AUC of the probability of `1` when the answers came with
/// logprobs. Requests are greedy, up to 200 tokens, and ask for the top 5 logprobs of each
/// answer token: turn that off with [`ClassifierScorer::with_logprobs`] for servers that reject
/// `logprobs`.
pub type DetectionScorer<C> = ClassifierScorer<C, Detection>;
