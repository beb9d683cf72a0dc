//! The contrastive explainer prompt: excerpts where the latent fires beside excerpts where it
//! stays silent.

use autointerp_core::{LatentRecord, Message};
use serde::{Deserialize, Serialize};

use crate::highlight::{escape_text, DEFAULT_THRESHOLD};
use crate::prompt::excerpts_block;

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
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            show_activations: true,
            max_listed_tokens: 10,
            max_activating: 15,
            max_non_activating: 5,
        }
    }
}

const SYSTEM: &str = "You are an interpretability researcher studying one feature of a language model. \
You will be shown two groups of short text excerpts.

The first group contains excerpts in which the feature is active. The tokens where it is active are \
enclosed in << and >>; a stretch of consecutive active tokens shares one pair of delimiters, \
<<like this>>.{activations}

The second group contains excerpts in which the feature stays silent. They were chosen to resemble \
the first group, so what sets the two groups apart is the best clue to what the feature responds to.

Your job is to describe, in one short phrase, what the feature responds to.
- Describe the pattern the active excerpts share and the silent ones lack; ignore excerpts that do not fit.
- Say what the marked tokens are, and mention the surrounding text when it matters.
- Give one description, not a list of alternatives, and do not mention the << >> delimiters.
- Finish with a line that starts with [EXPLANATION]: followed by the description.";

const ACTIVATIONS: &str = " After each active excerpt, a line lists the marked tokens with the \
feature's strength on each, from 0 (inactive) to 10 (its strongest).";

/// The contrastive explainer prompt for `record`: instructions (system), then one user message
/// holding the first [`ContrastiveConfig::max_activating`] train examples, highlighted, under
/// `Active excerpts:` and the first [`ContrastiveConfig::max_non_activating`] non-activating
/// examples, unhighlighted, under `Silent excerpts:`. The answer is parsed with
/// [`parse_explanation`](crate::parse_explanation).
pub fn contrastive_prompt(record: &LatentRecord, cfg: &ContrastiveConfig) -> Vec<Message> {
    let system = SYSTEM.replace(
        "{activations}",
        if cfg.show_activations {
            ACTIVATIONS
        } else {
            ""
        },
    );
    let active = &record.train[..cfg.max_activating.min(record.train.len())];
    let silent = &record.non_activating[..cfg.max_non_activating.min(record.non_activating.len())];
    let listed = cfg.show_activations.then_some(cfg.max_listed_tokens);
    let mut user = format!(
        "Active excerpts:\n{}",
        excerpts_block(active, cfg.threshold, listed, "Active")
    );
    user.push_str("\n\nSilent excerpts:");
    if silent.is_empty() {
        user.push_str("\n(none available)");
    }
    for (i, ex) in silent.iter().enumerate() {
        user.push_str(&format!("\nSilent {}: {}", i + 1, escape_text(&ex.text())));
    }
    vec![Message::system(system), Message::user(user)]
}
