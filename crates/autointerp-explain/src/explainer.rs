//! Explainers: show an LLM a latent's examples, ask for an explanation, and parse the answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use autointerp_client::{ChatResponse, Client, Usage};
use autointerp_core::{Explanation, LatentId, LatentRecord, Message};
use serde::{Deserialize, Serialize};

use crate::prompts::{PromptError, PromptKind, PromptSet};
use crate::{
    contrastive_prompt, contrastive_prompt_with, default_prompt, default_prompt_with,
    parse_explanation_with, ContrastiveConfig, Error, ExplainerConfig, GenerationConfig, Result,
    EXPLANATION_MARKER,
};

/// Something that explains latents: [`DefaultExplainer`], [`ContrastiveExplainer`], or any
/// other, so that a pipeline can run whichever it is given. `&E` and `Arc<E>` are explainers too.
pub trait Explainer: Send + Sync {
    /// A short name for logs and output folders, e.g. `default`.
    fn name(&self) -> &'static str;

    /// Explains one latent. An answer without a usable explanation is an
    /// [`ExplainOutcome::Failed`], not an error; errors are failed requests and records that
    /// cannot be explained (no train examples).
    fn explain(&self, record: &LatentRecord)
        -> impl Future<Output = Result<ExplainOutcome>> + Send;
}

/// What [`DynExplainer::explain_boxed`] returns.
pub type ExplainFuture<'a> = Pin<Box<dyn Future<Output = Result<ExplainOutcome>> + Send + 'a>>;

/// [`Explainer`] in a dyn-compatible form: every explainer is one, so a run holds whichever it
/// was configured with (or one a user wrote) as `Box<dyn DynExplainer>`.
pub trait DynExplainer: Send + Sync {
    /// [`Explainer::name`] (named apart so that both traits can be in scope).
    fn explainer_name(&self) -> &'static str;
    /// [`Explainer::explain`], boxed.
    fn explain_boxed<'a>(&'a self, record: &'a LatentRecord) -> ExplainFuture<'a>;
}

impl<E: Explainer> DynExplainer for E {
    fn explainer_name(&self) -> &'static str {
        Explainer::name(self)
    }
    fn explain_boxed<'a>(&'a self, record: &'a LatentRecord) -> ExplainFuture<'a> {
        Box::pin(self.explain(record))
    }
}

impl std::fmt::Debug for dyn DynExplainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DynExplainer({})", self.explainer_name())
    }
}

impl<E: Explainer> Explainer for Arc<E> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn explain(
        &self,
        record: &LatentRecord,
    ) -> impl Future<Output = Result<ExplainOutcome>> + Send {
        (**self).explain(record)
    }
}

impl<E: Explainer> Explainer for &E {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn explain(
        &self,
        record: &LatentRecord,
    ) -> impl Future<Output = Result<ExplainOutcome>> + Send {
        (**self).explain(record)
    }
}

/// What came of asking for one latent's explanation: the explanation, or a recorded failure.
/// Either way the raw answer and the tokens it cost are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExplainOutcome {
    /// The answer held an explanation.
    Explained {
        /// The parsed explanation.
        explanation: Explanation,
        /// The answer as received.
        answer: String,
        /// Tokens and cost of the request.
        usage: Usage,
    },
    /// The answer held no usable explanation: the latent has none (it is never given a
    /// placeholder text).
    Failed {
        /// The latent asked about.
        latent: LatentId,
        /// Why the answer could not be used.
        reason: String,
        /// The answer as received.
        answer: String,
        /// Tokens and cost of the request.
        usage: Usage,
    },
}

impl ExplainOutcome {
    /// Parses an explainer's answer for `latent` (see
    /// [`parse_explanation`](crate::parse_explanation)). When it holds no
    /// explanation and generation stopped at the token limit, the reason says so.
    ///
    /// ```
    /// use autointerp_client::ChatResponse;
    /// use autointerp_core::{HookPoint, LatentId};
    /// use autointerp_explain::ExplainOutcome;
    ///
    /// let id = LatentId::new(HookPoint::Residual(6), 1);
    /// let ok = ExplainOutcome::from_response(id, ChatResponse {
    ///     text: "[EXPLANATION]: Names of rivers.".into(),
    ///     ..ChatResponse::default()
    /// });
    /// assert_eq!(ok.explanation().unwrap().text, "Names of rivers.");
    /// let cut = ExplainOutcome::from_response(id, ChatResponse {
    ///     text: "Step 1. The marked tokens are:".into(),
    ///     finish_reason: Some("length".into()),
    ///     ..ChatResponse::default()
    /// });
    /// assert!(cut.is_failed() && cut.answer().starts_with("Step 1."));
    /// ```
    pub fn from_response(latent: LatentId, response: ChatResponse) -> Self {
        Self::from_response_with(latent, response, EXPLANATION_MARKER)
    }

    /// [`ExplainOutcome::from_response`] for a prompt whose answer marker is `marker` (see
    /// [`parse_explanation_with`]).
    pub fn from_response_with(latent: LatentId, response: ChatResponse, marker: &str) -> Self {
        let ChatResponse {
            text,
            usage,
            finish_reason,
            ..
        } = response;
        match parse_explanation_with(&text, marker) {
            Ok(explanation) => Self::Explained {
                explanation: Explanation {
                    latent,
                    text: explanation,
                },
                answer: text,
                usage,
            },
            Err(e) => {
                let mut reason = match e {
                    Error::ParseFailure { reason, .. } => reason,
                    other => other.to_string(),
                };
                if finish_reason.as_deref() == Some("length") {
                    reason.push_str(" (the answer was cut off at max_tokens)");
                }
                Self::Failed {
                    latent,
                    reason,
                    answer: text,
                    usage,
                }
            }
        }
    }

    /// The latent asked about.
    pub fn latent(&self) -> LatentId {
        match self {
            Self::Explained { explanation, .. } => explanation.latent,
            Self::Failed { latent, .. } => *latent,
        }
    }

    /// The explanation, unless the answer held none.
    pub fn explanation(&self) -> Option<&Explanation> {
        match self {
            Self::Explained { explanation, .. } => Some(explanation),
            Self::Failed { .. } => None,
        }
    }

    /// The explanation, unless the answer held none.
    pub fn into_explanation(self) -> Option<Explanation> {
        match self {
            Self::Explained { explanation, .. } => Some(explanation),
            Self::Failed { .. } => None,
        }
    }

    /// Whether the answer held no explanation.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }

    /// The answer as received.
    pub fn answer(&self) -> &str {
        match self {
            Self::Explained { answer, .. } | Self::Failed { answer, .. } => answer,
        }
    }

    /// Tokens and cost of the request.
    pub fn usage(&self) -> &Usage {
        match self {
            Self::Explained { usage, .. } | Self::Failed { usage, .. } => usage,
        }
    }
}

/// Sends `messages` and reads the answer for `latent`, which follows `marker`.
pub(crate) async fn ask<C: Client>(
    client: &C,
    generation: &GenerationConfig,
    latent: LatentId,
    mut messages: Vec<Message>,
    prefill: bool,
    marker: &str,
) -> Result<ExplainOutcome> {
    let request = if prefill {
        // The model continues an answer that already starts with the marker, up to the end of
        // the line: it cannot wander off (a small model otherwise goes on listing excerpts).
        messages.push(Message::assistant(marker));
        generation
            .request(messages)
            .with_extra("continue_final_message", true)
            .with_extra("add_generation_prompt", false)
            .with_stop("\n")
    } else {
        generation.request(messages)
    };
    let mut response = client.chat(request).await?;
    if prefill {
        response.text = format!("{marker}{}", response.text);
    }
    let outcome = ExplainOutcome::from_response_with(latent, response, marker);
    match &outcome {
        ExplainOutcome::Explained { explanation, .. } => {
            tracing::debug!(explanation = %explanation.text, "explained");
        }
        ExplainOutcome::Failed { reason, .. } => {
            tracing::debug!(%reason, "no explanation in the answer");
        }
    }
    Ok(outcome)
}

fn require_train(record: &LatentRecord) -> Result<()> {
    if record.train.is_empty() {
        return Err(Error::NoTrainExamples { latent: record.id });
    }
    Ok(())
}

/// What an LLM explainer shows the model: the messages built from a latent's record. The
/// explainers differ only in this (the request, the prefill and the parsing are shared), so a
/// new prompt is a new implementation, not a new explainer.
pub trait ExplainerPrompt: Send + Sync {
    /// The explainer's name, e.g. `default`.
    fn name(&self) -> &'static str;

    /// The chat messages that ask for `record`'s explanation, from the built-in templates.
    fn messages(&self, record: &LatentRecord) -> Vec<Message>;

    /// The chat messages from `prompts`' templates. A prompt written in Rust has no template:
    /// by default, [`ExplainerPrompt::messages`].
    ///
    /// # Errors
    /// [`PromptError::Template`] when the template fails on this record.
    fn render(
        &self,
        prompts: &PromptSet,
        record: &LatentRecord,
    ) -> std::result::Result<Vec<Message>, PromptError> {
        let _ = prompts;
        Ok(self.messages(record))
    }

    /// The template [`ExplainerPrompt::render`] uses, whose `answer_marker` the answer is read
    /// by; `None` (the default) reads it by [`EXPLANATION_MARKER`].
    fn template(&self) -> Option<PromptKind> {
        None
    }
}

/// The default prompt: the latent's train examples (at most
/// [`ExplainerConfig::max_examples`]), highlighted, after worked examples ([`default_prompt`]).
impl ExplainerPrompt for ExplainerConfig {
    fn name(&self) -> &'static str {
        "default"
    }
    fn messages(&self, record: &LatentRecord) -> Vec<Message> {
        default_prompt(record, self)
    }
    fn render(
        &self,
        prompts: &PromptSet,
        record: &LatentRecord,
    ) -> std::result::Result<Vec<Message>, PromptError> {
        default_prompt_with(prompts, record, self)
    }
    fn template(&self) -> Option<PromptKind> {
        Some(PromptKind::Explainer)
    }
}

/// The contrastive prompt: activating examples beside similar non-activating ones
/// ([`contrastive_prompt`]; a record without non-activating examples is shown with an empty
/// silent group).
impl ExplainerPrompt for ContrastiveConfig {
    fn name(&self) -> &'static str {
        "contrastive"
    }
    fn messages(&self, record: &LatentRecord) -> Vec<Message> {
        contrastive_prompt(record, self)
    }
    fn render(
        &self,
        prompts: &PromptSet,
        record: &LatentRecord,
    ) -> std::result::Result<Vec<Message>, PromptError> {
        contrastive_prompt_with(prompts, record, self)
    }
    fn template(&self) -> Option<PromptKind> {
        Some(PromptKind::Contrastive)
    }
}

/// An explainer that asks an LLM: the prompt `P` builds the messages from the record with the
/// templates of a [`PromptSet`] (the built-in ones unless [`LlmExplainer::with_prompts`] says
/// otherwise), the answer is parsed with [`parse_explanation_with`] and the template's answer
/// marker.
#[derive(Debug, Clone)]
pub struct LlmExplainer<C, P> {
    client: C,
    prompt: P,
    prompts: Arc<PromptSet>,
    generation: GenerationConfig,
    prefill: bool,
}

/// The default explainer: [`LlmExplainer`] over the default prompt ([`ExplainerConfig`]).
pub type DefaultExplainer<C> = LlmExplainer<C, ExplainerConfig>;

/// The contrastive explainer: [`LlmExplainer`] over the contrastive prompt
/// ([`ContrastiveConfig`]).
pub type ContrastiveExplainer<C> = LlmExplainer<C, ContrastiveConfig>;

impl<C, P> LlmExplainer<C, P> {
    /// An explainer asking `client` with `prompt` and [`GenerationConfig::default`] (greedy, up
    /// to 1000 tokens).
    pub fn new(client: C, prompt: P) -> Self {
        Self {
            client,
            prompt,
            prompts: PromptSet::embedded(),
            generation: GenerationConfig::default(),
            prefill: false,
        }
    }

    /// Renders its prompts from `prompts` (e.g. [`PromptSet::from_dir`]) instead of the built-in
    /// templates, and reads answers by their answer marker.
    #[must_use]
    pub fn with_prompts(mut self, prompts: Arc<PromptSet>) -> Self {
        self.prompts = prompts;
        self
    }

    /// The templates its prompts are rendered from.
    pub fn prompts(&self) -> &Arc<PromptSet> {
        &self.prompts
    }

    /// Sets the sampling options of its requests.
    #[must_use]
    pub fn with_generation(mut self, generation: GenerationConfig) -> Self {
        self.generation = generation;
        self
    }

    /// Ends each prompt with the start of the answer, the template's answer marker
    /// ([`EXPLANATION_MARKER`] in the built-in templates), for the model
    /// to complete up to the end of the line: the fix for small models that continue the list
    /// of excerpts instead of answering. Needs a backend that continues a final assistant
    /// message (vLLM's `continue_final_message`, which the in-process engine honours); it skips
    /// any chain of thought the prompt asks for.
    #[must_use]
    pub fn with_prefill(mut self, prefill: bool) -> Self {
        self.prefill = prefill;
        self
    }

    /// The prompt (its options).
    pub fn config(&self) -> &P {
        &self.prompt
    }

    /// The sampling options.
    pub fn generation(&self) -> &GenerationConfig {
        &self.generation
    }
}

impl<C: Client, P: ExplainerPrompt> LlmExplainer<C, P> {
    /// Explains one latent.
    ///
    /// # Errors
    /// [`Error::NoTrainExamples`] for a record without train examples, [`Error::Prompt`] when
    /// the prompt template fails on it, [`Error::Client`] when the request fails. An answer
    /// without an explanation is an [`ExplainOutcome::Failed`].
    #[tracing::instrument(skip_all, fields(latent = %record.id, explainer = self.prompt.name()))]
    pub async fn explain(&self, record: &LatentRecord) -> Result<ExplainOutcome> {
        require_train(record)?;
        let messages = self.prompt.render(&self.prompts, record)?;
        let marker = self.prompt.template().map_or(EXPLANATION_MARKER, |kind| {
            self.prompts.settings(kind).answer_marker.as_str()
        });
        ask(
            &self.client,
            &self.generation,
            record.id,
            messages,
            self.prefill,
            marker,
        )
        .await
    }
}

impl<C: Client, P: ExplainerPrompt> Explainer for LlmExplainer<C, P> {
    fn name(&self) -> &'static str {
        self.prompt.name()
    }
    fn explain(
        &self,
        record: &LatentRecord,
    ) -> impl Future<Output = Result<ExplainOutcome>> + Send {
        LlmExplainer::explain(self, record)
    }
}
