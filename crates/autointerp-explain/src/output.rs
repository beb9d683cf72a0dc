//! Output-centric explanations: what a latent makes the model *say*, after Gur-Arieh et al.
//! (2025), "Enhancing automated interpretability with output-centric feature descriptions".
//!
//! [`OutputExplainer`] shows an LLM two views of a latent's effect on the output:
//!
//! - its **vocabulary projection** (the tokens whose logits its decoder direction raises most,
//!   from the record's [`LatentLogits`](autointerp_core::LatentLogits), "VocabProj"), and
//! - its **token change** (the tokens whose next-token probability rose most when the model
//!   was steered along the latent, from an [`Intervener`], "TokenChange"),
//!
//! and, in the [`OutputMode::Ensemble`] mode, also the latent's activating examples (the
//! input side), asking for one description that covers both. Either view may be missing (no
//! projection in an older cache, no model to steer); a latent with neither cannot be explained
//! this way and is an error.

use std::future::Future;

use autointerp_client::{Client, Intervener, Intervention};
use autointerp_core::{LatentRecord, Message};

use crate::explainer::ask;
use crate::highlight::{above_threshold, render_highlighted, DEFAULT_THRESHOLD};
use crate::prompt::MAX_PROMOTED_TOKENS;
use crate::{Error, ExplainOutcome, Explainer, GenerationConfig, Result, EXPLANATION_MARKER};

/// What an [`OutputExplainer`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// The output side only.
    Output,
    /// The output side and the activating examples.
    Ensemble,
}

/// Activating examples an [`OutputMode::Ensemble`] prompt shows.
pub const ENSEMBLE_EXAMPLES: usize = 10;

/// The output-centric (or ensemble) explainer: shows the tokens a latent's direction promotes
/// (its record's vocabulary projection) and those that became likelier when the model was
/// steered along it (from the [`Intervener`], when there is one), and in the
/// [`OutputMode::Ensemble`] mode its activating examples too.
#[derive(Debug, Clone)]
pub struct OutputExplainer<C, I> {
    client: C,
    intervener: Option<I>,
    mode: OutputMode,
    generation: GenerationConfig,
    prefill: bool,
}

impl<C, I> OutputExplainer<C, I> {
    /// An explainer asking `client`, with token changes from `intervener` when there is one.
    pub fn new(client: C, intervener: Option<I>, mode: OutputMode) -> Self {
        Self {
            client,
            intervener,
            mode,
            generation: GenerationConfig::default(),
            prefill: false,
        }
    }

    /// Sets the generation options.
    #[must_use]
    pub fn with_generation(mut self, generation: GenerationConfig) -> Self {
        self.generation = generation;
        self
    }

    /// Starts the answer with the explanation marker (see
    /// [`crate::LlmExplainer::with_prefill`]).
    #[must_use]
    pub fn with_prefill(mut self, prefill: bool) -> Self {
        self.prefill = prefill;
        self
    }
}

fn quoted(tokens: impl Iterator<Item = String>) -> String {
    tokens
        .map(|t| serde_json::Value::String(t).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The prompt: the latent's vocabulary projection and token change (either may be absent), and
/// in the ensemble mode its activating examples, tokens it fires on in `<<` `>>`.
///
/// # Errors
/// [`Error::NoOutputData`] when the record has no projection and there is no intervention (and,
/// in the ensemble mode, no train examples either).
pub fn output_prompt(
    record: &LatentRecord,
    intervention: Option<&Intervention>,
    mode: OutputMode,
) -> Result<Vec<Message>> {
    let projection = record
        .logits
        .as_ref()
        .filter(|l| !l.promoted.is_empty())
        .map(|l| {
            quoted(
                l.promoted
                    .iter()
                    .take(MAX_PROMOTED_TOKENS)
                    .map(|t| t.text.clone()),
            )
        });
    let change = intervention
        .filter(|i| !i.promoted.is_empty())
        .map(|i| quoted(i.promoted.iter().map(|(t, _)| t.clone())));
    let examples: Vec<String> = match mode {
        OutputMode::Output => Vec::new(),
        OutputMode::Ensemble => record
            .train
            .iter()
            .take(ENSEMBLE_EXAMPLES)
            .map(|e| render_highlighted(&e.str_tokens, &above_threshold(e, DEFAULT_THRESHOLD)))
            .collect(),
    };
    if projection.is_none() && change.is_none() && examples.is_empty() {
        return Err(Error::NoOutputData { latent: record.id });
    }
    let mut system = String::from(
        "You describe one feature of a language model's internal representations. You are shown \
         what the feature does to the model's output: tokens that its direction makes more \
         likely, read through the model's output layer, and tokens that became more likely when \
         the model was pushed along the feature while it wrote.",
    );
    if mode == OutputMode::Ensemble {
        system.push_str(
            " You also see text where the feature is active, with the tokens it is active on \
             between << and >>. Write one description that covers both when it fires and what \
             it makes the model write.",
        );
    } else {
        system.push_str(" Say what the feature makes the model write.");
    }
    system.push_str(&format!(
        " Ignore tokens that look like noise. Be specific and brief: one short phrase, on one \
         line, after \"{EXPLANATION_MARKER}\"."
    ));
    let mut user = String::new();
    if let Some(p) = projection {
        user.push_str(&format!("Tokens its direction promotes: {p}\n"));
    }
    if let Some(c) = change {
        user.push_str(&format!(
            "Tokens that became likelier when steering along it: {c}\n"
        ));
    }
    if !examples.is_empty() {
        user.push_str("Text where it is active:\n");
        for (i, e) in examples.iter().enumerate() {
            user.push_str(&format!("{}. {e}\n", i + 1));
        }
    }
    Ok(vec![
        Message::system(system),
        Message::user(user.trim_end()),
    ])
}

impl<C: Client, I: Intervener> OutputExplainer<C, I> {
    async fn run(&self, record: &LatentRecord) -> Result<ExplainOutcome> {
        let intervention = match &self.intervener {
            Some(i) => Some(i.intervene(record.id).await?),
            None => None,
        };
        let messages = output_prompt(record, intervention.as_deref(), self.mode)?;
        ask(
            &self.client,
            &self.generation,
            record.id,
            messages,
            self.prefill,
            EXPLANATION_MARKER,
        )
        .await
    }
}

impl<C: Client, I: Intervener> Explainer for OutputExplainer<C, I> {
    fn name(&self) -> &'static str {
        match self.mode {
            OutputMode::Output => "output",
            OutputMode::Ensemble => "ensemble",
        }
    }

    fn explain(
        &self,
        record: &LatentRecord,
    ) -> impl Future<Output = Result<ExplainOutcome>> + Send {
        self.run(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_core::{Example, HookPoint, LatentId, LatentLogits, LatentStats, TokenLogit};

    fn record(logits: bool) -> LatentRecord {
        LatentRecord {
            id: LatentId::new(HookPoint::Residual(2), 5),
            train: vec![Example {
                tokens: vec![1, 2],
                str_tokens: vec!["the".into(), " Thames".into()],
                activations: vec![0.0, 3.0],
                normalized: vec![0, 10],
                quantile: Some(1),
                distance: None,
            }],
            test: vec![],
            non_activating: vec![],
            stats: LatentStats::default(),
            logits: logits.then(|| LatentLogits {
                promoted: vec![TokenLogit {
                    token: 9,
                    text: " river".into(),
                    delta: 2.0,
                }],
                suppressed: vec![],
            }),
        }
    }

    #[test]
    fn prompts_show_what_there_is() {
        let change = Intervention {
            strength: 1.0,
            target_kl: 1.0,
            kl: 1.0,
            converged: true,
            pairs: vec![],
            promoted: vec![(" boat".into(), 0.3)],
        };
        let m = output_prompt(&record(true), Some(&change), OutputMode::Output).unwrap();
        let user = &m[1].content;
        assert!(user.contains(r#"promotes: " river""#), "{user}");
        assert!(user.contains(r#"steering along it: " boat""#), "{user}");
        assert!(!user.contains("Thames"), "{user}");
        let m = output_prompt(&record(false), None, OutputMode::Ensemble).unwrap();
        assert!(m[1].content.contains("the<< Thames>>"), "{}", m[1].content);
        assert!(!m[1].content.contains("promotes"));
        let err = output_prompt(&record(false), None, OutputMode::Output).unwrap_err();
        assert!(err.to_string().contains("layers.2_latent5"), "{err}");
    }
}
