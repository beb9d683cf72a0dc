//! The default explainer prompt: instructions, worked examples, then the latent's examples.

use autointerp_core::{Example, LatentRecord, Message};
use serde::{Deserialize, Serialize};

use crate::highlight::{above_threshold, escape_text, highlight, DEFAULT_THRESHOLD};
use crate::parse::EXPLANATION_MARKER;

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
}

impl Default for ExplainerConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            show_activations: true,
            max_listed_tokens: 10,
            cot: false,
            max_examples: None,
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
    /// Sets [`ExplainerConfig::threshold`].
    #[must_use]
    pub fn with_threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }
}

const SYSTEM: &str =
    "You are an interpretability researcher studying one feature of a language model. \
You will be shown short excerpts of text in which the feature is active. The tokens where it is \
active are enclosed in << and >>; a stretch of consecutive active tokens shares one pair of \
delimiters, <<like this>>.";

const SYSTEM_ACTIVATIONS: &str = " After each excerpt, a line lists the marked tokens with the \
feature's strength on each, from 0 (inactive) to 10 (its strongest).";

const SYSTEM_RULES: &str = "\n\nYour job is to describe, in one short phrase, what the feature responds to.
- Describe the pattern the excerpts share rather than any single excerpt; ignore excerpts that do not fit.
- Say what the marked tokens are, and mention the surrounding text when it matters (for instance, what comes just before them).
- Give one description, not a list of alternatives, and do not mention the << >> delimiters.
- Finish with a line that starts with [EXPLANATION]: followed by the description.";

const SYSTEM_COT: &str = "\n\nBefore that final line, think in three short steps:
Step 1. Quote up to five of the marked tokens and say what they have in common.
Step 2. Say what the text around the marked tokens has in common.
Step 3. State your hypothesis, checking it against the strongest and the weakest excerpts.";

/// A worked example of the few-shot prompt: excerpts as (token, 0–10 activation) pairs.
struct Shot {
    excerpts: &'static [&'static [(&'static str, u8)]],
    reasoning: &'static str,
    explanation: &'static str,
}

const SHOTS: [Shot; 3] = [
    Shot {
        excerpts: &[
            &[("We", 0), (" waited", 0), (" for", 0), (" three", 1), (" hours", 8), (" before", 0), (" the", 0), (" doctor", 0), (" came", 0)],
            &[("The", 0), (" warranty", 0), (" lasts", 0), (" two", 1), (" years", 9), (" from", 0), (" purchase", 0)],
            &[("Bake", 0), (" for", 0), (" 20", 0), (" minutes", 7), (" until", 0), (" golden", 0)],
        ],
        reasoning: "Step 1. Marked tokens: \" hours\", \" years\", \" minutes\". All are units of time.
Step 2. Each unit follows a number, and together they state how long something takes or lasts.
Step 3. The feature fires on a unit of time that ends a stated duration; it is strongest for the plainest durations.",
        explanation: "Units of time right after a number, stating a duration.",
    },
    Shot {
        excerpts: &[
            &[("I", 0), (" did", 0), (" not", 9), (" enjoy", 3), (" the", 0), (" film", 0)],
            &[("She", 0), (" wasn", 2), ("'t", 8), (" happy", 1), (" about", 0), (" it", 0)],
            &[("This", 0), (" is", 0), (" never", 6), (" a", 0), (" good", 1), (" idea", 0)],
        ],
        reasoning: "Step 1. Marked tokens: \" not\", \"'t\", \" never\", and once \" enjoy\". They are negations.
Step 2. Each negation comes right before a positive word (enjoy, happy, good), turning it around.
Step 3. The feature fires on negation words, most strongly on \"not\", and a little on the positive word that follows.",
        explanation: "Negation words (not, n't, never), especially before a positive word.",
    },
    Shot {
        excerpts: &[
            &[("I", 0), (" wrote", 0), (" the", 0), (" parser", 0), (" in", 0), (" Rust", 9), (" last", 0), (" week", 0)],
            &[("Most", 0), (" data", 0), (" scientists", 0), (" use", 0), (" Python", 8), (" and", 0), (" R", 6)],
            &[("The", 0), (" legacy", 0), (" code", 0), (" is", 0), (" in", 0), (" Visual", 5), (" Basic", 7)],
        ],
        reasoning: "Step 1. Marked tokens: \" Rust\", \" Python\", \" R\", \" Visual Basic\". All name programming languages.
Step 2. The surrounding text is about writing or using software.
Step 3. The feature fires on the names of programming languages, including names of several tokens.",
        explanation: "Names of programming languages.",
    },
];

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

/// The excerpts block of a prompt: `Excerpt 1: <highlighted text>`, each optionally followed by
/// its [`activation_line`].
pub(crate) fn excerpts_block(
    examples: &[Example],
    threshold: f32,
    activations: Option<usize>,
    label: &str,
) -> String {
    let mut lines = Vec::with_capacity(examples.len() * 2);
    for (i, ex) in examples.iter().enumerate() {
        lines.push(format!("{label} {}: {}", i + 1, highlight(ex, threshold)));
        if let Some(line) = activations.and_then(|max| activation_line(ex, threshold, max)) {
            lines.push(line);
        }
    }
    lines.join("\n")
}

/// The system message of the default prompt.
fn system_message(cfg: &ExplainerConfig) -> Message {
    let mut s = SYSTEM.to_string();
    if cfg.show_activations {
        s.push_str(SYSTEM_ACTIVATIONS);
    }
    s.push_str(SYSTEM_RULES);
    if cfg.cot {
        s.push_str(SYSTEM_COT);
    }
    Message::system(s)
}

/// The default explainer prompt for `record`, built from its train examples.
///
/// Messages: the instructions (system), three worked examples (user excerpts, assistant answer,
/// with step-by-step reasoning when [`ExplainerConfig::cot`] is set), then the latent's
/// highlighted examples (user). The answer is expected after [`EXPLANATION_MARKER`]; parse it
/// with [`parse_explanation`](crate::parse_explanation).
pub fn default_prompt(record: &LatentRecord, cfg: &ExplainerConfig) -> Vec<Message> {
    let n = cfg
        .max_examples
        .unwrap_or(usize::MAX)
        .min(record.train.len());
    default_prompt_for_examples(&record.train[..n], cfg)
}

/// [`default_prompt`] for an explicit list of examples.
pub fn default_prompt_for_examples(examples: &[Example], cfg: &ExplainerConfig) -> Vec<Message> {
    let listed = cfg.show_activations.then_some(cfg.max_listed_tokens);
    let mut messages = vec![system_message(cfg)];
    for shot in &SHOTS {
        let shot_examples: Vec<Example> = shot.excerpts.iter().map(|e| shot_example(e)).collect();
        messages.push(Message::user(excerpts_block(
            &shot_examples,
            cfg.threshold,
            listed,
            "Excerpt",
        )));
        let answer = if cfg.cot {
            format!(
                "{}\n{EXPLANATION_MARKER} {}",
                shot.reasoning, shot.explanation
            )
        } else {
            format!("{EXPLANATION_MARKER} {}", shot.explanation)
        };
        messages.push(Message::assistant(answer));
    }
    messages.push(Message::user(excerpts_block(
        examples,
        cfg.threshold,
        listed,
        "Excerpt",
    )));
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cfg = ExplainerConfig::default();
        let m = default_prompt_for_examples(&[], &cfg);
        assert_eq!(m.len(), 8);
        assert!(m[1].content.contains("three<< hours>> before"));
        assert!(m[3].content.contains("did<< not enjoy>> the"));
        assert!(m[5].content.contains("in<< Visual Basic>>"));
        for (i, shot) in SHOTS.iter().enumerate() {
            assert!(crate::parse_explanation(&m[2 + 2 * i].content).unwrap() == shot.explanation);
        }
        let cot = default_prompt_for_examples(&[], &cfg.clone().with_cot(true));
        for (i, shot) in SHOTS.iter().enumerate() {
            assert_eq!(
                crate::parse_explanation(&cot[2 + 2 * i].content).unwrap(),
                shot.explanation
            );
        }
    }
}
