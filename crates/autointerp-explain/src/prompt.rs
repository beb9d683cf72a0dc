//! The default explainer prompt: instructions, worked examples, then the latent's examples,
//! rendered from `explainer.jinja` (see [`crate::prompts`]).

use autointerp_core::{Example, LatentRecord, Message};
use serde::{Deserialize, Serialize};

use crate::highlight::{above_threshold, escape_text, DEFAULT_THRESHOLD};
use crate::prompts::{Excerpt, ExplainerContext, PromptError, PromptKind, PromptSet};

/// Options of the default explainer prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExplainerConfig {
    /// Tokens above this fraction of an example's maximum activation are highlighted.
    pub threshold: f32,
    /// Whether each example is followed by a line listing its highlighted tokens with their
    /// 0–10 activations.
    pub show_activations: bool,
    /// At most this many tokens are listed per example.
    pub max_listed_tokens: usize,
    /// Whether the explainer is asked to reason in steps before answering.
    pub cot: bool,
    /// At most this many of the record's train examples are shown (all when `None`).
    pub max_examples: Option<usize>,
    /// Whether the prompt ends with the tokens the latent's decoder direction promotes most
    /// (its logit lens, [`LatentRecord::logits`]), as Neuronpedia's max-activation + logits
    /// explainer does; nothing is added for a record without them.
    pub show_logits: bool,
}

impl Default for ExplainerConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            show_activations: true,
            max_listed_tokens: 10,
            cot: false,
            max_examples: None,
            show_logits: false,
        }
    }
}

impl ExplainerConfig {
    /// Sets [`ExplainerConfig::show_activations`].
    #[must_use]
    pub fn with_activations(mut self, show: bool) -> Self {
        self.show_activations = show;
        self
    }
    /// Sets [`ExplainerConfig::cot`].
    #[must_use]
    pub fn with_cot(mut self, cot: bool) -> Self {
        self.cot = cot;
        self
    }
    /// Sets [`ExplainerConfig::show_logits`].
    #[must_use]
    pub fn with_logits(mut self, show: bool) -> Self {
        self.show_logits = show;
        self
    }
    /// Sets [`ExplainerConfig::threshold`].
    #[must_use]
    pub fn with_threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }
}

/// Token `i`'s activation on the 0–10 scale: `example.normalized[i]` when the example has one
/// value per token, else `floor(10 × activation / the example's maximum)`, clamped to 0..=10
/// (0 when the maximum is not positive).
pub fn normalized_activation(example: &Example, i: usize) -> u8 {
    if example.normalized.len() == example.str_tokens.len() {
        if let Some(&v) = example.normalized.get(i) {
            return v;
        }
    }
    let max = example.max_activation();
    let a = example.activations.get(i).copied().unwrap_or(0.0);
    if max > 0.0 {
        (10.0 * a / max).floor().clamp(0.0, 10.0) as u8
    } else {
        0
    }
}

/// The line listing an example's highlighted tokens with their 0–10 activations, e.g.
/// `Activations: " not" 9, " enjoy" 3`; `None` when no token is highlighted. Tokens are shown
/// JSON-quoted and escaped; at most `max_tokens` are listed, with their
/// [`normalized_activation`].
pub fn activation_line(example: &Example, threshold: f32, max_tokens: usize) -> Option<String> {
    let mask = above_threshold(example, threshold);
    let items: Vec<String> = mask
        .iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .take(max_tokens)
        .map(|(i, _)| {
            let value = normalized_activation(example, i);
            let token = serde_json::Value::String(escape_text(&example.str_tokens[i])).to_string();
            format!("{token} {value}")
        })
        .collect();
    (!items.is_empty()).then(|| format!("Activations: {}", items.join(", ")))
}

/// At most this many promoted tokens are shown to an explainer (Neuronpedia shows 10).
pub const MAX_PROMOTED_TOKENS: usize = 10;

/// The tokens `record`'s latent promotes most, for an explainer prompt: escaped and JSON-quoted
/// (`" Paris"`), strongest first, at most [`MAX_PROMOTED_TOKENS`]; empty unless `show` and the
/// record has them.
pub fn promoted_tokens(record: &LatentRecord, show: bool) -> Vec<String> {
    match &record.logits {
        Some(logits) if show => logits
            .promoted
            .iter()
            .take(MAX_PROMOTED_TOKENS)
            .map(|t| serde_json::Value::String(escape_text(&t.text)).to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// The default explainer prompt for `record`, built from its train examples (and the tokens its
/// latent promotes, with [`ExplainerConfig::show_logits`]).
///
/// Messages: the instructions (system), three worked examples (user excerpts, assistant answer,
/// with step-by-step reasoning when [`ExplainerConfig::cot`] is set), then the latent's
/// highlighted examples (user), from the built-in `explainer.jinja`. The answer is expected after
/// [`EXPLANATION_MARKER`](crate::EXPLANATION_MARKER); parse it with
/// [`parse_explanation`](crate::parse_explanation).
pub fn default_prompt(record: &LatentRecord, cfg: &ExplainerConfig) -> Vec<Message> {
    built_in(default_prompt_with(&PromptSet::embedded(), record, cfg))
}

/// [`default_prompt`] for an explicit list of examples.
pub fn default_prompt_for_examples(examples: &[Example], cfg: &ExplainerConfig) -> Vec<Message> {
    built_in(render(&PromptSet::embedded(), examples, Vec::new(), cfg))
}

/// [`default_prompt`] from `prompts`' `explainer.jinja`, its examples highlighted with the
/// template's markers.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this record's examples.
pub fn default_prompt_with(
    prompts: &PromptSet,
    record: &LatentRecord,
    cfg: &ExplainerConfig,
) -> Result<Vec<Message>, PromptError> {
    let promoted = promoted_tokens(record, cfg.show_logits);
    render(prompts, shown_examples(record, cfg), promoted, cfg)
}

/// The train examples the default prompt shows.
fn shown_examples<'a>(record: &'a LatentRecord, cfg: &ExplainerConfig) -> &'a [Example] {
    let n = cfg
        .max_examples
        .unwrap_or(usize::MAX)
        .min(record.train.len());
    &record.train[..n]
}

fn render(
    prompts: &PromptSet,
    examples: &[Example],
    promoted: Vec<String>,
    cfg: &ExplainerConfig,
) -> Result<Vec<Message>, PromptError> {
    let markers = &prompts.settings(PromptKind::Explainer).highlight;
    let context = ExplainerContext {
        examples: examples
            .iter()
            .map(|e| Excerpt::highlighted(e, cfg.threshold, cfg.max_listed_tokens, markers))
            .collect(),
        show_activations: cfg.show_activations,
        cot: cfg.cot,
        threshold: cfg.threshold,
        max_listed_tokens: cfg.max_listed_tokens,
        promoted,
    };
    prompts.render_messages(PromptKind::Explainer, &context)
}

/// The result of rendering a built-in template, which renders every context it is given (the
/// tests render each one); a failure is a bug in this crate's templates.
pub(crate) fn built_in<T>(rendered: Result<T, PromptError>) -> T {
    rendered.unwrap_or_else(|e| panic!("built-in prompt template failed, a bug: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An example from (token, 0–10 activation) pairs.
    fn shot_example(excerpt: &[(&str, u8)]) -> Example {
        Example {
            tokens: vec![0; excerpt.len()],
            str_tokens: excerpt.iter().map(|(t, _)| t.to_string()).collect(),
            activations: excerpt.iter().map(|&(_, a)| f32::from(a)).collect(),
            normalized: excerpt.iter().map(|&(_, a)| a).collect(),
            quantile: None,
            distance: None,
        }
    }

    #[test]
    fn activation_line_lists_highlighted_tokens() {
        let ex = shot_example(&[("I", 0), (" did", 0), (" not", 9), (" enjoy", 3)]);
        assert_eq!(
            activation_line(&ex, 0.3, 10).unwrap(),
            r#"Activations: " not" 9, " enjoy" 3"#
        );
        assert_eq!(
            activation_line(&ex, 0.3, 1).unwrap(),
            r#"Activations: " not" 9"#
        );
        let silent = shot_example(&[("a", 0)]);
        assert_eq!(activation_line(&silent, 0.3, 10), None);
        // Missing normalized values are computed from the maximum.
        let mut ex = ex;
        ex.normalized.clear();
        ex.activations = vec![0.0, 0.0, 2.0, 1.0];
        assert_eq!(
            activation_line(&ex, 0.3, 10).unwrap(),
            r#"Activations: " not" 10, " enjoy" 5"#
        );
    }

    #[test]
    fn worked_examples_highlight_what_their_reasoning_says() {
        let explanations = [
            "Units of time right after a number, stating a duration.",
            "Negation words (not, n't, never), especially before a positive word.",
            "Names of programming languages.",
        ];
        let cfg = ExplainerConfig::default();
        let m = default_prompt_for_examples(&[], &cfg);
        assert_eq!(m.len(), 8);
        assert!(m[1].content.contains("three<< hours>> before"));
        assert!(m[3].content.contains("did<< not enjoy>> the"));
        assert!(m[5].content.contains("in<< Visual Basic>>"));
        for (i, explanation) in explanations.iter().enumerate() {
            assert_eq!(
                crate::parse_explanation(&m[2 + 2 * i].content).unwrap(),
                *explanation
            );
        }
        // The worked examples follow the configured threshold: at 0.5, "enjoy" (3 of 9) is no
        // longer highlighted.
        let strict = default_prompt_for_examples(&[], &cfg.clone().with_threshold(0.5));
        assert!(
            strict[3].content.contains("did<< not>> enjoy the"),
            "{}",
            strict[3].content
        );
        let cot = default_prompt_for_examples(&[], &cfg.clone().with_cot(true));
        for (i, explanation) in explanations.iter().enumerate() {
            let answer = &cot[2 + 2 * i].content;
            assert!(answer.starts_with("Step 1. Marked tokens: "), "{answer}");
            assert_eq!(crate::parse_explanation(answer).unwrap(), *explanation);
        }
    }
}
