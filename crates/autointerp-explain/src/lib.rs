//! Explainers for sparse-autoencoder latents: an LLM is shown a latent's activating examples with
//! the active tokens `<<highlighted>>` and asked what the latent responds to; its answer is parsed
//! into an [`Explanation`], or recorded as a failure with the raw
//! answer. Explanations are kept on disk in delphi's layout.
//!
//! The explainers ([`DefaultExplainer`], [`ContrastiveExplainer`], both [`Explainer`]s) ask any
//! [`Client`](autointerp_client::Client): an OpenAI-compatible server or a model in this process.
//!
//! ```
//! use autointerp_client::{ChatRequest, ChatResponse, Client};
//! use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats};
//! use autointerp_explain::{DefaultExplainer, ExplainOutcome, ExplainerConfig};
//!
//! /// A stand-in for an LLM that always gives the same answer.
//! struct Canned(&'static str);
//!
//! impl Client for Canned {
//!     async fn chat(&self, _req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
//!         Ok(ChatResponse { text: self.0.to_string(), ..ChatResponse::default() })
//!     }
//! }
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
//!     logits: None,
//! };
//!
//! let explainer = DefaultExplainer::new(Canned("Rivers.\n[EXPLANATION]: Names of rivers."), ExplainerConfig::default());
//! let outcome = futures::executor::block_on(explainer.explain(&record))?;
//! assert_eq!(outcome.explanation().unwrap().text, "Names of rivers.");
//!
//! // An answer without an explanation is a recorded failure, not an error.
//! let explainer = DefaultExplainer::new(Canned("I cannot tell:"), ExplainerConfig::default());
//! match futures::executor::block_on(explainer.explain(&record))? {
//!     ExplainOutcome::Failed { answer, .. } => assert_eq!(answer, "I cannot tell:"),
//!     ExplainOutcome::Explained { .. } => unreachable!(),
//! }
//! # Ok::<(), autointerp_explain::Error>(())
//! ```
//!
//! # Prompts and parsers
//!
//! The pure parts are usable alone: prompts are [`Message`](autointerp_core::Message) lists for
//! any chat client, and answers are plain strings. Every prompt (the scorers' too) is rendered
//! from a template of a [`PromptSet`]: the built-in one, or a folder of the user's own
//! ([`prompts`]).
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
//!     logits: None,
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
//!
//! Example: `cargo run -p autointerp-explain --example explain_prompt`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod contrastive;
mod error;
mod explainer;
mod generation;
pub mod highlight;
mod kind;
mod load;
mod output;
mod parse;
mod prompt;
pub mod prompts;
mod tokens;

pub use contrastive::{contrastive_prompt, contrastive_prompt_with, ContrastiveConfig};
pub use error::{Error, Result};
pub use explainer::{
    ContrastiveExplainer, DefaultExplainer, DynExplainer, ExplainFuture, ExplainOutcome, Explainer,
    ExplainerPrompt, LlmExplainer,
};
pub use generation::GenerationConfig;
pub use highlight::{
    above_threshold, escape_text, highlight, render_highlighted, render_highlighted_with,
    split_highlighted, split_highlighted_with, Markers,
};
pub use kind::ExplainerKind;
pub use load::{
    explanation_file_name, load_explanations, random_control, read_explanation_file,
    write_explanation, LoadedExplanations, DELPHI_PLACEHOLDERS,
};
pub use output::{output_prompt, OutputExplainer, OutputMode, ENSEMBLE_EXAMPLES};
pub use parse::{parse_explanation, parse_explanation_with, EXPLANATION_MARKER};
pub use prompt::{
    activation_line, default_prompt, default_prompt_for_examples, default_prompt_with,
    normalized_activation, promoted_tokens, ExplainerConfig, MAX_PROMOTED_TOKENS,
};
pub use prompts::{PromptError, PromptKind, PromptSet, PromptSettings};
pub use tokens::{TokenExplainer, TokenExplainerConfig};

use autointerp_core::{Explanation, LatentId};

/// Parses an explainer's answer for `latent` into an [`Explanation`]; see [`parse_explanation`].
pub fn explanation_from_answer(latent: LatentId, answer: &str) -> Result<Explanation> {
    Ok(Explanation {
        latent,
        text: parse_explanation(answer)?,
    })
}
