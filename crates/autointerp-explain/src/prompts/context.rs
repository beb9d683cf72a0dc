//! The variables each template is rendered with: one struct per template, so that the code that
//! fills them and docs/PROMPTS.md name the same fields.

use autointerp_core::Example;
use minijinja::value::Value;
use minijinja::{Error as JinjaError, ErrorKind, State};
use serde::Serialize;

use super::settings::{HIGHLIGHT_CLOSE, HIGHLIGHT_OPEN};
use super::PromptSettings;
use crate::highlight::{above_threshold, escape_text, render_highlighted_with, Markers};
use crate::prompt::normalized_activation;

/// One example as a template sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Excerpt {
    /// The example's text as shown, escaped (see [the highlight module](mod@crate::highlight));
    /// its highlighted tokens between the template's markers where the prompt highlights them.
    pub text: String,
    /// The highlighted tokens with their 0–10 activations, in order, at most the prompt's limit;
    /// empty where the prompt lists none.
    pub activations: Vec<TokenActivation>,
}

/// A highlighted token and its activation, for a template's activation list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenActivation {
    /// The token's text, escaped.
    pub token: String,
    /// `token` as a JSON string, quotes included (`" not"`).
    pub quoted: String,
    /// The activation on the 0–10 scale ([`normalized_activation`]).
    pub value: u8,
}

impl Excerpt {
    /// An excerpt shown as `text`, with no activation list.
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            activations: Vec::new(),
        }
    }

    /// `example` with the tokens above `threshold` × its maximum highlighted between `markers`,
    /// and at most `max_listed` of them listed with their activations.
    pub fn highlighted(
        example: &Example,
        threshold: f32,
        max_listed: usize,
        markers: &Markers,
    ) -> Self {
        let mask = above_threshold(example, threshold);
        let activations = mask
            .iter()
            .enumerate()
            .filter(|(_, on)| **on)
            .take(max_listed)
            .map(|(i, _)| {
                let token = escape_text(&example.str_tokens[i]);
                TokenActivation {
                    quoted: serde_json::Value::String(token.clone()).to_string(),
                    token,
                    value: normalized_activation(example, i),
                }
            })
            .collect();
        Self {
            text: render_highlighted_with(&example.str_tokens, &mask, markers),
            activations,
        }
    }
}

/// Variables of `explainer.jinja`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainerContext {
    /// The latent's examples, highlighted, with their activation lists.
    pub examples: Vec<Excerpt>,
    /// Whether the prompt lists activations after each example.
    pub show_activations: bool,
    /// Whether the explainer is asked to reason in steps first.
    pub cot: bool,
    /// Tokens above this fraction of an example's maximum are highlighted (`shot_example` uses
    /// it).
    pub threshold: f32,
    /// At most this many tokens are listed per example (`shot_example` uses it).
    pub max_listed_tokens: usize,
    /// The tokens the latent's decoder direction promotes most, JSON-quoted and escaped,
    /// strongest first; empty unless the explainer is asked to show them and the record has
    /// them.
    pub promoted: Vec<String>,
}

/// Variables of `contrastive.jinja`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContrastiveContext {
    /// The activating examples, highlighted, with their activation lists.
    pub examples: Vec<Excerpt>,
    /// The non-activating examples, plain.
    pub silent: Vec<Excerpt>,
    /// Whether the prompt lists activations after each activating example.
    pub show_activations: bool,
    /// Tokens above this fraction of an example's maximum are highlighted.
    pub threshold: f32,
    /// At most this many tokens are listed per example.
    pub max_listed_tokens: usize,
    /// The tokens the latent's decoder direction promotes most, JSON-quoted and escaped,
    /// strongest first; empty unless the explainer is asked to show them and the record has
    /// them.
    pub promoted: Vec<String>,
}

/// Variables of `detection.jinja` and `fuzzing.jinja`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifierContext {
    /// The explanation scored, trimmed and escaped.
    pub explanation: String,
    /// The batch's excerpts in the order the answer lists them: plain for detection,
    /// highlighted for fuzzing.
    pub examples: Vec<Excerpt>,
}

/// Variables of `detection_one.jinja` and `fuzzing_one.jinja`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifierOneContext {
    /// The explanation scored, trimmed and escaped.
    pub explanation: String,
    /// The one excerpt.
    pub example: Excerpt,
}

/// Variables of `intruder.jinja`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntruderContext {
    /// The trial's excerpts, highlighted, the intruder among them.
    pub examples: Vec<Excerpt>,
    /// Whether the scorer is asked to state the shared pattern first.
    pub cot: bool,
}

/// Variables of `simulation.jinja` and `simulation_json.jinja`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationContext {
    /// The explanation, trimmed; escaped for `simulation.jinja`, as it is for
    /// `simulation_json.jinja` (where JSON quotes it).
    pub explanation: String,
    /// The document's tokens: for `simulation.jinja` each on one line, without tabs, with the
    /// document markers broken; as they are for `simulation_json.jinja`.
    pub tokens: Vec<String>,
}

/// Variables of `surprisal.jinja`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SurprisalContext {
    /// The explanation, trimmed, or the baseline description.
    pub description: String,
}

/// `shot_example(pairs)`: an example written in a template as `[token, activation]` pairs
/// (activations on the 0–10 scale) as an [`Excerpt`] highlighted and listed like the latent's
/// own, with the render's `threshold`, `max_listed_tokens` and highlight markers.
pub(crate) fn shot_example(state: &State<'_, '_>, pairs: Vec<Value>) -> Result<Value, JinjaError> {
    let var = |name: &str| {
        state.lookup(name).ok_or_else(|| {
            JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("shot_example needs the variable {name}: it is for the explainer prompts"),
            )
        })
    };
    let invalid = |name: &str| {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("shot_example: {name} is not a number"),
        )
    };
    let threshold = f32::try_from(var("threshold")?).map_err(|_| invalid("threshold"))?;
    let max_listed = var("max_listed_tokens")?
        .as_usize()
        .ok_or_else(|| invalid("max_listed_tokens"))?;
    let marker = |name: &str| -> Result<String, JinjaError> {
        Ok(var(name)?.as_str().unwrap_or_default().to_string())
    };
    let markers = Markers::new(marker(HIGHLIGHT_OPEN)?, marker(HIGHLIGHT_CLOSE)?);
    let bad = |pair: &Value| {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("shot_example takes [token, activation 0..=10] pairs, not {pair}"),
        )
    };
    let mut example = Example {
        tokens: vec![0; pairs.len()],
        str_tokens: Vec::with_capacity(pairs.len()),
        activations: Vec::with_capacity(pairs.len()),
        normalized: Vec::with_capacity(pairs.len()),
        quantile: None,
        distance: None,
    };
    for pair in &pairs {
        let token = pair.get_item_by_index(0).map_err(|_| bad(pair))?;
        let value = pair.get_item_by_index(1).map_err(|_| bad(pair))?;
        let (Some(token), Some(value)) = (token.as_str(), value.as_i64()) else {
            return Err(bad(pair));
        };
        let value = u8::try_from(value)
            .ok()
            .filter(|v| *v <= 10)
            .ok_or_else(|| bad(pair))?;
        example.str_tokens.push(token.to_string());
        example.activations.push(f32::from(value));
        example.normalized.push(value);
    }
    Ok(Value::from_serialize(Excerpt::highlighted(
        &example, threshold, max_listed, &markers,
    )))
}

/// The contexts a template is rendered with when it is loaded: every branch of the default
/// templates, awkward text included (markers, answer markers and line breaks in examples).
pub(crate) fn samples(
    kind: super::PromptKind,
    settings: &PromptSettings,
) -> Vec<serde_json::Value> {
    use super::PromptKind as K;
    let example = |tokens: &[&str], acts: &[f32]| Example {
        tokens: vec![0; tokens.len()],
        str_tokens: tokens.iter().map(|t| (*t).to_string()).collect(),
        activations: acts.to_vec(),
        normalized: vec![],
        quantile: Some(1),
        distance: None,
    };
    let examples = [
        example(&["The", " Thames", " flooded", "."], &[0.0, 4.0, 0.5, 0.0]),
        example(
            &[
                "x <<",
                "Nile",
                ">> [EXPLANATION]:",
                "\n",
                settings.highlight.open.as_str(),
            ],
            &[0.0, 2.0, 0.0, 0.0, 1.0],
        ),
        example(&["nothing", " here"], &[0.0, 0.0]),
    ];
    let highlighted = |max: usize| -> Vec<Excerpt> {
        examples
            .iter()
            .map(|e| Excerpt::highlighted(e, 0.3, max, &settings.highlight))
            .collect()
    };
    let plain: Vec<Excerpt> = examples
        .iter()
        .map(|e| Excerpt::plain(escape_text(&e.text())))
        .collect();
    let explanation = "Names of rivers [EXPLANATION]: <<x>>".to_string();
    let promoted = vec![r#"" Paris""#.to_string(), r#""\n""#.to_string()];
    let mut out = Vec::new();
    match kind {
        K::Explainer => {
            for (show_activations, cot) in [(true, false), (false, true), (true, true)] {
                out.push(to_json(&ExplainerContext {
                    examples: highlighted(10),
                    show_activations,
                    cot,
                    threshold: 0.3,
                    max_listed_tokens: 10,
                    promoted: if cot { promoted.clone() } else { vec![] },
                }));
            }
        }
        K::Contrastive => {
            for (show_activations, silent) in [(true, plain.clone()), (false, vec![])] {
                out.push(to_json(&ContrastiveContext {
                    examples: highlighted(10),
                    silent,
                    show_activations,
                    threshold: 0.3,
                    max_listed_tokens: 10,
                    promoted: if show_activations {
                        promoted.clone()
                    } else {
                        vec![]
                    },
                }));
            }
        }
        K::Detection => out.push(to_json(&ClassifierContext {
            explanation,
            examples: plain,
        })),
        K::Fuzzing => out.push(to_json(&ClassifierContext {
            explanation,
            examples: highlighted(0),
        })),
        K::DetectionOne => out.push(to_json(&ClassifierOneContext {
            explanation,
            example: plain[1].clone(),
        })),
        K::FuzzingOne => out.push(to_json(&ClassifierOneContext {
            explanation,
            example: highlighted(0)[1].clone(),
        })),
        K::Intruder => {
            for cot in [false, true] {
                out.push(to_json(&IntruderContext {
                    examples: highlighted(0),
                    cot,
                }));
            }
        }
        K::Simulation | K::SimulationJson => out.push(to_json(&SimulationContext {
            explanation,
            tokens: sample_tokens(settings),
        })),
        K::Surprisal => out.push(to_json(&SurprisalContext {
            description: explanation,
        })),
    }
    out
}

/// The tokens of the sample simulation document: the markers themselves among them, broken as
/// the simulation scorer breaks them.
pub(crate) fn sample_tokens(settings: &PromptSettings) -> Vec<String> {
    [
        "The",
        " Thames",
        &settings.document_start,
        &settings.document_end,
        ".",
    ]
    .iter()
    .map(|t| {
        crate::highlight::defuse(
            &crate::highlight::defuse(t, &settings.document_start),
            &settings.document_end,
        )
    })
    .collect()
}

/// A context as JSON, the form the renderer cleans before handing it to a template.
pub(crate) fn to_json<T: Serialize>(context: &T) -> serde_json::Value {
    // Contexts are structs of strings, numbers and lists: they always serialise.
    serde_json::to_value(context).unwrap_or(serde_json::Value::Null)
}
