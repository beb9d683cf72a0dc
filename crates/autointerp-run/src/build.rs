//! The client, explainer and scorers a run asks, built from its settings as boxed values: a
//! caller may replace the client ([`crate::Run::with_client`]) or add scorers of its own
//! ([`crate::Run::with_scorer`]) without any of this.

use std::sync::Arc;

use autointerp_client::{
    ChatRequest, Client, Embedder, Error as ClientError, HttpSettings, OpenAiClient,
    OpenAiEmbedder, SharedClient, SharedIntervener, DEFAULT_EMBEDDING_REQUESTS_IN_FLIGHT,
};
use autointerp_core::HookPoint;
use autointerp_core::Message;
use autointerp_engine::{
    EngineConfig, InterventionConfig, LocalEmbedder, LocalEngine, LocalIntervener,
};
use autointerp_explain::{DynExplainer, GenerationConfig};
use autointerp_score::{DynScorer, Needs, ScorerDeps, ScorerOptions};

use crate::config::{NonActivatingSource, Provider, RunConfig, ScorerKind};
use crate::error::{bail, ensure, Context};
use crate::{Event, Progress, Result};

const OPENAI: &str = "https://api.openai.com/v1";
const OPENROUTER: &str = "https://openrouter.ai/api/v1";

/// The chat client of a run, and the in-process engine behind it when there is one (the
/// surprisal scorer reuses it rather than loading the same model twice).
#[derive(Debug, Clone)]
pub(crate) struct Chat {
    pub client: SharedClient,
    pub local: Option<LocalEngine>,
}

/// Loads `source` (HF folder, `.gguf` file or Hub id) as an in-process engine on the run's device.
fn local_engine(cfg: &RunConfig, source: &str, progress: &dyn Progress) -> Result<LocalEngine> {
    let device = autointerp_model::parse_device(&cfg.device)?;
    let dtype: autointerp_model::DType = cfg.dtype.parse()?;
    let mut config = EngineConfig::default();
    if let Some(n) = cfg.explainer_model_max_len {
        config = config.with_max_context(n);
    }
    if let Some(n) = cfg.engine_max_batch_tokens {
        config = config.with_max_batch_tokens(n);
    }
    match cfg.engine_prefix_cache_bytes {
        Some(0) => config = config.with_prefix_cache(false),
        Some(bytes) => config = config.with_prefix_cache_bytes(bytes),
        None => {}
    }
    progress.event(Event::Loading(&format!(
        "loading {source} into the in-process engine"
    )));
    LocalEngine::load(source, device, dtype, config)
        .with_context(|| format!("loading {source:?} into the in-process engine"))
}

/// The chat client of the explainer and of the LLM scorers.
pub(crate) fn chat_client(cfg: &RunConfig, progress: &dyn Progress) -> Result<Chat> {
    ensure!(
        !cfg.explainer_model.is_empty(),
        "--explainer-model is required: the model that writes explanations and answers the scorers' prompts"
    );
    let (default_base, default_key) = match cfg.explainer_provider {
        Provider::Local => {
            let engine = local_engine(cfg, &cfg.explainer_model, progress)?;
            return Ok(Chat {
                client: Arc::new(engine.clone()),
                local: Some(engine),
            });
        }
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
        .with_max_attempts(cfg.max_attempts)
        .with_settings(&cfg.http_settings()?)?;
    if let Some(var) = key {
        client = client.with_api_key_env(var)?;
    }
    if let (Some(p), Some(c)) = (cfg.prompt_price, cfg.completion_price) {
        client = client.with_price(p, c);
    }
    Ok(Chat {
        client: Arc::new(client),
        local: None,
    })
}

/// Checks, before the hours-long cache stage, that the explainer's server can be asked at all:
/// the settings make a client (base URL, API key variable present), the server answers one
/// one-token request for the model named, and the server does what the run will ask of it: when
/// the simulation scorer reads prompt logprobs, the answer carries them; with
/// `--explainer-prefill`, the server continues the prefilled answer rather than opening a new
/// turn after it. The in-process engine and runs that ask no chat model are not checked here
/// (they fail when loading, before any latent).
///
/// # Errors
/// [`crate::Error::Config`] naming the server (credentials redacted) and what failed: an
/// unreachable server, an HTTP error (a wrong model name, a refused key), a server without
/// `prompt_logprobs` or without `continue_final_message` (with the flag that avoids them).
pub fn preflight(cfg: &RunConfig) -> Result<()> {
    let kinds = cfg.scorer_kinds();
    let uses_chat = cfg.explainer.uses_chat() || kinds.iter().any(|k| k.uses_chat());
    if !uses_chat || cfg.explainer_provider == Provider::Local {
        return Ok(());
    }
    let chat = chat_client(cfg, &())?;
    let simulation = kinds.contains(&ScorerKind::Simulation)
        && cfg.simulation_mode == autointerp_score::SimulationMode::PromptLogprobs;
    let prefill = cfg.explainer_prefill && cfg.explainer.uses_chat();
    let server = autointerp_client::redact_url(cfg.explainer_base_url.as_deref().unwrap_or(
        match cfg.explainer_provider {
            Provider::Openrouter => OPENROUTER,
            _ => OPENAI,
        },
    ));
    let probe = Probe {
        client: &chat.client,
        server: &server,
        model: &cfg.explainer_model,
    };
    // A runtime of its own, on a thread of its own: callers may be inside another runtime.
    let checked = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    crate::Error::Config(format!("checking the explainer server {server}: {e}"))
                })?;
            rt.block_on(async {
                if !probe.answers(simulation).await? {
                    return Ok(());
                }
                if prefill {
                    probe.continues_final_message().await?;
                }
                Ok(())
            })
        })
        .join()
    });
    match checked {
        Ok(result) => result,
        Err(_) => bail!("checking the explainer server {server}: the check panicked"),
    }
}

/// The requests of [`preflight`].
struct Probe<'a> {
    client: &'a SharedClient,
    server: &'a str,
    model: &'a str,
}

impl Probe<'_> {
    /// One tiny request; `Ok(false)` when the server is there but the answer tells nothing (busy,
    /// flaky: the run's own retries and failure log handle that).
    async fn answers(&self, prompt_logprobs: bool) -> Result<bool> {
        let server = self.server;
        let mut req = ChatRequest::new(vec![Message::user("Reply with OK.")])
            .with_max_tokens(1)
            .with_temperature(0.0);
        if prompt_logprobs {
            req = req.with_prompt_logprobs(1);
        }
        match self.client.chat(req).await {
            Ok(r) => {
                let has_prompt_logprobs = r.prompt_logprobs.as_ref().is_some_and(|p| !p.is_empty());
                ensure!(
                    !prompt_logprobs || has_prompt_logprobs,
                    "the explainer server {server} ignores `prompt_logprobs` (it answered without them), \
                     which the simulation scorer's default mode reads; add --simulation-mode json, or \
                     serve the model with vLLM"
                );
                Ok(true)
            }
            // Only what no retry can mend stops the run.
            Err(
                e @ (ClientError::Connection { .. }
                | ClientError::Config(_)
                | ClientError::Http { .. }),
            ) => {
                bail!(
                    "the explainer server {server} cannot be asked for model {:?}: {e} (checked before caching)",
                    self.model
                )
            }
            Err(ClientError::RetriesExhausted { last, .. })
                if matches!(
                    *last,
                    ClientError::Connection { .. } | ClientError::Timeout { .. }
                ) =>
            {
                bail!("the explainer server {server} does not answer: {last} (checked before caching)")
            }
            Err(e) => {
                tracing::warn!(%server, error = %e, "the explainer server's check request failed; going on");
                Ok(false)
            }
        }
    }

    /// `--explainer-prefill` asks the server to continue an answer that starts with the marker
    /// (`continue_final_message`). A server that ignores the flag closes that answer and opens
    /// a new turn, and the explanations then come from a different prompt. Such a server renders
    /// the continued request and the fresh-turn request alike, so the two report the same prompt
    /// length; one that honours it counts the fresh turn's end-of-turn and header tokens too.
    async fn continues_final_message(&self) -> Result<()> {
        let server = self.server;
        let messages = vec![Message::user("Reply with OK."), Message::assistant("O")];
        let request = |continued: bool| {
            ChatRequest::new(messages.clone())
                .with_max_tokens(1)
                .with_temperature(0.0)
                .with_extra("continue_final_message", continued)
                .with_extra("add_generation_prompt", !continued)
        };
        let (Ok(continued), Ok(fresh)) = (
            self.client.chat(request(true)).await,
            self.client.chat(request(false)).await,
        ) else {
            tracing::warn!(%server, "could not check that the explainer server continues prefilled answers; going on");
            return Ok(());
        };
        let (a, b) = (continued.usage.prompt_tokens, fresh.usage.prompt_tokens);
        if a == 0 || b == 0 {
            tracing::warn!(%server, "the explainer server reports no prompt token counts: cannot check that it continues prefilled answers (--explainer-prefill)");
            return Ok(());
        }
        ensure!(
            a < b,
            "the explainer server {server} ignores `continue_final_message` (a prefilled answer and \
             a new turn after it are both {a} prompt tokens), so --explainer-prefill would explain \
             from a different prompt than intended; drop --explainer-prefill, or serve the model \
             with vLLM or SGLang"
        );
        Ok(())
    }
}

/// The explainer of `cfg`, or `None` for `--explainer none` (and for an LLM explainer without a
/// client).
pub(crate) fn explainer(
    cfg: &RunConfig,
    chat: Option<&SharedClient>,
    intervener: Option<&Arc<LocalIntervener>>,
) -> Result<Option<Box<dyn DynExplainer>>> {
    let mut generation = GenerationConfig::default().with_max_tokens(cfg.explainer_max_tokens);
    if let Some(t) = cfg.explainer_temperature {
        generation = generation.with_temperature(t);
    }
    explainer_with(cfg, chat, intervener, generation)
}

/// The `--explainer-samples` explainers of best-of-K: the run's explainer at
/// `--explainer-temperature` (0.7 by default), each with its own seed.
pub(crate) fn sample_explainers(
    cfg: &RunConfig,
    chat: Option<&SharedClient>,
    intervener: Option<&Arc<LocalIntervener>>,
) -> Result<Vec<Box<dyn DynExplainer>>> {
    let t = cfg.explainer_temperature.unwrap_or(0.7);
    ensure!(
        t.total_cmp(&0.0).is_gt(),
        "--explainer-samples {} with --explainer-temperature 0 would draw the same explanation \
         {} times; give a temperature above 0",
        cfg.explainer_samples,
        cfg.explainer_samples
    );
    (0..cfg.explainer_samples as u64)
        .map(|i| {
            let generation = GenerationConfig::default()
                .with_max_tokens(cfg.explainer_max_tokens)
                .with_temperature(t)
                .with_seed(cfg.seed.wrapping_add(i));
            explainer_with(cfg, chat, intervener, generation)?.ok_or_else(|| {
                crate::Error::Config(
                    "--explainer-samples needs an LLM explainer (and its client)".into(),
                )
            })
        })
        .collect()
}

fn explainer_with(
    cfg: &RunConfig,
    chat: Option<&SharedClient>,
    intervener: Option<&Arc<LocalIntervener>>,
    generation: GenerationConfig,
) -> Result<Option<Box<dyn DynExplainer>>> {
    Ok(cfg.explainer.build_with_prompts(
        chat.cloned(),
        generation,
        cfg.explainer_prefill,
        cfg.explainer_logits,
        cfg.prompts()?,
        intervener.map(|i| Arc::clone(i) as SharedIntervener),
    ))
}

/// The scorers of `kinds`, in order; `chat` is needed when one of them asks the chat model, and
/// `embedder` (see [`embedder`]) when one embeds. The base model is built here only when a
/// scorer asks for it.
pub(crate) fn scorers(
    cfg: &RunConfig,
    kinds: &[ScorerKind],
    chat: Option<&Chat>,
    embedder: Option<&Arc<dyn Embedder>>,
    intervener: Option<&Arc<LocalIntervener>>,
    progress: &dyn Progress,
) -> Result<Vec<Box<dyn DynScorer>>> {
    let options = ScorerOptions {
        n_examples_shown: cfg.num_examples_per_scorer_prompt,
        seed: cfg.seed,
        answer: cfg.classifier_answer,
        logprobs: cfg.log_probs.then_some(5),
        simulation_mode: cfg.simulation_mode,
        classifier_max_tokens: cfg.classifier_max_tokens,
        intruder_max_tokens: cfg.intruder_max_tokens,
        simulation_max_tokens: cfg.simulation_max_tokens,
        fuzz_wrong_count: cfg.fuzz_wrong_count,
        fuzz_mode: cfg.fuzz_type,
    };
    let mut deps = ScorerDeps {
        chat: chat.map(|c| Arc::clone(&c.client)),
        prompts: Some(cfg.prompts()?),
        ..ScorerDeps::default()
    };
    if kinds.iter().any(|k| k.asks(Needs::Embedder)) {
        deps.embedder = Some(match embedder {
            Some(e) => Arc::clone(e),
            None => self::embedder(cfg, progress)?,
        });
    }
    if kinds.iter().any(|k| k.asks(Needs::TokenScorer)) {
        deps.token_scorer = Some(Arc::new(surprisal_engine(cfg, chat, intervener, progress)?));
    }
    if kinds.iter().any(|k| k.asks(Needs::Intervener)) {
        let Some(i) = intervener else {
            bail!("the intervention scorers need the model in this process to steer");
        };
        deps.intervener = Some(Arc::clone(i) as SharedIntervener);
    }
    kinds
        .iter()
        .map(|k| Ok(k.build(&options, &deps)?))
        .collect()
}

/// The subject model in this process, steered along the latents of `hooks` by the intervention
/// scorers: the explainer's or the surprisal scorer's engine when that is the same model.
pub(crate) fn intervener(
    cfg: &RunConfig,
    chat: Option<&Chat>,
    hooks: &[HookPoint],
    progress: &dyn Progress,
) -> Result<LocalIntervener> {
    ensure!(
        !cfg.model.is_empty(),
        "the intervention scorers steer the model itself: --model (or the results'          run_config.json) must name it (an HF folder, .gguf file or Hub id)"
    );
    ensure!(
        !cfg.sparse_model.is_empty(),
        "the intervention scorers steer along the sparse coders' decoder rows: --sparse-model          (or the results' run_config.json) must name them"
    );
    let engine = match chat.and_then(|c| c.local.as_ref()) {
        Some(e) if cfg.explainer_model == cfg.model => e.clone(),
        _ => local_engine(cfg, &cfg.model, progress)?,
    };
    let device = engine.device();
    let coders =
        autointerp_sae::load_coders(&cfg.sparse_model, hooks, |h| engine.hook_dim(h), device)
            .with_context(|| format!("--sparse-model {:?}", cfg.sparse_model))?;
    let config = InterventionConfig {
        target_kl: cfg.intervention_kl,
        max_new_tokens: cfg.intervention_max_tokens,
        ..InterventionConfig::default()
    };
    let coders = coders
        .into_iter()
        .map(|(h, c)| (h, autointerp_sae::edit::Edit::share(c)));
    LocalIntervener::new(engine, coders, config).context("the intervention scorers")
}

/// The base model of the surprisal scorer: `--surprisal-model`, shared with the explainer when
/// that is the same model in this process.
fn surprisal_engine(
    cfg: &RunConfig,
    chat: Option<&Chat>,
    intervener: Option<&Arc<LocalIntervener>>,
    progress: &dyn Progress,
) -> Result<LocalEngine> {
    let Some(source) = &cfg.surprisal_model else {
        bail!(
            "the surprisal scorer needs --surprisal-model: a base language model (HF folder, .gguf file or \
             Hub id) run in this process to score tokens"
        );
    };
    if let Some(engine) = chat.and_then(|c| c.local.as_ref()) {
        if *source == cfg.explainer_model {
            return Ok(engine.clone());
        }
    }
    if let Some(i) = intervener {
        if *source == cfg.model {
            return Ok(i.engine().clone());
        }
    }
    local_engine(cfg, source, progress)
}

/// `local:PATH`, or a folder that exists with no server URL given: the model runs here.
fn local_embedding_model<'a>(cfg: &RunConfig, model: &'a str) -> Option<&'a str> {
    model.strip_prefix("local:").or_else(|| {
        (cfg.embedding_base_url.is_none() && std::path::Path::new(model).is_dir()).then_some(model)
    })
}

/// Whether the run embeds text: the embedding scorer among `kinds`, or embedding-based
/// non-activating examples.
pub(crate) fn needs_embedder(cfg: &RunConfig, kinds: &[ScorerKind]) -> bool {
    kinds.iter().any(|k| k.asks(Needs::Embedder))
        || cfg.non_activating_source == NonActivatingSource::Embedding
}

/// The sentence embedder of the embedding scorer and of embedding-based non-activating
/// examples: a server's `/embeddings` endpoint, or a model run in this process.
pub(crate) fn embedder(cfg: &RunConfig, progress: &dyn Progress) -> Result<Arc<dyn Embedder>> {
    let Some(model) = &cfg.embedding_model else {
        bail!(
            "the embedding scorer and --non-activating-source embedding (delphi's FAISS) need \
             --embedding-model: `local:PATH` for a sentence-transformers \
             folder run in this process (e.g. all-MiniLM-L6-v2), or a model served by an \
             OpenAI-compatible /embeddings endpoint (its URL in --embedding-base-url, api.openai.com without it)"
        );
    };
    if let Some(path) = local_embedding_model(cfg, model) {
        let device = autointerp_model::parse_device(&cfg.device)?;
        progress.event(Event::Loading(&format!(
            "loading the embedding model {path}"
        )));
        let local = LocalEmbedder::load(path, device)
            .with_context(|| format!("loading the embedding model {path}"))?;
        return Ok(Arc::new(local));
    }
    let base = cfg.embedding_base_url.as_deref();
    let key = cfg.embedding_api_key_env.as_deref().or(if base.is_some() {
        None
    } else {
        Some("OPENAI_API_KEY")
    });
    let chat = cfg.http_settings()?;
    let settings = HttpSettings {
        max_requests_in_flight: chat
            .max_requests_in_flight
            .min(DEFAULT_EMBEDDING_REQUESTS_IN_FLIGHT),
        extra_body: serde_json::Map::new(),
        ..chat
    };
    let mut embedder = OpenAiEmbedder::new(base.unwrap_or(OPENAI), model)
        .context("--embedding-base-url")?
        .with_settings(&settings)?;
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
        assert!(chat_client(&cfg, &())
            .unwrap_err()
            .to_string()
            .contains("--explainer-model"));
        cfg.explainer_model = "m".into();
        let chat = chat_client(&cfg, &()).unwrap();
        let err = scorers(&cfg, &[ScorerKind::Embedding], Some(&chat), None, None, &())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--embedding-model"), "{err}");
        let err = scorers(&cfg, &[ScorerKind::Surprisal], Some(&chat), None, None, &())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--surprisal-model"), "{err}");
    }
}
