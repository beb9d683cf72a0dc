//! Simulation: the scorer predicts the latent's 0–10 activation on every token from the
//! explanation alone; the score is the correlation between predicted and true activations.
//!
//! Two prompt forms, as in delphi (after OpenAI's neuron-explainer):
//! - **All at once, with prompt logprobs** ([`simulation_prompt`]): the prompt ends with an
//!   assistant message listing every token followed by a tab and `unknown`. One forward pass
//!   with prompt logprobs (vLLM's `prompt_logprobs`) gives, at each `unknown`, the probabilities
//!   of `0`…`10`; their expected value is the prediction
//!   ([`simulate_from_prompt_logprobs`]).
//! - **JSON** ([`json_simulation_prompt`]), for APIs without prompt logprobs: the model fills
//!   in a JSON list of token activations ([`parse_json_simulation`]).

use std::future::Future;
use std::sync::Arc;

use autointerp_client::{ChatResponse, Client, Usage};
use autointerp_core::{Example, Explanation, LatentRecord, Message, Score};
use autointerp_explain::highlight::defuse;
use autointerp_explain::prompts::{
    PromptError, PromptKind, PromptSet, PromptSettings, SimulationContext,
};
use autointerp_explain::{normalized_activation, GenerationConfig};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::parse_failure;
use crate::metrics::{absolute_dev_explained_score, pearson, rsquared_score};
use crate::scorer::{add_usage, or_nan, unless_all_failed};
use crate::{Error, Result, ScoreDetails, Scorer, ScorerResult};

/// Name of the simulation scorer, as in delphi (`scores/simulation/`).
pub const SIMULATION: &str = "simulation";

/// A token as written on its line of a simulation prompt: line breaks become `↵`, tabs `⇥`,
/// `<|endoftext|>` becomes `<|not_endoftext|>` (as OpenAI's simulator does), and the document
/// markers `<start>` and `<end>` become `‹start›` and `‹end›`, so that each token stays on its
/// line, reads as text, and cannot pass for the line the predictions are read after.
pub fn display_token(token: &str) -> String {
    display_token_with(token, &PromptSettings::defaults(PromptKind::Simulation))
}

/// [`display_token`] for a template with `settings`: its `document_start` and `document_end`
/// are the markers broken (see [`defuse`]).
pub fn display_token_with(token: &str, settings: &PromptSettings) -> String {
    let shown = token
        .replace("<|endoftext|>", "<|not_endoftext|>")
        .replace("\r\n", "↵")
        .replace(['\n', '\r'], "↵")
        .replace('\t', "⇥");
    defuse(
        &defuse(&shown, &settings.document_start),
        &settings.document_end,
    )
}

/// The all-at-once simulation prompt for one sequence: instructions (system), two worked
/// examples, the explanation (user), and a **final assistant message** listing the tokens
/// (see [`display_token`]) with activation `unknown`, from the built-in `simulation.jinja`.
///
/// Send it for prompt logprobs without generating (continue the final assistant message; do not
/// add a generation prompt), then pass the prompt's tokens and logprobs to
/// [`simulate_from_prompt_logprobs`].
pub fn simulation_prompt<S: AsRef<str>>(explanation: &str, str_tokens: &[S]) -> Vec<Message> {
    crate::detection::built_in(simulation_prompt_with(
        &PromptSet::embedded(),
        explanation,
        str_tokens,
    ))
}

/// [`simulation_prompt`] from `prompts`' `simulation.jinja`, the tokens shown with
/// [`display_token_with`] and its settings; read the predictions with
/// [`simulate_from_prompt_logprobs_with`] and its `document_start`.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this sequence.
pub fn simulation_prompt_with<S: AsRef<str>>(
    prompts: &PromptSet,
    explanation: &str,
    str_tokens: &[S],
) -> std::result::Result<Vec<Message>, PromptError> {
    let settings = prompts.settings(PromptKind::Simulation);
    let context = SimulationContext {
        explanation: autointerp_explain::escape_text(explanation.trim()),
        tokens: str_tokens
            .iter()
            .map(|t| display_token_with(t.as_ref(), settings))
            .collect(),
    };
    prompts.render_messages(PromptKind::Simulation, &context)
}

/// The expected activation at one position from its top `(token, logprob)` alternatives:
/// `Σ v·p(v) / Σ p(v)` over the alternatives that read as an integer `v` in 0..=10 (whitespace
/// ignored; `"7"` and `" 7"` add up). `None` when no alternative is such a number.
pub fn expected_activation(top: &[(String, f32)]) -> Option<f32> {
    let (mut total, mut weighted) = (0.0f64, 0.0f64);
    for (token, logprob) in top {
        if let Ok(v) = token.trim().parse::<u8>() {
            if v <= 10 && !token.trim().starts_with('+') {
                let p = f64::from(*logprob).exp();
                total += p;
                weighted += p * f64::from(v);
            }
        }
    }
    (total > 0.0).then(|| (weighted / total) as f32)
}

/// Predicted activations from the prompt logprobs of a [`simulation_prompt`].
///
/// `prompt_tokens` are the prompt's tokens as text, in order, as the model saw them (chat
/// template applied); `top_logprobs[j]` are the alternatives for token `j` given the tokens
/// before it (empty where the API gives none). In the text after the last `<start>` (which no
/// token can forge: [`display_token`] breaks it), the token
/// holding the first character after each tab is where an activation is predicted; its
/// [`expected_activation`] is the prediction. The first `n_tokens` predictions are returned;
/// fewer, or a position without numeric alternatives, is a [`Error::ParseFailure`](crate::Error).
pub fn simulate_from_prompt_logprobs<S: AsRef<str>>(
    prompt_tokens: &[S],
    top_logprobs: &[Vec<(String, f32)>],
    n_tokens: usize,
) -> Result<Vec<f32>> {
    simulate_from_prompt_logprobs_with(prompt_tokens, top_logprobs, n_tokens, "<start>")
}

/// [`simulate_from_prompt_logprobs`] for a template whose document follows `document_start`
/// (its setting of that name).
pub fn simulate_from_prompt_logprobs_with<S: AsRef<str>>(
    prompt_tokens: &[S],
    top_logprobs: &[Vec<(String, f32)>],
    n_tokens: usize,
    document_start: &str,
) -> Result<Vec<f32>> {
    let text: String = prompt_tokens.iter().map(AsRef::as_ref).collect();
    let fail = |reason: String| parse_failure(reason, &text);
    if top_logprobs.len() != prompt_tokens.len() {
        return Err(fail(format!(
            "{} tokens but {} logprob entries",
            prompt_tokens.len(),
            top_logprobs.len()
        )));
    }
    let start = text
        .rfind(document_start)
        .ok_or_else(|| fail(format!("no {document_start} in the prompt")))?;
    let mut ends = Vec::with_capacity(prompt_tokens.len());
    let mut at = 0;
    for t in prompt_tokens {
        at += t.as_ref().len();
        ends.push(at);
    }
    let mut predictions = Vec::with_capacity(n_tokens);
    for (tab, _) in text[start..].match_indices('\t') {
        if predictions.len() == n_tokens {
            break;
        }
        let next = start + tab + 1;
        // The token whose byte range holds `next`.
        let j = ends.partition_point(|&end| end <= next);
        let Some(top) = top_logprobs.get(j) else {
            break;
        };
        let value = expected_activation(top)
            .ok_or_else(|| fail(format!("no 0..=10 alternatives at prompt token {j}")))?;
        predictions.push(value);
    }
    if predictions.len() < n_tokens {
        return Err(fail(format!(
            "found {} activation slots, expected {n_tokens}",
            predictions.len()
        )));
    }
    Ok(predictions)
}

/// The JSON-mode simulation prompt: instructions (system), two worked examples (user JSON with
/// empty activations, assistant JSON filled in), then the sequence (user), from the built-in
/// `simulation_json.jinja`. Read the answer with [`parse_json_simulation`].
pub fn json_simulation_prompt<S: AsRef<str>>(explanation: &str, str_tokens: &[S]) -> Vec<Message> {
    crate::detection::built_in(json_simulation_prompt_with(
        &PromptSet::embedded(),
        explanation,
        str_tokens,
    ))
}

/// [`json_simulation_prompt`] from `prompts`' `simulation_json.jinja`.
///
/// # Errors
/// [`PromptError::Template`] when the template fails on this sequence.
pub fn json_simulation_prompt_with<S: AsRef<str>>(
    prompts: &PromptSet,
    explanation: &str,
    str_tokens: &[S],
) -> std::result::Result<Vec<Message>, PromptError> {
    let context = SimulationContext {
        explanation: explanation.trim().to_string(),
        tokens: str_tokens.iter().map(|t| t.as_ref().to_string()).collect(),
    };
    prompts.render_messages(PromptKind::SimulationJson, &context)
}

/// Reads the predicted activations from a JSON-mode answer: the outermost `{…}` (code fences and
/// prose around it allowed) must hold an `activations` list of exactly `n_tokens` entries, each
/// `{"activation": v}` (or a bare number) with `v` a number — or numeric string — in 0..=10.
/// Anything else is a [`Error::ParseFailure`](crate::Error); delphi instead scores such answers as
/// all-zero predictions.
pub fn parse_json_simulation(answer: &str, n_tokens: usize) -> Result<Vec<f32>> {
    let fail = |reason: String| parse_failure(reason, answer);
    let (Some(open), Some(close)) = (answer.find('{'), answer.rfind('}')) else {
        return Err(fail("no JSON object".into()));
    };
    if close < open {
        return Err(fail("no JSON object".into()));
    }
    let value: serde_json::Value = serde_json::from_str(&answer[open..=close])
        .map_err(|e| fail(format!("invalid JSON: {e}")))?;
    let entries = value
        .get("activations")
        .and_then(|a| a.as_array())
        .ok_or_else(|| fail("no `activations` list".into()))?;
    if entries.len() != n_tokens {
        return Err(fail(format!(
            "{} activations for {n_tokens} tokens",
            entries.len()
        )));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let v = e.get("activation").unwrap_or(e);
            let x = match v {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match x {
                Some(x) if (0.0..=10.0).contains(&x) => Ok(x as f32),
                _ => Err(fail(format!(
                    "activation {i} is {v}, not a number in 0..=10"
                ))),
            }
        })
        .collect()
}

/// One sequence of a simulation: what was shown, the true activations, and the prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulatedSequence {
    /// Tokens of the sequence.
    pub tokens: Vec<String>,
    /// True activations on the 0–10 scale: an activating example's
    /// [`normalized_activation`]s, zeros for a non-activating one (as delphi).
    pub true_activations: Vec<f32>,
    /// Predicted activations; `None` when the scorer's answer could not be used (a failed
    /// sequence, excluded from every correlation).
    pub predicted: Option<Vec<f32>>,
    /// The quantile of an activating example.
    pub quantile: Option<u8>,
    /// Whether the example activates the latent.
    pub activating: bool,
}

fn true_activations(e: &Example) -> Vec<f32> {
    (0..e.str_tokens.len())
        .map(|i| f32::from(normalized_activation(e, i)))
        .collect()
}

/// The sequences to simulate for `record`: its test examples, then its non-activating examples
/// (true activations all zero), predictions still to fill in.
pub fn simulation_targets(record: &LatentRecord) -> Vec<SimulatedSequence> {
    let test = record.test.iter().map(|e| SimulatedSequence {
        tokens: e.str_tokens.clone(),
        true_activations: true_activations(e),
        predicted: None,
        quantile: e.quantile,
        activating: true,
    });
    let silent = record.non_activating.iter().map(|e| SimulatedSequence {
        tokens: e.str_tokens.clone(),
        true_activations: vec![0.0; e.str_tokens.len()],
        predicted: None,
        quantile: None,
        activating: false,
    });
    test.chain(silent).collect()
}

/// A score that may be undefined; written as a number, or as the string `"nan"` as delphi does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaybeNan(pub Option<f64>);

impl Serialize for MaybeNan {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Some(x) if x.is_finite() => s.serialize_f64(x),
            _ => s.serialize_str("nan"),
        }
    }
}

impl<'de> Deserialize<'de> for MaybeNan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(x) => Ok(Self(Some(x))),
            Raw::Text(s) if s.eq_ignore_ascii_case("nan") => Ok(Self(None)),
            Raw::Text(s) => Err(serde::de::Error::custom(format!(
                "expected a number or \"nan\", got {s:?}"
            ))),
        }
    }
}

/// delphi's `SequenceSimulation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceSimulation {
    /// Tokens of the sequence.
    pub tokens: Vec<String>,
    /// Predicted activation of each token.
    pub expected_activations: Vec<f32>,
    /// Always `"simulated_normalized_activations"` (the 0–10 scale).
    pub activation_scale: String,
    /// Unused; empty, as delphi writes it.
    pub distribution_values: Vec<Vec<u8>>,
    /// Unused; empty, as delphi writes it.
    pub distribution_probabilities: Vec<Vec<f32>>,
    /// Unused; `null`, as delphi writes it.
    pub uncalibrated_simulation: Option<Box<SequenceSimulation>>,
}

/// delphi's `ScoredSequenceSimulation`: one sequence and its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredSequenceSimulation {
    /// The sequence's quantile numbered from 0 as delphi numbers them (our quantile `q` is
    /// `q - 1`); `-1` for a non-activating sequence or one without a quantile.
    pub distance: i64,
    /// The prediction.
    pub simulation: SequenceSimulation,
    /// The true activations (0–10 scale).
    pub true_activations: Vec<f32>,
    /// Pearson correlation of predicted and true activations.
    pub ev_correlation_score: MaybeNan,
    /// OpenAI's R², see [`rsquared_score`] (delphi writes 0).
    pub rsquared_score: MaybeNan,
    /// OpenAI's absolute deviation explained, see [`absolute_dev_explained_score`] (delphi
    /// writes 0).
    pub absolute_dev_explained_score: MaybeNan,
}

/// delphi's `ScoredSimulation`: the scores of a group of sequences, computed over all their
/// tokens together (not averaged over sequences).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredSimulation {
    /// `0` for the group of all sequences; `q` for the activating sequences of quantile `q`.
    pub distance: i64,
    /// The sequences whose prediction succeeded.
    pub scored_sequence_simulations: Vec<ScoredSequenceSimulation>,
    /// Pearson correlation over the group's tokens.
    pub ev_correlation_score: MaybeNan,
    /// OpenAI's R² over the group's tokens.
    pub rsquared_score: MaybeNan,
    /// OpenAI's absolute deviation explained over the group's tokens.
    pub absolute_dev_explained_score: MaybeNan,
    /// Sequences of the group whose prediction failed, excluded above (not in delphi's format).
    #[serde(default)]
    pub n_failed: usize,
    /// Where those failed sequences are among all the sequences scored (in the order given to
    /// [`score_simulation`]: test examples, then non-activating ones), so that a rerun asks for
    /// exactly these again. Not in delphi's format; written only when there are some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_sequences: Vec<usize>,
}

fn scores(truth: &[f64], pred: &[f64]) -> (MaybeNan, MaybeNan, MaybeNan) {
    (
        MaybeNan(pearson(truth, pred)),
        MaybeNan(rsquared_score(truth, pred)),
        MaybeNan(absolute_dev_explained_score(truth, pred)),
    )
}

/// One group's scores; `members` are the group's sequences with their places among all.
fn group(distance: i64, members: &[(usize, &SimulatedSequence)]) -> ScoredSimulation {
    let mut seqs = Vec::new();
    let (mut all_true, mut all_pred) = (Vec::new(), Vec::new());
    let mut failed_sequences = Vec::new();
    for &(at, s) in members {
        let Some(pred) = s
            .predicted
            .as_ref()
            .filter(|p| p.len() == s.true_activations.len())
        else {
            failed_sequences.push(at);
            continue;
        };
        let t: Vec<f64> = s.true_activations.iter().map(|&x| f64::from(x)).collect();
        let p: Vec<f64> = pred.iter().map(|&x| f64::from(x)).collect();
        let (ev, r2, ade) = scores(&t, &p);
        all_true.extend(t);
        all_pred.extend(p);
        seqs.push(ScoredSequenceSimulation {
            distance: match (s.activating, s.quantile) {
                (true, Some(q)) => crate::outcome::delphi_quantile(q),
                _ => crate::outcome::NONE,
            },
            simulation: SequenceSimulation {
                tokens: s.tokens.clone(),
                expected_activations: pred.clone(),
                activation_scale: "simulated_normalized_activations".into(),
                distribution_values: vec![],
                distribution_probabilities: vec![],
                uncalibrated_simulation: None,
            },
            true_activations: s.true_activations.clone(),
            ev_correlation_score: ev,
            rsquared_score: r2,
            absolute_dev_explained_score: ade,
        });
    }
    let (ev, r2, ade) = scores(&all_true, &all_pred);
    ScoredSimulation {
        distance,
        scored_sequence_simulations: seqs,
        ev_correlation_score: ev,
        rsquared_score: r2,
        absolute_dev_explained_score: ade,
        n_failed: failed_sequences.len(),
        failed_sequences,
    }
}

/// Scores simulated sequences in delphi's layout: first the group of all sequences
/// (`distance: 0`), then one group per quantile of the activating sequences (`distance: q`),
/// by increasing quantile. A sequence whose prediction is missing or of the wrong length is
/// failed: excluded and counted in `n_failed`.
///
/// delphi adds the all-sequences group only when there are non-activating sequences and numbers
/// its 0-based quantiles `q + 1`; our quantiles are 1-based already and the group is always
/// there. The headline simulation score is the all-sequences correlation,
/// `result[0].ev_correlation_score`.
pub fn score_simulation(sequences: &[SimulatedSequence]) -> Vec<ScoredSimulation> {
    let all: Vec<(usize, &SimulatedSequence)> = sequences.iter().enumerate().collect();
    let mut out = vec![group(0, &all)];
    let mut quantiles: Vec<u8> = sequences
        .iter()
        .filter(|s| s.activating)
        .filter_map(|s| s.quantile)
        .collect();
    quantiles.sort_unstable();
    quantiles.dedup();
    for q in quantiles {
        let members: Vec<(usize, &SimulatedSequence)> = sequences
            .iter()
            .enumerate()
            .filter(|(_, s)| s.activating && s.quantile == Some(q))
            .collect();
        out.push(group(i64::from(q), &members));
    }
    out
}

/// How the simulation scorer gets its predictions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulationMode {
    /// delphi's default: one request per sequence for the prompt logprobs of a
    /// [`simulation_prompt`], generating nothing ([`simulate_from_prompt_logprobs`]). Needs a
    /// server that returns prompt logprobs of a continued assistant message: vLLM (sent as
    /// `prompt_logprobs`, `continue_final_message: true`, `add_generation_prompt: false`) or the
    /// in-process engine.
    #[default]
    PromptLogprobs,
    /// For APIs without prompt logprobs: the model writes the activations as JSON
    /// ([`json_simulation_prompt`], [`parse_json_simulation`]).
    Json,
}

/// Options of the simulation scorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulationConfig {
    /// How predictions are obtained.
    pub mode: SimulationMode,
    /// Alternatives asked for at each prompt position in [`SimulationMode::PromptLogprobs`]
    /// (vLLM caps it at its `max_logprobs`, 20 by default).
    pub top_logprobs: u8,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            mode: SimulationMode::PromptLogprobs,
            top_logprobs: 20,
        }
    }
}

/// Predicted activations from the prompt logprobs of a response to a [`simulation_prompt`]:
/// [`simulate_from_prompt_logprobs`] over the positions the server returned (a position without
/// a value, such as the first, counts as an empty token without alternatives).
pub fn simulate_from_response(response: &ChatResponse, n_tokens: usize) -> Result<Vec<f32>> {
    simulate_from_response_with(response, n_tokens, "<start>")
}

/// [`simulate_from_response`] for a template whose document follows `document_start`.
pub fn simulate_from_response_with(
    response: &ChatResponse,
    n_tokens: usize,
    document_start: &str,
) -> Result<Vec<f32>> {
    let Some(positions) = &response.prompt_logprobs else {
        return Err(parse_failure(
            "the server returned no prompt logprobs; use SimulationMode::Json with it",
            &response.text,
        ));
    };
    let tokens: Vec<&str> = positions
        .iter()
        .map(|p| p.as_ref().map_or("", |t| t.token.as_str()))
        .collect();
    let top: Vec<Vec<(String, f32)>> = positions
        .iter()
        .map(|p| p.as_ref().map_or_else(Vec::new, |t| t.top.clone()))
        .collect();
    simulate_from_prompt_logprobs_with(&tokens, &top, n_tokens, document_start)
}

/// The simulation scorer: for each test and non-activating example
/// ([`simulation_targets`]), one request for the predicted 0–10 activation of every token.
///
/// The score is the Pearson correlation of predicted and true activations over the tokens of
/// all sequences whose prediction succeeded (delphi's `ev_correlation_score` of the
/// all-sequences group); NaN when undefined (fewer than two tokens, or a constant prediction).
/// Requests are greedy; JSON answers may take up to 4000 tokens.
#[derive(Debug, Clone)]
pub struct SimulationScorer<C> {
    client: C,
    config: SimulationConfig,
    prompts: Arc<PromptSet>,
    generation: GenerationConfig,
}

impl<C> SimulationScorer<C> {
    /// A simulation scorer asking `client`, with options `config`.
    pub fn new(client: C, config: SimulationConfig) -> Self {
        Self {
            client,
            config,
            prompts: PromptSet::embedded(),
            generation: GenerationConfig::default().with_max_tokens(4000),
        }
    }

    /// Renders its prompts from `prompts` instead of the built-in templates, and reads the
    /// predictions after their `document_start`.
    #[must_use]
    pub fn with_prompts(mut self, prompts: Arc<PromptSet>) -> Self {
        self.prompts = prompts;
        self
    }

    /// Sets the sampling options of its requests (in prompt-logprobs mode, `max_tokens` is 1
    /// whatever is set here).
    #[must_use]
    pub fn with_generation(mut self, generation: GenerationConfig) -> Self {
        self.generation = generation;
        self
    }

    /// The options.
    pub fn config(&self) -> &SimulationConfig {
        &self.config
    }
}

impl<C: Client> SimulationScorer<C> {
    /// Simulates `record`'s test and non-activating examples from `explanation`; see
    /// [`Scorer::score`].
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = SIMULATION))]
    pub async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> Result<ScorerResult> {
        let sequences = targets(record)?;
        self.simulate(record, explanation, sequences).await
    }

    /// Simulates again the sequences that failed in `previous`, keeping the others' predictions
    /// verbatim; see [`Scorer::retry_failed`]. Every sequence is simulated again when
    /// `previous` does not say which failed (a file from before
    /// [`ScoredSimulation::failed_sequences`], or delphi's) or is not about these sequences.
    #[tracing::instrument(skip_all, fields(latent = %record.id, scorer = SIMULATION))]
    pub async fn retry_failed(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        previous: &ScoreDetails,
    ) -> Result<ScorerResult> {
        let mut sequences = targets(record)?;
        let earlier = match previous {
            ScoreDetails::Simulation { groups } => groups.first(),
            _ => None,
        };
        match earlier.and_then(|all| earlier_predictions(all, &sequences)) {
            Some(predictions) => {
                for (s, p) in sequences.iter_mut().zip(predictions) {
                    s.predicted = p;
                }
            }
            None => tracing::debug!("earlier simulations do not match: simulating them all"),
        }
        self.simulate(record, explanation, sequences).await
    }

    /// Asks for the sequences without a prediction, all at once; those with one pass through.
    /// Fails only when every request failed and no prediction was there before.
    async fn simulate(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        mut sequences: Vec<SimulatedSequence>,
    ) -> Result<ScorerResult> {
        let mode = self.config.mode;
        let kept_any = sequences.iter().any(|s| s.predicted.is_some());
        let prompts = &*self.prompts;
        let messages = sequences
            .iter()
            .filter(|s| s.predicted.is_none())
            .map(|s| match mode {
                SimulationMode::PromptLogprobs => {
                    simulation_prompt_with(prompts, &explanation.text, &s.tokens)
                }
                SimulationMode::Json => {
                    json_simulation_prompt_with(prompts, &explanation.text, &s.tokens)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let document_start = prompts
            .settings(PromptKind::Simulation)
            .document_start
            .as_str();
        let requests = messages.into_iter().map(|messages| {
            let req = match mode {
                SimulationMode::PromptLogprobs => self
                    .generation
                    .request(messages)
                    .with_max_tokens(1)
                    .with_prompt_logprobs(self.config.top_logprobs)
                    .with_extra("add_generation_prompt", false)
                    .with_extra("continue_final_message", true),
                SimulationMode::Json => self.generation.request(messages),
            };
            self.client.chat(req)
        });
        let responses = futures::future::join_all(requests).await;
        let responses = if kept_any {
            responses
        } else {
            unless_all_failed(responses)?
        };
        let mut failures = Vec::new();
        let mut usage = Usage::default();
        let asked = sequences.iter_mut().filter(|s| s.predicted.is_none());
        for (sequence, response) in asked.zip(responses) {
            let n = sequence.tokens.len();
            let predicted = response.map_err(Error::Client).and_then(|r| {
                add_usage(&mut usage, &r.usage);
                match mode {
                    SimulationMode::PromptLogprobs => {
                        simulate_from_response_with(&r, n, document_start)
                    }
                    SimulationMode::Json => parse_json_simulation(&r.text, n),
                }
            });
            match predicted {
                Ok(p) => sequence.predicted = Some(p),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let groups = score_simulation(&sequences);
        let (value, n_failed) = groups.first().map_or((f64::NAN, sequences.len()), |all| {
            (or_nan(all.ev_correlation_score.0), all.n_failed)
        });
        if n_failed > 0 {
            tracing::debug!(n_failed, "simulated sequences failed");
        }
        Ok(ScorerResult {
            score: Score {
                latent: record.id,
                scorer: SIMULATION.to_string(),
                value,
                n_failed,
            },
            details: ScoreDetails::Simulation { groups },
            failures,
            usage,
        })
    }
}

/// The sequences of `record` to simulate; an error when it has none.
fn targets(record: &LatentRecord) -> Result<Vec<SimulatedSequence>> {
    let sequences = simulation_targets(record);
    if sequences.is_empty() {
        return Err(Error::NotEnoughExamples {
            latent: record.id,
            what: "no examples to simulate".into(),
        });
    }
    Ok(sequences)
}

/// The earlier prediction of each of `sequences` (`None` where it failed), from the
/// all-sequences group of an earlier result; `None` unless that group lists its failed
/// sequences and its scored ones are, in order, the others (same tokens, same truth).
fn earlier_predictions(
    all: &ScoredSimulation,
    sequences: &[SimulatedSequence],
) -> Option<Vec<Option<Vec<f32>>>> {
    let failed = &all.failed_sequences;
    let scored = &all.scored_sequence_simulations;
    if failed.len() != all.n_failed || failed.len() + scored.len() != sequences.len() {
        return None;
    }
    let mut scored = scored.iter();
    sequences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if failed.contains(&i) {
                return Some(None);
            }
            let old = scored.next()?;
            let same = old.simulation.tokens == s.tokens
                && old.true_activations == s.true_activations
                && old.simulation.expected_activations.len() == s.tokens.len();
            same.then(|| Some(old.simulation.expected_activations.clone()))
        })
        .collect()
}

impl<C: Client> Scorer for SimulationScorer<C> {
    fn name(&self) -> &'static str {
        SIMULATION
    }
    fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        SimulationScorer::score(self, record, explanation)
    }
    fn retry_failed(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
        previous: &ScoreDetails,
    ) -> impl Future<Output = Result<ScorerResult>> + Send {
        SimulationScorer::retry_failed(self, record, explanation, previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(pairs: &[(&str, f32)]) -> Vec<(String, f32)> {
        pairs.iter().map(|(t, p)| (t.to_string(), p.ln())).collect()
    }

    #[test]
    fn expected_value_over_numeric_alternatives() {
        let ev = expected_activation(&top(&[
            ("0", 0.5),
            ("10", 0.25),
            (" 10", 0.125),
            ("unknown", 0.125),
        ]))
        .unwrap();
        assert!((ev - (10.0 * 0.375 / 0.875)).abs() < 1e-5, "{ev}");
        assert_eq!(
            expected_activation(&top(&[("11", 0.5), ("x", 0.5), ("+1", 0.1)])),
            None
        );
    }

    #[test]
    fn reads_predictions_after_each_tab() {
        // A prompt tokenised so that tabs end tokens, and one where a tab starts a token.
        let tokens = [
            "Activations:\n<start>\n",
            "a",
            "\t",
            "unknown",
            "\n",
            " b",
            "\tunknown",
            "\n<end>\n",
        ];
        let mut lp = vec![vec![]; tokens.len()];
        lp[3] = top(&[("0", 0.5), ("4", 0.5)]);
        lp[6] = top(&[("\t8", 1.0)]);
        assert_eq!(
            simulate_from_prompt_logprobs(&tokens, &lp, 2).unwrap(),
            vec![2.0, 8.0]
        );
        assert!(simulate_from_prompt_logprobs(&tokens, &lp, 3).is_err());
        lp[3] = top(&[("unknown", 1.0)]);
        assert!(simulate_from_prompt_logprobs(&tokens, &lp, 2).is_err());
    }

    #[test]
    fn the_prompt_lists_every_token_as_unknown() {
        let m = simulation_prompt("rivers", &["The", " Thames", "\n", "<|endoftext|>"]);
        let last = &m.last().unwrap().content;
        assert_eq!(m.last().unwrap().role, autointerp_core::Role::Assistant);
        assert_eq!(last, "Activations:\n<start>\nThe\tunknown\n Thames\tunknown\n↵\tunknown\n<|not_endoftext|>\tunknown\n<end>\n");
        // A token cannot pass for the line the predictions are read after.
        assert_eq!(display_token("a<start>\t<end>"), "a‹start›⇥‹end›");
    }

    #[test]
    fn json_answers() {
        let ok = "```json\n{\"description\": \"x\", \"activations\": [{\"token\": \"a\", \"activation\": 3}, {\"token\": \"b\", \"activation\": \"0\"}, 10]}\n```";
        assert_eq!(parse_json_simulation(ok, 3).unwrap(), vec![3.0, 0.0, 10.0]);
        for bad in [
            "",
            "{}",
            "{\"activations\": [1]}",
            "{\"activations\": [1, 11]}",
            "{\"activations\": [1, null]}",
            "} {",
        ] {
            assert!(parse_json_simulation(bad, 2).is_err(), "{bad:?}");
        }
        let prompt = json_simulation_prompt("rivers", &["a", "b"]);
        let user: serde_json::Value =
            serde_json::from_str(&prompt.last().unwrap().content).unwrap();
        assert_eq!(
            user["activations"][1],
            serde_json::json!({"token": "b", "activation": null})
        );
        // The worked answers parse with our own parser.
        assert_eq!(
            // The first worked example has 15 tokens, the fifth at 9.
            parse_json_simulation(&prompt[2].content, 15).unwrap()[4],
            9.0
        );
    }

    #[test]
    fn scores_groups_like_delphi() {
        let seq = |q: Option<u8>, t: &[f32], p: Option<&[f32]>| SimulatedSequence {
            tokens: vec!["x".into(); t.len()],
            true_activations: t.to_vec(),
            predicted: p.map(<[f32]>::to_vec),
            quantile: q,
            activating: q.is_some(),
        };
        let seqs = vec![
            seq(Some(1), &[0.0, 10.0], Some(&[1.0, 9.0])),
            seq(Some(2), &[0.0, 5.0], Some(&[0.0, 5.0])),
            seq(Some(2), &[0.0, 4.0], None),
            seq(None, &[0.0, 0.0], Some(&[0.0, 1.0])),
        ];
        let scored = score_simulation(&seqs);
        assert_eq!(
            scored.iter().map(|g| g.distance).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(
            scored.iter().map(|g| g.n_failed).collect::<Vec<_>>(),
            vec![1, 0, 1]
        );
        let overall = pearson(
            &[0.0, 10.0, 0.0, 5.0, 0.0, 0.0],
            &[1.0, 9.0, 0.0, 5.0, 0.0, 1.0],
        );
        assert_eq!(scored[0].ev_correlation_score, MaybeNan(overall));
        // A constant truth has no correlation: written as "nan".
        let json = serde_json::to_value(&scored[0].scored_sequence_simulations[2]).unwrap();
        assert_eq!(json["ev_correlation_score"], "nan");
        assert_eq!(json["distance"], -1);
        assert!((scored[2].ev_correlation_score.0.unwrap() - 1.0).abs() < 1e-12);
        // Sequences carry delphi's 0-based quantile (#13), groups its `q + 1`, i.e. ours.
        assert_eq!(
            scored[0]
                .scored_sequence_simulations
                .iter()
                .map(|s| s.distance)
                .collect::<Vec<_>>(),
            vec![0, 1, -1]
        );
        assert_eq!(scored[2].scored_sequence_simulations[0].distance, 1);
        let unquantiled = SimulatedSequence {
            activating: true,
            ..seq(None, &[0.0, 10.0], Some(&[0.0, 10.0]))
        };
        assert_eq!(
            score_simulation(&[unquantiled])[0].scored_sequence_simulations[0].distance,
            -1,
            "0 would read as delphi's strongest quantile"
        );
    }
}
