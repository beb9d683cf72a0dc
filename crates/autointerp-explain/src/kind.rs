//! Explainers by name: [`ExplainerKind`] builds the explainer a run asks for as a boxed
//! [`DynExplainer`].

use std::sync::Arc;

use autointerp_client::{SharedClient, SharedIntervener};
use serde::{Deserialize, Serialize};

use crate::prompts::PromptSet;

use crate::{
    ContrastiveConfig, ContrastiveExplainer, DefaultExplainer, DynExplainer, ExplainerConfig,
    GenerationConfig, OutputExplainer, OutputMode, TokenExplainer,
};

/// Which explainer writes the explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ExplainerKind {
    /// The latent's activating examples, highlighted.
    Default,
    /// Activating examples beside similar non-activating ones.
    Contrastive,
    /// No LLM: the latent's most frequent activating tokens, by share of its activation, and
    /// the token that most often precedes them. The baseline every LLM explanation must beat.
    Tokens,
    /// Output-centric: the tokens the latent's direction promotes (vocabulary projection) and
    /// those that become likelier when the model is steered along it (needs the model in this
    /// process for the second).
    Output,
    /// Both sides: the output-centric view and the activating examples, in one description.
    Ensemble,
    /// No explainer: the explanations already in `explanations/` are scored.
    None,
}

impl ExplainerKind {
    /// Whether the explainer asks a chat model.
    pub fn uses_chat(self) -> bool {
        matches!(
            self,
            Self::Default | Self::Contrastive | Self::Output | Self::Ensemble
        )
    }

    /// Whether the explainer steers the model (its token change), when it can.
    pub fn steers(self) -> bool {
        matches!(self, Self::Output | Self::Ensemble)
    }

    /// The explainer with default prompt options; `None` for [`ExplainerKind::None`], and for
    /// an LLM explainer without a `chat` client. `prefill` starts the answer with the
    /// explanation marker (see [`crate::LlmExplainer::with_prefill`]).
    pub fn build(
        self,
        chat: Option<SharedClient>,
        generation: GenerationConfig,
        prefill: bool,
    ) -> Option<Box<dyn DynExplainer>> {
        self.build_with_prompts(
            chat,
            generation,
            prefill,
            false,
            PromptSet::embedded(),
            None,
        )
    }

    /// [`ExplainerKind::build`] with the LLM explainers' prompts rendered from `prompts` (e.g.
    /// a run's `--prompt-dir`, loaded with [`PromptSet::from_dir`]); with `logits`, their
    /// prompts end with the tokens each latent promotes, when its record has them
    /// ([`ExplainerConfig::show_logits`]). The output-centric explainers show token changes
    /// from `intervener` when there is one.
    pub fn build_with_prompts(
        self,
        chat: Option<SharedClient>,
        generation: GenerationConfig,
        prefill: bool,
        logits: bool,
        prompts: Arc<PromptSet>,
        intervener: Option<SharedIntervener>,
    ) -> Option<Box<dyn DynExplainer>> {
        let output = |mode| -> Option<Box<dyn DynExplainer>> {
            Some(Box::new(
                OutputExplainer::new(chat.clone()?, intervener.clone(), mode)
                    .with_generation(generation.clone())
                    .with_prefill(prefill),
            ))
        };
        match self {
            Self::Output => output(OutputMode::Output),
            Self::Ensemble => output(OutputMode::Ensemble),
            Self::Tokens => Some(Box::new(TokenExplainer::default())),
            Self::Default => Some(Box::new(
                DefaultExplainer::new(chat?, ExplainerConfig::default().with_logits(logits))
                    .with_generation(generation)
                    .with_prefill(prefill)
                    .with_prompts(prompts),
            )),
            Self::Contrastive => Some(Box::new(
                ContrastiveExplainer::new(
                    chat?,
                    ContrastiveConfig {
                        show_logits: logits,
                        ..ContrastiveConfig::default()
                    },
                )
                .with_generation(generation)
                .with_prefill(prefill)
                .with_prompts(prompts),
            )),
            Self::None => None,
        }
    }
}
