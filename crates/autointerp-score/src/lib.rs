//! Scorers for latent explanations, as defined in "Automatically Interpreting Millions of
//! Features in LLMs" (Paulo et al., 2024) and implemented in EleutherAI's delphi: prompt
//! builders, answer parsers, per-example outcomes, metrics, and score files in delphi's layout.
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
//!
//! Everything here is pure: prompts are [`Message`](autointerp_core::Message) lists for any
//! chat client, answers are strings. An answer that cannot be parsed is recorded as failed
//! (prediction `None`), excluded from every metric and counted.
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
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod classifier;
mod detection;
mod error;
pub mod files;
mod fuzz;
mod intruder;
pub mod metrics;
mod outcome;
mod simulation;

pub use classifier::{
    label_probabilities, parse_labels, Batch, BatchResult, ClassifierConfig, TokenLogprobs,
};
pub use detection::{detection_batches, detection_prompt, DETECTION};
pub use error::{Error, Result};
pub use files::{read_classifier_file, score_file_path, write_score_file};
pub use fuzz::{fuzz_batches, fuzz_prompt, FuzzConfig, FuzzMode, FUZZ};
pub use intruder::{
    intruder_prompt, intruder_trials, parse_intruder, IntruderConfig, IntruderOutcome,
    IntruderTrial, INTRUDER, INTRUDER_MARKER,
};
pub use metrics::{
    Bootstrap, ClassificationMetrics, ClassifierSummary, ConfidenceInterval, Confusion,
};
pub use outcome::ExampleOutcome;
pub use simulation::{
    display_token, expected_activation, json_simulation_prompt, parse_json_simulation,
    score_simulation, simulate_from_prompt_logprobs, simulation_prompt, simulation_targets,
    MaybeNan, ScoredSequenceSimulation, ScoredSimulation, SequenceSimulation, SimulatedSequence,
    SIMULATION,
};
