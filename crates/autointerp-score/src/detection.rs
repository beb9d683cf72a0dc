//! Detection: can the scorer tell, from the explanation alone, which excerpts activate the latent?

use autointerp_core::{Example, LatentRecord, Message};
use autointerp_explain::escape_text;
use autointerp_explain::highlight::rehighlight;
use autointerp_explain::prompts::{
    ClassifierContext, ClassifierOneContext, Excerpt, PromptError, PromptKind, PromptSet,
};
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

/// The result of rendering a built-in template, which renders every context it is given (the
/// tests render each one); a failure is a bug in the explain crate's templates.
pub(crate) fn built_in<T>(rendered: std::result::Result<T, PromptError>) -> T {
    rendered.unwrap_or_else(|e| panic!("built-in prompt template failed, a bug: {e}"))
}

/// The texts of a batch's excerpts as shown: redrawn with `kind`'s highlight markers (the
/// batches are built with the default ones).
pub(crate) fn batch_excerpts(prompts: &PromptSet, kind: PromptKind, batch: &Batch) -> Vec<Excerpt> {
    let markers = &prompts.settings(kind).highlight;
    batch
        .items
        .iter()
        .map(|o| Excerpt::plain(rehighlight(o.text.as_deref().unwrap_or_default(), markers)))
        .collect()
}

/// The `kind` prompt (detection or fuzzing) of one batch.
pub(crate) fn classifier_prompt(
    prompts: &PromptSet,
    kind: PromptKind,
    explanation: &str,
    batch: &Batch,
) -> std::result::Result<Vec<Message>, PromptError> {
    let context = ClassifierContext {
        explanation: escape_text(explanation.trim()),
        examples: batch_excerpts(prompts, kind, batch),
    };
    prompts.render_messages(kind, &context)
}

/// The `kind` prompt (detection or fuzzing) of one excerpt.
pub(crate) fn classifier_prompt_one(
    prompts: &PromptSet,
    kind: PromptKind,
    explanation: &str,
    excerpt: &str,
) -> std::result::Result<Vec<Message>, PromptError> {
    let context = ClassifierOneContext {
        explanation: escape_text(explanation.trim()),
        example: Excerpt::plain(rehighlight(excerpt, &prompts.settings(kind).highlight)),
    };
    prompts.render_messages(kind, &context)
}

/// The detection prompt for one batch: instructions (system), three worked examples, then the
/// explanation and the batch's numbered excerpts (user), from the built-in `detection.jinja`.
/// The answer is read with [`Batch::resolve`].
pub fn detection_prompt(explanation: &str, batch: &Batch) -> Vec<Message> {
    built_in(detection_prompt_with(
        &PromptSet::embedded(),
        explanation,
        batch,
    ))
}

/// [`detection_prompt`] from `prompts`' `detection.jinja`; read the answer with
/// [`Batch::resolve_numbered`] and the template's `numbering_base`.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this batch.
pub fn detection_prompt_with(
    prompts: &PromptSet,
    explanation: &str,
    batch: &Batch,
) -> std::result::Result<Vec<Message>, PromptError> {
    classifier_prompt(prompts, PromptKind::Detection, explanation, batch)
}

/// The detection prompt for one excerpt in [`AnswerMode::Logprob`](crate::AnswerMode::Logprob):
/// instructions asking for a single digit (system), four worked examples, then the explanation
/// and the excerpt (user), from the built-in `detection_one.jinja`.
pub fn detection_prompt_one(explanation: &str, excerpt: &str) -> Vec<Message> {
    built_in(detection_prompt_one_with(
        &PromptSet::embedded(),
        explanation,
        excerpt,
    ))
}

/// [`detection_prompt_one`] from `prompts`' `detection_one.jinja`.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this excerpt.
pub fn detection_prompt_one_with(
    prompts: &PromptSet,
    explanation: &str,
    excerpt: &str,
) -> std::result::Result<Vec<Message>, PromptError> {
    classifier_prompt_one(prompts, PromptKind::DetectionOne, explanation, excerpt)
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
    fn templates() -> Option<(PromptKind, PromptKind)> {
        Some((PromptKind::Detection, PromptKind::DetectionOne))
    }
    fn render(prompts: &PromptSet, explanation: &str, batch: &Batch) -> Result<Vec<Message>> {
        Ok(detection_prompt_with(prompts, explanation, batch)?)
    }
    fn render_one(prompts: &PromptSet, explanation: &str, excerpt: &str) -> Result<Vec<Message>> {
        Ok(detection_prompt_one_with(prompts, explanation, excerpt)?)
    }
}

/// The detection scorer: [`detection_batches`] shown with [`detection_prompt`] (or
/// [`detection_prompt_one`] in [`AnswerMode::Logprob`](crate::AnswerMode::Logprob)), one request
/// per batch; [`ClassifierScorer::with_prompts`] renders them from other templates.
///
/// The score is the balanced accuracy over the examples whose answer could be read
/// ([`ClassifierSummary::score`](crate::ClassifierSummary::score)); the details hold the
/// outcomes, the metrics, and the ROC AUC of the probability of `1` when the answers came with
/// logprobs. Requests are greedy, up to 200 tokens, and ask for the top 5 logprobs of each
/// answer token: turn that off with [`ClassifierScorer::with_logprobs`] for servers that reject
/// `logprobs`.
pub type DetectionScorer<C> = ClassifierScorer<C, Detection>;
