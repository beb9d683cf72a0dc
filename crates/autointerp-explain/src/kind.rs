//! Explainers by name: [`ExplainerKind`] builds the explainer a run asks for as a boxed
//! [`DynExplainer`].

use std::sync::Arc;

use autointerp_client::SharedClient;
use serde::{Deserialize, Serialize};

use crate::prompts::PromptSet;

use crate::{
    ContrastiveConfig, ContrastiveExplainer, DefaultExplainer, DynExplainer, ExplainerConfig,
    GenerationConfig, TokenExplainer,
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
    /// No explainer: the explanations already in `explanations/` are scored.
    None,
}

impl ExplainerKind {
    /// Whether the explainer asks a chat model.
    pub fn uses_chat(self) -> bool {
        matches!(self, Self::Default | Self::Contrastive)
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
        self.build_with_prompts(chat, generation, prefill, false, PromptSet::embedded())
    }

    /// [`ExplainerKind::build`] with the LLM explainers' prompts rendered from `prompts` (e.g.
    /// a run's `--prompt-dir`, loaded with [`PromptSet::from_dir`]); with `logits`, their
    /// prompts end with the tokens each latent promotes, when its record has them
    /// ([`ExplainerConfig::show_logits`]).
    pub fn build_with_prompts(
        self,
        chat: Option<SharedClient>,
        generation: GenerationConfig,
        prefill: bool,
        logits: bool,
        prompts: Arc<PromptSet>,
    ) -> Option<Box<dyn DynExplainer>> {
        match self {
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
