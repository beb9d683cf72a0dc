//! The explainer and the scorers a run asks, built from its settings.

use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use autointerp_client::{
    ChatRequest, ChatResponse, Client, Embedder, OpenAiClient, OpenAiEmbedder,
};
use autointerp_core::{Explanation, LatentRecord};
use autointerp_explain::GenerationConfig;
use autointerp_explain::{
    ContrastiveConfig, ContrastiveExplainer, DefaultExplainer, ExplainOutcome, Explainer,
    ExplainerConfig, TokenExplainer,
};
use autointerp_score::{
    ClassifierConfig, DetectionScorer, EmbeddingConfig, EmbeddingScorer, FuzzConfig, FuzzingScorer,
    IntruderConfig, IntruderScorer, ScorerResult, SimulationConfig, SimulationScorer,
};

use super::config::{ExplainerKind, Provider, RunConfig, ScorerKind};

const OPENAI: &str = "https://api.openai.com/v1";
const OPENROUTER: &str = "https://openrouter.ai/api/v1";

/// Who answers the explainer's and the LLM scorers' prompts.
#[derive(Debug, Clone)]
pub enum LlmClient {
    /// An OpenAI-compatible server.
    OpenAi(Box<OpenAiClient>),
    /// The in-process engine.
    Local(autointerp_engine::LocalEngine),
}

impl Client for LlmClient {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        match self {
            Self::OpenAi(c) => c.chat(req).await,
            Self::Local(e) => e.chat(req).await,
        }
    }
}

/// Loads `source` (HF folder, `.gguf` file or Hub id) as an in-process engine on the run's device.
fn local_engine(cfg: &RunConfig, source: &str) -> Result<autointerp_engine::LocalEngine> {
    use autointerp_engine::{EngineConfig, LocalEngine};
    let device = autointerp_model::parse_device(&cfg.device)?;
    let dtype: autointerp_model::DType = cfg.dtype.parse()?;
    let mut config = EngineConfig::default();
    if let Some(n) = cfg.explainer_model_max_len {
        config = config.with_max_context(n);
    }
    let spinner = crate::common::spinner(&format!("loading {source} into the in-process engine"));
    let engine = LocalEngine::load(source, device, dtype, config)
        .with_context(|| format!("loading {source:?} into the in-process engine"))?;
    spinner.finish_and_clear();
    Ok(engine)
}

/// The chat client of the explainer and of the LLM scorers.
pub fn chat_client(cfg: &RunConfig) -> Result<LlmClient> {
    ensure!(
        !cfg.explainer_model.is_empty(),
        "--explainer-model is required: the model that writes explanations and answers the scorers' prompts"
    );
    let (default_base, default_key) = match cfg.explainer_provider {
        Provider::Local => return Ok(LlmClient::Local(local_engine(cfg, &cfg.explainer_model)?)),
        Provider::Openai => (OPENAI, Some("OPENAI_API_KEY")),
        Provider::Openrouter => (OPENROUTER, Some("OPENROUTER_API_KEY")),
    };
    let base = cfg.explainer_base_url.as_deref();
    // A custom server needs no key unless one is named; OpenAI and OpenRouter always do.
    let key = cfg
        .api_key_env
        .as_deref()
        .or(if base.is_some() { None } else { default_key });
    let mut client = OpenAiClient::new(base.unwrap_or(default_base), &cfg.explainer_model)
        .context("--explainer-base-url")?
        .with_max_attempts(cfg.max_attempts);
    if let Some(var) = key {
        client = client.with_api_key_env(var)?;
    }
    if let (Some(p), Some(c)) = (cfg.prompt_price, cfg.completion_price) {
        client = client.with_price(p, c);
    }
    Ok(LlmClient::OpenAi(Box::new(client)))
}

/// The base model of the surprisal scorer: `--surprisal-model`, shared with the explainer when
/// that is the same model in this process.
fn surprisal_engine(
    cfg: &RunConfig,
    client: Option<&LlmClient>,
) -> Result<autointerp_engine::LocalEngine> {
    let Some(source) = &cfg.surprisal_model else {
        bail!(
            "the surprisal scorer needs --surprisal-model: a base language model (HF folder, .gguf file or \
             Hub id) run in this process to score tokens"
        );
    };
    if let Some(LlmClient::Local(engine)) = client {
        if *source == cfg.explainer_model {
            return Ok(engine.clone());
        }
    }
    local_engine(cfg, source)
}

/// The explainer chosen by `--explainer`.
#[derive(Debug)]
pub enum AnyExplainer {
    /// `default`.
    Default(DefaultExplainer<LlmClient>),
    /// `contrastive`.
    Contrastive(ContrastiveExplainer<LlmClient>),
    /// `tokens` (no LLM).
    Tokens(TokenExplainer),
}

impl AnyExplainer {
    /// The explainer of `cfg`, or `None` for `--explainer none` (and for an LLM explainer
    /// without a client).
    pub fn new(cfg: &RunConfig, client: Option<&LlmClient>) -> Option<Self> {
        let generation = GenerationConfig::default().with_max_tokens(cfg.explainer_max_tokens);
        if cfg.explainer == ExplainerKind::Tokens {
            return Some(Self::Tokens(TokenExplainer::default()));
        }
        let client = client?;
        match cfg.explainer {
            ExplainerKind::Default => Some(Self::Default(
                DefaultExplainer::new(client.clone(), ExplainerConfig::default())
                    .with_generation(generation)
                    .with_prefill(cfg.explainer_prefill),
            )),
            ExplainerKind::Contrastive => Some(Self::Contrastive(
                ContrastiveExplainer::new(client.clone(), ContrastiveConfig::default())
                    .with_generation(generation)
                    .with_prefill(cfg.explainer_prefill),
            )),
            ExplainerKind::None | ExplainerKind::Tokens => None,
        }
    }

    /// Explains one latent.
    pub async fn explain(
        &self,
        record: &LatentRecord,
    ) -> autointerp_explain::Result<ExplainOutcome> {
        match self {
            Self::Default(e) => e.explain(record).await,
            Self::Contrastive(e) => e.explain(record).await,
            Self::Tokens(e) => e.explain(record).await,
        }
    }
}

/// One of the scorers chosen by `--scorers`.
#[derive(Debug)]
pub enum AnyScorer {
    /// `detection`.
    Detection(DetectionScorer<LlmClient>),
    /// `fuzz`.
    Fuzz(FuzzingScorer<LlmClient>),
    /// `intruder`.
    Intruder(IntruderScorer<LlmClient>),
    /// `simulation`.
    Simulation(SimulationScorer<LlmClient>),
    /// `embedding`.
    Embedding(EmbeddingScorer<Arc<dyn Embedder>>),
    /// `surprisal`.
    Surprisal(autointerp_score::SurprisalScorer<autointerp_engine::LocalEngine>),
}

impl AnyScorer {
    /// The scorers of `cfg`, in order; `client` is needed when one of them asks the chat model.
    pub fn all(cfg: &RunConfig, client: Option<&LlmClient>) -> Result<Vec<Self>> {
        let classifier = ClassifierConfig {
            n_examples_shown: cfg.num_examples_per_scorer_prompt,
            seed: cfg.seed,
            answer: cfg.classifier_answer,
            ..ClassifierConfig::default()
        };
        let logprobs = cfg.log_probs.then_some(5);
        let mut out = Vec::new();
        for kind in cfg.scorer_kinds() {
            let chat = || {
                client
                    .cloned()
                    .context("internal: a chat scorer without a client")
            };
            out.push(match kind {
                ScorerKind::Detection => Self::Detection(
                    DetectionScorer::new(chat()?, classifier.clone()).with_logprobs(logprobs),
                ),
                ScorerKind::Fuzz => Self::Fuzz(
                    FuzzingScorer::new(
                        chat()?,
                        FuzzConfig {
                            classifier: classifier.clone(),
                            ..FuzzConfig::default()
                        },
                    )
                    .with_logprobs(logprobs),
                ),
                ScorerKind::Intruder => Self::Intruder(IntruderScorer::new(
                    chat()?,
                    IntruderConfig {
                        n_examples_shown: cfg.num_examples_per_scorer_prompt,
                        seed: cfg.seed,
                        ..IntruderConfig::default()
                    },
                )),
                ScorerKind::Simulation => Self::Simulation(SimulationScorer::new(
                    chat()?,
                    SimulationConfig {
                        mode: cfg.simulation_mode,
                        ..SimulationConfig::default()
                    },
                )),
                ScorerKind::Embedding => Self::Embedding(EmbeddingScorer::new(
                    embedder(cfg)?,
                    EmbeddingConfig::default(),
                )),
                ScorerKind::Surprisal => Self::Surprisal(autointerp_score::SurprisalScorer::new(
                    surprisal_engine(cfg, client)?,
                    autointerp_score::SurprisalConfig::default(),
                )),
            });
        }
        Ok(out)
    }

    /// The scorer's folder name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Detection(_) => autointerp_score::DETECTION,
            Self::Fuzz(_) => autointerp_score::FUZZ,
            Self::Intruder(_) => autointerp_score::INTRUDER,
            Self::Simulation(_) => autointerp_score::SIMULATION,
            Self::Embedding(_) => autointerp_score::EMBEDDING,
            Self::Surprisal(_) => autointerp_score::SURPRISAL,
        }
    }

    /// Whether the score depends on the explanation (intruder's does not, so the random control
    /// skips it).
    pub fn reads_explanation(&self) -> bool {
        !matches!(self, Self::Intruder(_))
    }

    /// Scores one explanation of one latent.
    pub async fn score(
        &self,
        record: &LatentRecord,
        explanation: &Explanation,
    ) -> autointerp_score::Result<ScorerResult> {
        match self {
            Self::Detection(s) => s.score(record, explanation).await,
            Self::Fuzz(s) => s.score(record, explanation).await,
            // Intruder trials show examples only: the explanation plays no part.
            Self::Intruder(s) => s.score(record).await,
            Self::Simulation(s) => s.score(record, explanation).await,
            Self::Embedding(s) => s.score(record, explanation).await,
            Self::Surprisal(s) => s.score(record, explanation).await,
        }
    }
}

/// `local:PATH`, or a folder that exists with no server URL given: the model runs here.
fn local_embedding_model<'a>(cfg: &RunConfig, model: &'a str) -> Option<&'a str> {
    model.strip_prefix("local:").or_else(|| {
        (cfg.embedding_base_url.is_none() && std::path::Path::new(model).is_dir()).then_some(model)
    })
}

/// The embedding scorer's sentence embedder: a server's `/embeddings` endpoint, or a model run
/// in this process.
fn embedder(cfg: &RunConfig) -> Result<Arc<dyn Embedder>> {
    let Some(model) = &cfg.embedding_model else {
        bail!(
            "the embedding scorer needs --embedding-model: `local:PATH` for a sentence-transformers \
             folder run in this process (e.g. all-MiniLM-L6-v2), or a model served by an \
             OpenAI-compatible /embeddings endpoint (its URL in --embedding-base-url, api.openai.com without it)"
        );
    };
    if let Some(path) = local_embedding_model(cfg, model) {
        let device = autointerp_model::parse_device(&cfg.device)?;
        let local = autointerp_engine::LocalEmbedder::load(path, device)
            .with_context(|| format!("loading the embedding model {path}"))?;
        return Ok(Arc::new(local));
    }
    let base = cfg.embedding_base_url.as_deref();
    let key = cfg.embedding_api_key_env.as_deref().or(if base.is_some() {
        None
    } else {
        Some("OPENAI_API_KEY")
    });
    let mut embedder =
        OpenAiEmbedder::new(base.unwrap_or(OPENAI), model).context("--embedding-base-url")?;
    if let Some(var) = key {
        embedder = embedder.with_api_key_env(var)?;
    }
    Ok(Arc::new(embedder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_options_are_named() {
        let mut cfg = RunConfig {
            explainer_base_url: Some("http://127.0.0.1:9/v1".into()),
            ..RunConfig::default()
        };
        assert!(chat_client(&cfg)
            .unwrap_err()
            .to_string()
            .contains("--explainer-model"));
        cfg.explainer_model = "m".into();
        let client = chat_client(&cfg).unwrap();
        cfg.scorers = vec![ScorerKind::Embedding];
        let err = AnyScorer::all(&cfg, Some(&client)).unwrap_err().to_string();
        assert!(err.contains("--embedding-model"), "{err}");
        cfg.scorers = vec![ScorerKind::Surprisal];
        let err = AnyScorer::all(&cfg, Some(&client)).unwrap_err().to_string();
        assert!(err.contains("--surprisal-model"), "{err}");
    }
}
