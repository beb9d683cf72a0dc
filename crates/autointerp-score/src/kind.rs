//! Scorers by name: [`ScorerKind`] names each scorer as delphi names its score folder, and
//! builds it as a boxed [`DynScorer`] from what it needs.

use std::sync::Arc;

use autointerp_client::{Embedder, SharedClient, SharedIntervener, SharedTokenScorer};
use autointerp_explain::prompts::PromptSet;
use serde::{Deserialize, Serialize};

use crate::{
    AnswerMode, ClassifierConfig, DetectionScorer, DynScorer, EmbeddingConfig, EmbeddingScorer,
    Error, FuzzConfig, FuzzMode, FuzzingScorer, GenerationConfig, InterventionScorer,
    IntruderConfig, IntruderScorer, Result, SimulationConfig, SimulationMode, SimulationScorer,
    SurprisalConfig, SurprisalInterventionScorer, SurprisalScorer, WrongCount,
};

/// A scorer, named as delphi names its score folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ScorerKind {
    /// Which plain excerpts activate the latent?
    Detection,
    /// Which highlighted excerpts are highlighted correctly?
    Fuzz,
    /// Which excerpt is the odd one out?
    Intruder,
    /// Each token's predicted activation.
    Simulation,
    /// Does the explanation lower a base model's loss on activating excerpts?
    Surprisal,
    /// Is the explanation's embedding closer to activating excerpts?
    Embedding,
    /// Which continuation was steered along the latent? (a judge, and the subject model run
    /// in this process)
    Intervention,
    /// Is the explanation likelier after text steered along the latent? (a base model, and the
    /// subject model run in this process)
    #[serde(rename = "surprisal-intervention", alias = "surprisal_intervention")]
    #[cfg_attr(feature = "clap", value(name = "surprisal-intervention"))]
    SurprisalIntervention,
}

/// What a scorer asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// A chat model ([`SharedClient`]).
    Chat,
    /// A sentence embedder.
    Embedder,
    /// A base model that scores tokens ([`SharedTokenScorer`]).
    TokenScorer,
    /// The subject model, steered ([`SharedIntervener`]).
    Intervener,
}

/// The options the scorers built by [`ScorerKind::build`] share.
#[derive(Debug, Clone)]
pub struct ScorerOptions {
    /// Excerpts per detection/fuzzing prompt and per intruder trial.
    pub n_examples_shown: usize,
    /// Seed of the shuffles and draws.
    pub seed: u64,
    /// How detection and fuzzing read answers.
    pub answer: AnswerMode,
    /// Top logprobs asked of detection and fuzzing answers (for their AUC).
    pub logprobs: Option<u8>,
    /// How simulation gets its predictions.
    pub simulation_mode: SimulationMode,
    /// Longest answer, in tokens, of a detection or fuzzing prompt in the `list` answer mode
    /// (`logprob` asks for one token).
    pub classifier_max_tokens: u32,
    /// Longest answer, in tokens, of an intruder trial.
    pub intruder_max_tokens: u32,
    /// Longest answer, in tokens, of a simulation in the `json` mode (`prompt_logprobs`
    /// generates one token): a model that never stops costs this much per sequence.
    pub simulation_max_tokens: u32,
    /// How many tokens a wrongly highlighted fuzzing excerpt highlights.
    pub fuzz_wrong_count: WrongCount,
    /// Where fuzzing's wrongly highlighted excerpts come from (delphi's `fuzz_type`).
    pub fuzz_mode: FuzzMode,
}

impl Default for ScorerOptions {
    fn default() -> Self {
        let classifier = ClassifierConfig::default();
        Self {
            n_examples_shown: classifier.n_examples_shown,
            seed: classifier.seed,
            answer: classifier.answer,
            logprobs: None,
            simulation_mode: SimulationMode::default(),
            classifier_max_tokens: 200,
            intruder_max_tokens: 500,
            simulation_max_tokens: 4000,
            fuzz_wrong_count: WrongCount::default(),
            fuzz_mode: FuzzMode::default(),
        }
    }
}

/// What the scorers ask, built by the caller (a server, a model in this process, a script).
#[derive(Debug, Clone, Default)]
pub struct ScorerDeps {
    /// The chat model of detection, fuzzing, intruder and simulation.
    pub chat: Option<SharedClient>,
    /// The embedder of the embedding scorer.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// The base model of the surprisal scorers.
    pub token_scorer: Option<SharedTokenScorer>,
    /// The steered subject model of the intervention scorers.
    pub intervener: Option<SharedIntervener>,
    /// The prompt templates of every scorer that sends prompts (e.g. a run's `--prompt-dir`,
    /// loaded with [`PromptSet::from_dir`]); the built-in ones when `None`.
    pub prompts: Option<Arc<PromptSet>>,
}

impl ScorerKind {
    /// Every scorer, in the order of this enum.
    pub const ALL: [Self; 8] = [
        Self::Detection,
        Self::Fuzz,
        Self::Intruder,
        Self::Simulation,
        Self::Surprisal,
        Self::Embedding,
        Self::Intervention,
        Self::SurprisalIntervention,
    ];

    /// The scorer's folder name (`detection`, `fuzz`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Detection => crate::DETECTION,
            Self::Fuzz => crate::FUZZ,
            Self::Intruder => crate::INTRUDER,
            Self::Simulation => crate::SIMULATION,
            Self::Surprisal => crate::SURPRISAL,
            Self::Embedding => crate::EMBEDDING,
            Self::Intervention => crate::INTERVENTION,
            Self::SurprisalIntervention => crate::SURPRISAL_INTERVENTION,
        }
    }

    /// What the scorer asks.
    pub fn needs(self) -> &'static [Needs] {
        match self {
            Self::Detection | Self::Fuzz | Self::Intruder | Self::Simulation => &[Needs::Chat],
            Self::Embedding => &[Needs::Embedder],
            Self::Surprisal => &[Needs::TokenScorer],
            Self::Intervention => &[Needs::Chat, Needs::Intervener],
            Self::SurprisalIntervention => &[Needs::TokenScorer, Needs::Intervener],
        }
    }

    /// Whether the scorer asks for `what`.
    pub fn asks(self, what: Needs) -> bool {
        self.needs().contains(&what)
    }

    /// Whether the scorer asks the chat model.
    pub fn uses_chat(self) -> bool {
        self.asks(Needs::Chat)
    }

    /// The scorer, asking what `deps` holds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming what the scorer needs when `deps` lacks it.
    pub fn build(self, options: &ScorerOptions, deps: &ScorerDeps) -> Result<Box<dyn DynScorer>> {
        let missing =
            |what: &str| Error::InvalidConfig(format!("the {} scorer needs {what}", self.name()));
        let chat = || deps.chat.clone().ok_or_else(|| missing("a chat client"));
        let intervener = || {
            deps.intervener
                .clone()
                .ok_or_else(|| missing("the subject model in this process, to steer"))
        };
        let token_scorer = || {
            deps.token_scorer
                .clone()
                .ok_or_else(|| missing("a token scorer (a base model)"))
        };
        let prompts = deps.prompts.clone().unwrap_or_else(PromptSet::embedded);
        let classifier = ClassifierConfig {
            n_examples_shown: options.n_examples_shown,
            seed: options.seed,
            answer: options.answer,
            ..ClassifierConfig::default()
        };
        let answer = |max_tokens: u32| GenerationConfig::default().with_max_tokens(max_tokens);
        Ok(match self {
            Self::Detection => Box::new(
                DetectionScorer::new(chat()?, classifier)
                    .with_logprobs(options.logprobs)
                    .with_generation(answer(options.classifier_max_tokens))
                    .with_prompts(prompts),
            ),
            Self::Fuzz => Box::new(
                FuzzingScorer::new(
                    chat()?,
                    FuzzConfig {
                        classifier,
                        wrong_count: options.fuzz_wrong_count,
                        mode: options.fuzz_mode,
                    },
                )
                .with_logprobs(options.logprobs)
                .with_generation(answer(options.classifier_max_tokens))
                .with_prompts(prompts),
            ),
            Self::Intruder => Box::new(
                IntruderScorer::new(
                    chat()?,
                    IntruderConfig {
                        n_examples_shown: options.n_examples_shown,
                        seed: options.seed,
                        ..IntruderConfig::default()
                    },
                )
                .with_generation(answer(options.intruder_max_tokens))
                .with_prompts(prompts),
            ),
            Self::Simulation => Box::new(
                SimulationScorer::new(
                    chat()?,
                    SimulationConfig {
                        mode: options.simulation_mode,
                        ..SimulationConfig::default()
                    },
                )
                .with_generation(answer(options.simulation_max_tokens))
                .with_prompts(prompts),
            ),
            Self::Embedding => Box::new(EmbeddingScorer::new(
                deps.embedder
                    .clone()
                    .ok_or_else(|| missing("an embedder"))?,
                EmbeddingConfig::default(),
            )),
            Self::Surprisal => Box::new(
                SurprisalScorer::new(token_scorer()?, SurprisalConfig::default())
                    .with_prompts(prompts),
            ),
            Self::Intervention => {
                // In the logprob mode the digit is read off the first token's alternatives.
                let logprob = options.answer == AnswerMode::Logprob;
                Box::new(
                    InterventionScorer::new(chat()?, intervener()?, options.seed)
                        .with_logprobs(logprob.then_some(options.logprobs.unwrap_or(5).max(5)))
                        .with_generation(answer(if logprob { 1 } else { 8 })),
                )
            }
            Self::SurprisalIntervention => Box::new(SurprisalInterventionScorer::new(
                token_scorer()?,
                intervener()?,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_scorers_and_missing_parts_are_named() {
        for kind in ScorerKind::ALL {
            let err = kind
                .build(&ScorerOptions::default(), &ScorerDeps::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(kind.name()), "{err}");
        }
        assert!(ScorerKind::Fuzz.uses_chat() && !ScorerKind::Surprisal.uses_chat());
    }
}
