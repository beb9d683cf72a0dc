//! Detection: can the scorer tell, from the explanation alone, which excerpts activate the latent?

use std::future::Future;

use autointerp_client::Client;
use autointerp_core::{Example, Explanation, LatentRecord, Message};
use autointerp_explain::{escape_text, GenerationConfig};
use rand::seq::SliceRandom;

use crate::classifier::{into_batches, latent_rng, run_classifier, Asking};
use crate::{
    AnswerMode, Batch, ClassifierConfig, Error, ExampleOutcome, Result, Scorer, ScorerResult,
};

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
/// smaller; batches of one in [`AnswerMode::Logprob`]).
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

/// The only excerpt of a one-excerpt batch, as shown.
pub(crate) fn only_excerpt(batch: &Batch) -> &str {
    batch
        .items
        .first()
        .and_then(|o| o.text.as_deref())
        .unwrap_or_default()
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

/// The detection prompt for one excerpt in [`AnswerMode::Logprob`]: instructions asking for a
/// single digit (system), four worked examples, then the explanation and the excerpt (user).
pub fn detection_prompt_one(explanation: &str, excerpt: &str) -> Vec<Message> {
    let mut messages = vec![Message::system(SYSTEM_ONE)];
    messages.extend(shots_one_messages(&SHOTS_ONE));
    messages.push(Message::user(query_one(explanation, excerpt)));
    messages
}

/// Top alternatives asked for per answer token by the classifier scorers, by default.
pub(crate) const DEFAULT_LOGPROBS: u8 = 5;

/// The detection scorer: [`detection_batches`] shown with [`detection_prompt`], one request per
/// batch.
///
/// The score is the balanced accuracy over the examples whose answer could be read
/// ([`ClassifierSummary::score`](crate::ClassifierSummary::score)); the details hold the
/// outcomes, the metrics, and the ROC AUC of the probability of `1` when the answers came with
/// logprobs. Requests are greedy, up to 200 tokens, and ask for the top
/// 5 logprobs of each answer token: turn that off with [`DetectionScorer::with_logprobs`] for
/// servers that reject `logprobs`.
#[derive(Debug, Clone)]
pub struct DetectionScorer<C> {
    client: C,
    config: ClassifierConfig,
    generation: GenerationConfig,
    logprobs: Option<u8>,
}

impl<C> DetectionScorer<C> {
    /// A detection scorer asking `client`, with batching options `config`.
    pub fn new(client: C, config: ClassifierConfig) -> Self {
        Self {
            client,
            config,
            generation: GenerationConfig::default().with_max_tokens(200),
            logprobs: Some(DEFAULT_LOGPROBS),
        }
    }

    /// Sets the sampling options of its requests.
    #[must_use]
    pub fn with_generation(mut self, generation: GenerationConfig) -> Self {
        self.generation = generation;
        self
    }

    /// Asks for the top `k` logprobs of each answer token (`Some(k)`, for the AUC), or for none.
    #[must_use]
    pub fn with_logprobs(mut self, k: Option<u8>) -> Self {
        self.logprobs = k;
        self
    }

    /// The batching options.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }
}

impl<C: Client> DetectionScorer<C> {
    /// Scores `explanation` on `record`'s test and non-activating examples; see [`Scorer::score`].
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = DETECTION))]
    pub async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> Result<ScorerResult> {
        let batches = detection_batches(record, &self.config)?;
        let answer = self.config.answer;
        run_classifier(
            &self.client,
            DETECTION,
            record,
            batches,
            |batch| match answer {
                AnswerMode::List => detection_prompt(&explanation.text, batch),
                AnswerMode::Logprob => detection_prompt_one(&explanation.text, only_excerpt(batch)),
            },
            Asking {
                generation: &self.generation,
                logprobs: self.logprobs,
                answer,
            },
        )
        .await
    }
}

impl<C: Client> Scorer for DetectionScorer<C> {
    fn name(&self) -> &'static str {
        DETECTION
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        DetectionScorer::score(self, record, explanation)
    }
}
