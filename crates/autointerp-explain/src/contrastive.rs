//! The contrastive explainer prompt: excerpts where the latent fires beside excerpts where it
//! stays silent.

use autointerp_core::{LatentRecord, Message};
use serde::{Deserialize, Serialize};

use crate::highlight::{escape_text, DEFAULT_THRESHOLD};
use crate::prompt::{built_in, promoted_tokens};
use crate::prompts::{ContrastiveContext, Excerpt, PromptError, PromptKind, PromptSet};

/// Options of the contrastive explainer prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContrastiveConfig {
    /// Tokens above this fraction of an example's maximum activation are highlighted.
    pub threshold: f32,
    /// Whether each firing excerpt is followed by its highlighted tokens' 0–10 activations.
    pub show_activations: bool,
    /// At most this many tokens are listed per excerpt.
    pub max_listed_tokens: usize,
    /// At most this many train (firing) examples are shown (delphi: 15).
    pub max_activating: usize,
    /// At most this many non-activating examples are shown (delphi: 5).
    pub max_non_activating: usize,
    /// Whether the prompt ends with the tokens the latent promotes most, as
    /// [`ExplainerConfig::show_logits`](crate::ExplainerConfig::show_logits).
    pub show_logits: bool,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            show_activations: true,
            max_listed_tokens: 10,
            max_activating: 15,
            max_non_activating: 5,
            show_logits: false,
        }
    }
}

/// The contrastive explainer prompt for `record`: instructions (system), then one user message
/// holding the first [`ContrastiveConfig::max_activating`] train examples, highlighted, under
/// `Active excerpts:` and the first [`ContrastiveConfig::max_non_activating`] non-activating
/// examples, unhighlighted, under `Silent excerpts:`, from the built-in `contrastive.jinja`. The
/// answer is parsed with [`parse_explanation`](crate::parse_explanation).
pub fn contrastive_prompt(record: &LatentRecord, cfg: &ContrastiveConfig) -> Vec<Message> {
    built_in(contrastive_prompt_with(&PromptSet::embedded(), record, cfg))
}

/// [`contrastive_prompt`] from `prompts`' `contrastive.jinja`, its examples highlighted with the
/// template's markers.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this record's examples.
pub fn contrastive_prompt_with(
    prompts: &PromptSet,
    record: &LatentRecord,
    cfg: &ContrastiveConfig,
) -> Result<Vec<Message>, PromptError> {
    let markers = &prompts.settings(PromptKind::Contrastive).highlight;
    let active = &record.train[..cfg.max_activating.min(record.train.len())];
    let silent = &record.non_activating[..cfg.max_non_activating.min(record.non_activating.len())];
    let context = ContrastiveContext {
        examples: active
            .iter()
            .map(|e| Excerpt::highlighted(e, cfg.threshold, cfg.max_listed_tokens, markers))
            .collect(),
        silent: silent
            .iter()
            .map(|e| Excerpt::plain(escape_text(&e.text())))
            .collect(),
        show_activations: cfg.show_activations,
        threshold: cfg.threshold,
        max_listed_tokens: cfg.max_listed_tokens,
        promoted: promoted_tokens(record, cfg.show_logits),
    };
    prompts.render_messages(PromptKind::Contrastive, &context)
}
