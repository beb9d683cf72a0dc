//! Scorers for latent explanations, as defined in "Automatically Interpreting Millions of
//! Features in LLMs" (Paulo et al., 2024) and implemented in EleutherAI's delphi.
//!
//! Each scorer holds what it asks — a chat [`Client`](autointerp_client::Client), an
//! [`Embedder`] or a [`TokenScorer`] — and implements [`Scorer`]: it scores one
//! [`Explanation`](autointerp_core::Explanation) on one latent's held-out examples, returning a
//! [`ScorerResult`] with the headline [`Score`](autointerp_core::Score), per-example outcomes in
//! delphi's layout ([`ScoreDetails`]), the failed count with the reasons, and the tokens spent.
//! Answers that cannot be parsed are counted as failed and excluded, never a panic. A result
//! with failed items is completed later by [`Scorer::retry_failed`], which asks again only for
//! those (detection and fuzzing: the batches holding them, with the same seeded batches;
//! intruder: the trials; simulation: the sequences) and keeps every other answer verbatim; the
//! earlier result comes back from its score file through [`read_score_file`].
//!
//! | scorer | asks | score |
//! |---|---|---|
//! | [`DetectionScorer`]: which plain excerpts activate the latent? | LLM | balanced accuracy (+ AUC from logprobs) |
//! | [`FuzzingScorer`]: which excerpts are highlighted correctly? | LLM | balanced accuracy (+ AUC from logprobs) |
//! | [`IntruderScorer`]: which excerpt is the odd one out? | LLM | accuracy |
//! | [`SimulationScorer`]: each token's 0–10 activation | LLM (prompt logprobs or JSON) | correlation |
//! | [`EmbeddingScorer`]: is the explanation closer to activating excerpts? | embedder | ROC AUC |
//! | [`SurprisalScorer`]: does the explanation lower the loss of activating excerpts? | base LM | ROC AUC |
//! | [`InterventionScorer`]: which continuation was steered along the latent? | intervener + LLM | accuracy (chance 0.5) |
//! | [`SurprisalInterventionScorer`]: is the explanation likelier after steered text? | intervener + base LM | Δ log p per nat of KL |
//!
//! ```
//! use autointerp_client::{ChatRequest, ChatResponse, Client};
//! use autointerp_core::{Example, Explanation, HookPoint, LatentId, LatentRecord, LatentStats};
//! use autointerp_score::{ClassifierConfig, DetectionScorer, ScoreDetails, Scorer};
//!
//! /// A stand-in for an LLM: answers 1 for each excerpt that names a river.
//! struct RiverSpotter;
//!
//! impl Client for RiverSpotter {
//!     async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
//!         let prompt = &req.messages.last().map(|m| m.content.clone()).unwrap_or_default();
//!         let labels: Vec<&str> = prompt
//!             .lines()
//!             .filter(|l| l.starts_with("Excerpt "))
//!             .map(|l| if l.contains("Thames") || l.contains("Rhine") { "1" } else { "0" })
//!             .collect();
//!         Ok(ChatResponse { text: format!("[{}]", labels.join(",")), ..ChatResponse::default() })
//!     }
//! }
//!
//! let ex = |text: &str, act: f32| Example {
//!     tokens: vec![0],
//!     str_tokens: vec![text.to_string()],
//!     activations: vec![act],
//!     normalized: vec![if act > 0.0 { 10 } else { 0 }],
//!     quantile: (act > 0.0).then_some(1),
//!     distance: None,
//! };
//! let record = LatentRecord {
//!     id: LatentId::new(HookPoint::Residual(6), 12),
//!     train: vec![],
//!     test: vec![ex("the Thames", 3.0), ex("the Rhine", 2.0)],
//!     non_activating: vec![ex("the bank", 0.0), ex("a loan", 0.0)],
//!     stats: LatentStats::default(),
//!     logits: None,
//! };
//! let explanation = Explanation { latent: record.id, text: "Names of rivers.".into() };
//!
//! let scorer = DetectionScorer::new(RiverSpotter, ClassifierConfig::default());
//! let result = futures::executor::block_on(scorer.score(&record, &explanation))?;
//! assert_eq!(result.score.scorer, "detection");
//! assert_eq!(result.score.value, 1.0); // balanced accuracy
//! assert_eq!(result.n_failed(), 0);
//! let ScoreDetails::Classifier { summary, .. } = &result.details else { unreachable!() };
//! assert_eq!(summary.auc, None); // this client returns no logprobs
//! # Ok::<(), autointerp_score::Error>(())
//! ```
//!
//! # Prompts, parsers and metrics
//!
//! The parts the scorers are built from are pure and usable alone: prompts are
//! [`Message`](autointerp_core::Message) lists for any chat client, answers are strings.
//!
//! - **Detection**: shuffled batches of activating and non-activating excerpts; the scorer
//!   answers, from the explanation, which ones activate the latent ([`detection_batches`],
//!   [`detection_prompt`]).
//! - **Fuzzing**: highlighted excerpts, some highlighted correctly and some on wrong tokens; the
//!   scorer answers which are correct ([`fuzz_batches`], [`fuzz_prompt`]).
//! - **Intruder**: excerpts of one quantile plus one intruder; the scorer names the intruder
//!   ([`intruder_trials`], [`intruder_prompt`], [`parse_intruder`]).
//! - **Simulation**: the scorer predicts each token's 0–10 activation ([`simulation_prompt`],
//!   [`json_simulation_prompt`], [`score_simulation`]).
//! - **Surprisal**: the prompt an example is scored after ([`surprisal_prefix`]).
//!
//! An answer that cannot be parsed is recorded as failed (prediction `None`), excluded from
//! every metric and counted.
//!
//! ```
//! use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats};
//! use autointerp_score::{detection_batches, detection_prompt, ClassifierConfig, ClassifierSummary};
//!
//! let ex = |text: &str, act: f32| Example {
//!     tokens: vec![0],
//!     str_tokens: vec![text.to_string()],
//!     activations: vec![act],
//!     normalized: vec![if act > 0.0 { 10 } else { 0 }],
//!     quantile: (act > 0.0).then_some(1),
//!     distance: None,
//! };
//! let record = LatentRecord {
//!     id: LatentId::new(HookPoint::Residual(6), 12),
//!     train: vec![],
//!     test: vec![ex("the Thames", 3.0), ex("the Rhine", 2.0)],
//!     non_activating: vec![ex("the bank", 0.0), ex("a loan", 0.0)],
//!     stats: LatentStats::default(),
//!     logits: None,
//! };
//! let cfg = ClassifierConfig { n_examples_shown: 4, ..ClassifierConfig::default() };
//! let batches = detection_batches(&record, &cfg)?;
//! let messages = detection_prompt("Names of rivers.", &batches[0]);
//! assert!(messages.last().unwrap().content.contains("Excerpt 4:"));
//!
//! // A perfect answer: 1 exactly where the excerpt activates.
//! let answer: Vec<&str> = batches[0].items.iter().map(|o| if o.activating { "1" } else { "0" }).collect();
//! let result = batches[0].clone().resolve(&format!("[{}]", answer.join(",")), None);
//! let summary = ClassifierSummary::from_outcomes(&result.outcomes);
//! assert_eq!(summary.metrics.balanced_accuracy, 1.0);
//! assert_eq!(summary.confusion.failed, 0);
//! # Ok::<(), autointerp_score::Error>(())
//! ```
//!
//! Examples: `cargo run -p autointerp-score --example score_metrics` and `--example explain_score`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod classifier;
mod detection;
mod embedding;
mod error;
pub mod files;
mod fuzz;
mod intervention;
mod intruder;
mod kind;
pub mod metrics;
mod outcome;
mod scorer;
mod simulation;
mod surprisal;

pub use autointerp_client::{
    Embedder, Intervener, Intervention, SharedIntervener, SteeredPair, TokenLogprobs, TokenScorer,
    Usage,
};
pub use autointerp_explain::GenerationConfig;
pub use classifier::{
    first_token_probability, label_probabilities, parse_labels, parse_labels_with, AnswerMode,
    Batch, BatchResult, ClassifierConfig, ClassifierScorer, ClassifierTask,
};
pub use detection::{
    detection_batches, detection_prompt, detection_prompt_one, detection_prompt_one_with,
    detection_prompt_with, Detection, DetectionScorer, DETECTION,
};
pub use embedding::{
    cosine_similarity, EmbeddingConfig, EmbeddingOutcome, EmbeddingScorer, DELPHI_QUERY_PREFIX,
    EMBEDDING,
};
pub use error::{Error, Result};
pub use files::{read_classifier_file, read_score_file, score_file_path, write_score_file};
pub use fuzz::{
    fuzz_batches, fuzz_prompt, fuzz_prompt_one, fuzz_prompt_one_with, fuzz_prompt_with, FuzzConfig,
    FuzzMode, Fuzzing, FuzzingScorer, WrongCount, FUZZ,
};
pub use intervention::{
    intervention_prompt, surprisal_intervention_prefix, surprisal_intervention_value,
    InterventionScorer, InterventionSummary, InterventionTrial, SurprisalInterventionOutcome,
    SurprisalInterventionScorer, INTERVENTION, SURPRISAL_INTERVENTION,
};
pub use intruder::{
    intruder_prompt, intruder_prompt_with, intruder_trials, parse_intruder, parse_intruder_with,
    IntruderConfig, IntruderOutcome, IntruderScorer, IntruderTrial, INTRUDER, INTRUDER_MARKER,
};
pub use kind::{Needs, ScorerDeps, ScorerKind, ScorerOptions};
pub use metrics::{
    Bootstrap, ClassificationMetrics, ClassifierSummary, ConfidenceInterval, Confusion,
};
pub use outcome::ExampleOutcome;
pub use scorer::{DynScorer, ScoreDetails, ScoreFuture, Scorer, ScorerResult};
pub use simulation::{
    display_token, display_token_with, expected_activation, json_simulation_prompt,
    json_simulation_prompt_with, parse_json_simulation, score_simulation,
    simulate_from_prompt_logprobs, simulate_from_prompt_logprobs_with, simulate_from_response,
    simulate_from_response_with, simulation_prompt, simulation_prompt_with, simulation_targets,
    MaybeNan, ScoredSequenceSimulation, ScoredSimulation, SequenceSimulation, SimulatedSequence,
    SimulationConfig, SimulationMode, SimulationScorer, SIMULATION,
};
pub use surprisal::{
    surprisal_prefix, surprisal_prefix_with, SurprisalConfig, SurprisalOutcome, SurprisalScorer,
    BASELINE_MEMO_BYTES, SURPRISAL,
};
