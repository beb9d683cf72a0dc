//! Explainers for sparse-autoencoder latents: prompts that show an LLM a latent's activating
//! examples with the active tokens `<<highlighted>>`, the parser that takes the explanation out of
//! its answer, and explanations on disk in delphi's layout.
//!
//! Everything here is pure: prompts are [`Message`](autointerp_core::Message) lists for any chat
//! client, and answers are plain strings.
//!
//! ```
//! use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats, Role};
//! use autointerp_explain::{default_prompt, parse_explanation, ExplainerConfig};
//!
//! let example = Example {
//!     tokens: vec![0; 4],
//!     str_tokens: vec!["The".into(), " Thames".into(), " flooded".into(), ".".into()],
//!     activations: vec![0.0, 4.0, 0.5, 0.0],
//!     normalized: vec![0, 10, 1, 0],
//!     quantile: Some(1),
//!     distance: None,
//! };
//! let record = LatentRecord {
//!     id: LatentId::new(HookPoint::Residual(6), 12),
//!     train: vec![example],
//!     test: vec![],
//!     non_activating: vec![],
//!     stats: LatentStats::default(),
//! };
//! let messages = default_prompt(&record, &ExplainerConfig::default());
//! assert_eq!(messages[0].role, Role::System);
//! let last = &messages.last().unwrap().content;
//! assert!(last.contains("Excerpt 1: The<< Thames>> flooded."));
//! assert!(last.contains(r#"Activations: " Thames" 10"#));
//!
//! // The LLM's answer ends with the marker line.
//! let explanation = parse_explanation("Rivers.\n[EXPLANATION]: Names of rivers.")?;
//! assert_eq!(explanation, "Names of rivers.");
//! # Ok::<(), autointerp_explain::Error>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod contrastive;
mod error;
pub mod highlight;
mod load;
mod parse;
mod prompt;

pub use contrastive::{contrastive_prompt, ContrastiveConfig};
pub use error::{Error, Result};
pub use highlight::{
    above_threshold, escape_text, highlight, render_highlighted, split_highlighted,
};
pub use load::{
    explanation_file_name, load_explanations, random_control, read_explanation_file,
    write_explanation, LoadedExplanations, DELPHI_PLACEHOLDERS,
};
pub use parse::{parse_explanation, EXPLANATION_MARKER};
pub use prompt::{
    activation_line, default_prompt, default_prompt_for_examples, normalized_activation,
    ExplainerConfig,
};

use autointerp_core::{Explanation, LatentId};

/// Parses an explainer's answer for `latent` into an [`Explanation`]; see [`parse_explanation`].
pub fn explanation_from_answer(latent: LatentId, answer: &str) -> Result<Explanation> {
    Ok(Explanation {
        latent,
        text: parse_explanation(answer)?,
    })
}
