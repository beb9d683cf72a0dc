//! Models run in this process: [`LocalEngine`], a model of `autointerp-model` (an HF folder, a
//! GGUF file or a Hub id) answering chat requests and scoring tokens with dynamic batching, on the
//! CPU or a GPU (delphi's vLLM `Offline` client); and [`LocalEmbedder`], a sentence-transformers
//! model (all-MiniLM-L6-v2). They implement the traits of `autointerp-client` and
//! `autointerp-core` ([`Client`], [`TokenScorer`], [`Embedder`](autointerp_core::Embedder)), so an
//! explainer or scorer takes them where it takes a server.
//!
//! This is the crate that links libtorch for them: the client, explainer, scorer, latents and
//! report crates stay pure Rust.
//!
//! ```no_run
//! use autointerp_client::{ChatRequest, Client};
//! use autointerp_core::Message;
//! use autointerp_engine::{EngineConfig, LocalEngine};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let engine = LocalEngine::load(
//!     "SmolLM2-135M-Instruct.Q4_1.gguf",
//!     tch::Device::Cpu,
//!     autointerp_model::DType::F32,
//!     EngineConfig::default(),
//! )?;
//! let req = ChatRequest::new(vec![Message::user("Name a colour.")]).with_max_tokens(8);
//! println!("{}", engine.chat(req).await?.text);
//! # Ok(())
//! # }
//! ```
//!
//! Example: `cargo run --release -p autointerp-engine --example client_local -- MODEL "prompt"`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod detok;
mod embed;
mod prefix;
mod steer;
mod template;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use autointerp_model::{DType, Model, Tokenizer};
pub use autointerp_sae::edit::{Edit, Steering};
use serde::{Deserialize, Serialize};
use tch::Device;
use tokio::sync::{mpsc, oneshot};

use autointerp_client::{ChatRequest, ChatResponse, Client, TokenLogprobs, TokenScorer, Usage};
pub use autointerp_client::{Error, Result};
use detok::{token_pieces, token_text, tokenizer_error};
pub use embed::LocalEmbedder;
pub use steer::{InterventionConfig, LocalIntervener, NEUTRAL_PROMPTS, TOKEN_CHANGE};
pub use template::{ChatTemplate, RenderOptions};
use worker::{Job, Worker, GREEDY_BELOW};

/// End-of-turn tokens of common chat formats: a model stops at any of them that its vocabulary
/// has, besides its EOS token(s), as vLLM stops at the ids in `generation_config.json`.
const END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|end|>",
    "<|eom_id|>",
];

/// The default [`EngineConfig::max_batch_tokens`]. A prefill of `T` padded tokens in rows of
/// `s` holds, for SmolLM2-135M in f32 (30 layers, d_model 576, MLP 1536, 9 heads and 3 kv heads
/// of 64): the keys and values of every layer, 46 KB a token (`30 × 2 × 3 × 64 × 4`); one
/// layer's activations at a time, about 32 KB a token (`(576 × 6 + 1536 × 3) × 4`); and one
/// layer's attention scores, `T × 9 × s × 4` bytes when libtorch takes its plain kernel for a
/// padding mask. At 4096 tokens in rows of up to 2048 that is 0.19 + 0.13 + 0.30 GB beside the
/// 0.54 GB of weights and the prefix cache's [`DEFAULT_PREFIX_CACHE_BYTES`]; the former
/// default, 32768, allowed 1.5 GB of keys and values and 2.4 GB of scores, which is how the demo
/// reached 6.1 GB. Prefill on a CPU gains little beyond a few thousand tokens a batch.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 4096;

/// The default [`EngineConfig::prefix_cache_bytes`]: 256 MiB, about 5400 tokens of
/// SmolLM2-135M in f32, room for the shared prompt heads of several explanations at once.
pub const DEFAULT_PREFIX_CACHE_BYTES: usize = 256 << 20;

/// Options of a [`LocalEngine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Most requests run together in one batch.
    pub max_batch_size: usize,
    /// How long the engine waits, after the first request of a batch, for more to join it.
    /// Requests that arrive while a batch runs join the next one without waiting. Written
    /// `batch_wait_ms` (milliseconds) in config files.
    #[serde(rename = "batch_wait_ms", with = "millis")]
    pub batch_wait: Duration,
    /// Most padded prompt tokens (rows × longest prompt) in one batch; a longer prompt still
    /// runs, alone. With the activations of a prefill and the batch's keys and values growing
    /// with it, this is what bounds the engine's working memory (see the default).
    pub max_batch_tokens: usize,
    /// Keep the keys and values of prompts between batches and reuse them for later prompts
    /// that start the same way (a radix tree of token ids, least recently used evicted first),
    /// and prefill a prefix that rows of one batch share once. Outputs are those without it,
    /// up to float rounding (a different order of sums). Models with sliding-window layers
    /// never use it.
    pub prefix_cache: bool,
    /// Most bytes of keys, values and residual streams the prefix cache keeps (SmolLM2-135M in
    /// f32: 48 KB a token).
    pub prefix_cache_bytes: usize,
    /// Requests that may wait for the engine before senders wait too.
    pub queue_size: usize,
    /// `max_tokens` of requests that set none.
    pub default_max_tokens: u32,
    /// Temperature of requests that set none (vLLM's default, 1, samples).
    pub default_temperature: f32,
    /// The longest sequence (prompt + generated tokens); `None`: the model's
    /// `max_position_embeddings`.
    pub max_context: Option<usize>,
    /// A Jinja chat template to use instead of the model's own.
    pub chat_template: Option<String>,
    /// More end tokens, besides the model's EOS and the end-of-turn tokens it knows.
    pub stop_token_ids: Vec<u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 16,
            batch_wait: Duration::from_millis(5),
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            prefix_cache: true,
            prefix_cache_bytes: DEFAULT_PREFIX_CACHE_BYTES,
            queue_size: 1024,
            default_max_tokens: 512,
            default_temperature: 1.0,
            max_context: None,
            chat_template: None,
            stop_token_ids: Vec::new(),
        }
    }
}

impl EngineConfig {
    /// Sets the most requests per batch.
    #[must_use]
    pub fn with_max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = n;
        self
    }

    /// Sets how long a batch waits for more requests (zero: not at all).
    #[must_use]
    pub fn with_batch_wait(mut self, wait: Duration) -> Self {
        self.batch_wait = wait;
        self
    }

    /// Sets the most padded prompt tokens per batch.
    #[must_use]
    pub fn with_max_batch_tokens(mut self, n: usize) -> Self {
        self.max_batch_tokens = n;
        self
    }

    /// Switches the prefix cache on or off.
    #[must_use]
    pub fn with_prefix_cache(mut self, on: bool) -> Self {
        self.prefix_cache = on;
        self
    }

    /// Sets the most bytes the prefix cache keeps.
    #[must_use]
    pub fn with_prefix_cache_bytes(mut self, bytes: usize) -> Self {
        self.prefix_cache_bytes = bytes;
        self
    }

    /// Sets `max_tokens` for requests that set none.
    #[must_use]
    pub fn with_default_max_tokens(mut self, n: u32) -> Self {
        self.default_max_tokens = n;
        self
    }

    /// Sets the temperature of requests that set none.
    #[must_use]
    pub fn with_default_temperature(mut self, t: f32) -> Self {
        self.default_temperature = t;
        self
    }

    /// Sets the longest sequence.
    #[must_use]
    pub fn with_max_context(mut self, n: usize) -> Self {
        self.max_context = Some(n);
        self
    }

    /// Uses this Jinja chat template instead of the model's.
    #[must_use]
    pub fn with_chat_template(mut self, source: impl Into<String>) -> Self {
        self.chat_template = Some(source.into());
        self
    }

    /// Adds end tokens.
    #[must_use]
    pub fn with_stop_token_ids(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.stop_token_ids.extend(ids);
        self
    }
}

/// A [`Duration`] as a number of milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0)
            .map_err(|_| D::Error::custom(format!("{ms} is not a number of milliseconds ≥ 0")))
    }
}

/// A generation request in token ids: what [`LocalEngine::generate`] runs, and what a
/// [`ChatRequest`] becomes once its template is rendered and tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The prompt's token ids (not empty).
    pub prompt: Vec<u32>,
    /// Most tokens to add; 0 only scores the prompt.
    pub max_tokens: usize,
    /// Sampling temperature; below 1e-5 is greedy.
    pub temperature: f32,
    /// Nucleus mass: sample among the likeliest tokens whose probabilities reach it.
    pub top_p: f32,
    /// Sample among the `k` likeliest tokens only.
    pub top_k: Option<usize>,
    /// The row's own random seed (`None`: a random one). The same seed draws the same tokens
    /// whatever other requests share the batch.
    pub seed: Option<u64>,
    /// Tokens that end generation (they are kept as the last token); `None`: the engine's
    /// (the model's EOS and end-of-turn tokens), `Some(vec![])`: none.
    pub stop_token_ids: Option<Vec<u32>>,
    /// Strings that end generation (needs a tokenizer).
    pub stop: Vec<String>,
    /// Log-probabilities of the generated tokens and of their `k` best alternatives.
    pub logprobs: Option<usize>,
    /// Log-probabilities of the prompt tokens and of their `k` best alternatives.
    pub prompt_logprobs: Option<usize>,
    /// The first prompt position [`GenerateRequest::prompt_logprobs`] covers (at least 1: the
    /// first token has nothing before it); earlier positions are `None`.
    pub prompt_logprobs_start: usize,
    /// Edits applied at every position, prompt and generated (steering, ablation). Rows of a
    /// batch share one steering (requests of another wait for the next batch), and steered
    /// prompts neither use nor fill the prefix cache, whose keys and values are unsteered.
    pub steering: Option<Steering>,
}

impl GenerateRequest {
    /// Greedy generation of at most `max_tokens` tokens after `prompt`, stopping at the
    /// engine's end tokens.
    pub fn new(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt,
            max_tokens,
            temperature: 0.0,
            top_p: 1.0,
            top_k: None,
            seed: None,
            stop_token_ids: None,
            stop: Vec::new(),
            logprobs: None,
            prompt_logprobs: None,
            prompt_logprobs_start: 1,
            steering: None,
        }
    }

    /// Applies `steering`'s edits at every position.
    #[must_use]
    pub fn with_steering(mut self, steering: Steering) -> Self {
        self.steering = Some(steering);
        self
    }

    /// Samples at `temperature` from the nucleus of mass `top_p`.
    #[must_use]
    pub fn with_sampling(mut self, temperature: f32, top_p: f32) -> Self {
        self.temperature = temperature;
        self.top_p = top_p;
        self
    }

    /// Sets the row's seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Stops at these tokens instead of the engine's (none: `[]`).
    #[must_use]
    pub fn with_stop_token_ids(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.stop_token_ids = Some(ids.into_iter().collect());
        self
    }

    /// Asks for generated-token logprobs with `k` alternatives.
    #[must_use]
    pub fn with_logprobs(mut self, k: usize) -> Self {
        self.logprobs = Some(k);
        self
    }

    /// Asks for prompt logprobs with `k` alternatives.
    #[must_use]
    pub fn with_prompt_logprobs(mut self, k: usize) -> Self {
        self.prompt_logprobs = Some(k);
        self
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end token or a stop string.
    Stop,
    /// `max_tokens` (or the context) was reached.
    Length,
}

impl FinishReason {
    /// `"stop"` or `"length"`, as OpenAI-compatible servers say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// The log-probability of one token and of the likeliest tokens at its position, by id.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub id: u32,
    /// Its natural-log probability under the model (temperature 1).
    pub logprob: f32,
    /// The `k` likeliest tokens at this position, best first.
    pub top: Vec<(u32, f32)>,
}

/// What [`LocalEngine::generate`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated tokens, an end token included.
    pub tokens: Vec<u32>,
    /// One entry per generated token, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// One entry per prompt token (`None` before [`GenerateRequest::prompt_logprobs_start`]),
    /// when asked for.
    pub prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
}

/// Counters of what an engine has run since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Batches run.
    pub batches: u64,
    /// Requests answered (failed ones included).
    pub requests: u64,
    /// The most requests one batch held.
    pub largest_batch: usize,
    /// Prompt tokens prefilled.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Prompt tokens whose keys and values came from the prefix cache instead (counted in
    /// `prompt_tokens` too).
    pub cached_prompt_tokens: u64,
    /// Bytes the prefix cache holds after the latest batch.
    pub prefix_cache_bytes: u64,
}

/// What every handle of one engine shares.
struct Shared {
    tx: mpsc::Sender<Job>,
    tokenizer: Option<Tokenizer>,
    template: std::result::Result<ChatTemplate, String>,
    stop_ids: Vec<u32>,
    vocab_size: usize,
    max_context: usize,
    device: Device,
    config: EngineConfig,
    stats: Arc<Mutex<EngineStats>>,
    /// The model's width at each of its hook points (steering checks edits against them).
    hook_dims: HashMap<autointerp_core::HookPoint, usize>,
}

/// A language model running in this process that answers [`ChatRequest`]s ([`Client`]) and
/// scores tokens ([`TokenScorer`]): the counterpart of delphi's vLLM `Offline` client.
///
/// The model lives on its own thread (libtorch tensors are not `Sync`); requests reach it over
/// a bounded channel and their answers come back over a oneshot. Requests that arrive within
/// [`EngineConfig::batch_wait`] of each other, or while a batch runs, run together: prompts
/// are left-padded, prefilled at once, then decoded one token per row per step with the KV
/// cache until every row has stopped (end token, stop string, `max_tokens`). The handle is
/// cheap to clone; the thread ends when the last handle is dropped.
///
/// Chat requests are rendered with the model's chat template ([`ChatTemplate`]) and honour
/// `extra` keys `add_generation_prompt`, `continue_final_message`, `chat_template_kwargs` and
/// `top_k`, as vLLM does. Logprobs are those of the model (temperature 1); prompt logprobs come
/// in vLLM's layout (the first position `None`).
///
/// ```no_run
/// use autointerp_client::{ChatRequest, Client};
/// use autointerp_engine::{EngineConfig, LocalEngine};
/// use autointerp_core::Message;
/// use autointerp_model::DType;
///
/// # async fn run() -> autointerp_client::Result<()> {
/// let engine = LocalEngine::load(
///     "SmolLM2-135M-Instruct.Q4_1.gguf",
///     tch::Device::Cpu,
///     DType::F32,
///     EngineConfig::default(),
/// )?;
/// let req = ChatRequest::new(vec![Message::user("What is the capital of France?")])
///     .with_max_tokens(32)
///     .with_temperature(0.0);
/// println!("{}", engine.chat(req).await?.text);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LocalEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("device", &self.shared.device)
            .field("vocab_size", &self.shared.vocab_size)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn engine_error(e: impl std::fmt::Display) -> Error {
    Error::Engine {
        problem: e.to_string(),
    }
}

impl LocalEngine {
    /// Loads a model (an HF folder, a `.gguf` file or a Hub id; see
    /// [`Model::load`](autointerp_model::Model::load)) onto `device` and starts its thread.
    /// Blocking: in async code, call it inside `spawn_blocking`. For a CUDA device, parse it
    /// with [`autointerp_model::parse_device`], which also loads libtorch's CUDA kernels.
    ///
    /// # Errors
    /// [`Error::Engine`] if the model cannot be loaded.
    pub fn load(source: &str, device: Device, dtype: DType, config: EngineConfig) -> Result<Self> {
        let (model, tokenizer) = Model::load(source, device, dtype).map_err(engine_error)?;
        Self::from_model(model, tokenizer, config)
    }

    /// Starts the engine on a loaded model. Without a tokenizer only token-level requests
    /// ([`LocalEngine::generate`], [`LocalEngine::score_tokens`]) work.
    ///
    /// # Errors
    /// [`Error::Engine`] if the thread cannot be started.
    pub fn from_model(
        model: Model,
        tokenizer: Option<Tokenizer>,
        config: EngineConfig,
    ) -> Result<Self> {
        let template = match (&config.chat_template, &tokenizer) {
            (Some(source), Some(tok)) => ChatTemplate::from_tokenizer_with(tok, source),
            (Some(source), None) => ChatTemplate::new(source.as_str(), "", ""),
            (None, Some(tok)) => ChatTemplate::from_tokenizer(tok),
            (None, None) => Err(Error::ChatTemplate {
                problem: "the model has no tokenizer, so no chat template".into(),
            }),
        }
        .map_err(|e| match e {
            Error::ChatTemplate { problem } => problem,
            other => other.to_string(),
        });
        let mut stop_ids: Vec<u32> = model.config().eos_token_ids.clone();
        if let Some(tok) = &tokenizer {
            stop_ids.extend(tok.eos_id());
            stop_ids.extend(END_OF_TURN.iter().filter_map(|t| tok.token_to_id(t)));
        }
        stop_ids.extend(&config.stop_token_ids);
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let pad_id = tokenizer
            .as_ref()
            .and_then(Tokenizer::pad_id)
            .or(model.config().pad_token_id)
            .or_else(|| stop_ids.first().copied())
            .unwrap_or(0);
        let max_context = config
            .max_context
            .unwrap_or(model.config().max_position_embeddings)
            .max(1);
        let (tx, rx) = mpsc::channel(config.queue_size.max(1));
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        let hook_dims = model
            .hook_points()
            .into_iter()
            .filter_map(|h| model.hook_dim(h).ok().map(|d| (h, d)))
            .collect();
        let shared = Shared {
            tx,
            tokenizer: tokenizer.clone(),
            template,
            stop_ids,
            vocab_size: model.vocab_size(),
            max_context,
            device: model.device(),
            config: config.clone(),
            stats: Arc::clone(&stats),
            hook_dims,
        };
        let sliding = model
            .config()
            .layer_types
            .contains(&autointerp_model::LayerAttention::Sliding);
        let prefix = (config.prefix_cache && !sliding)
            .then(|| prefix::PrefixCache::new(config.prefix_cache_bytes));
        let worker = Worker {
            model,
            tokenizer,
            config,
            pad_id,
            stats,
            prefix,
        };
        thread::Builder::new()
            .name("autointerp-local-engine".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| engine_error(format!("cannot start the engine thread: {e}")))?;
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// The model's tokenizer, if it has one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.shared.tokenizer.as_ref()
    }

    /// The chat template, or why there is none.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when the model has none or it does not compile.
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        self.shared
            .template
            .as_ref()
            .map_err(|problem| Error::ChatTemplate {
                problem: problem.clone(),
            })
    }

    /// The model's width at `point` (`d_model` for the residual stream, the MLP's hidden width
    /// at `layers.N.mlp.hidden`).
    ///
    /// # Errors
    /// [`Error::Config`] for a hook point the model does not have.
    pub fn hook_dim(&self, point: autointerp_core::HookPoint) -> Result<usize> {
        self.shared.hook_dims.get(&point).copied().ok_or_else(|| {
            Error::Config(format!(
                "the model has no hook point {point} (it has {} layers)",
                self.shared
                    .hook_dims
                    .keys()
                    .filter_map(|h| h.layer())
                    .max()
                    .map_or(0, |l| l + 1)
            ))
        })
    }

    /// The tokens generation stops at by default.
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.shared.stop_ids
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.shared.device
    }

    /// The options it was started with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// What it has run so far.
    pub fn stats(&self) -> EngineStats {
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one generation request in token ids, batched with whatever else is waiting.
    ///
    /// # Errors
    /// [`Error::Engine`] for an empty prompt, a token id beyond the vocabulary, a prompt that
    /// fills the context, stop strings without a tokenizer, or a failure of the model (which
    /// fails every request of its batch).
    pub async fn generate(&self, req: GenerateRequest) -> Result<Generation> {
        let s = &self.shared;
        if req.prompt.is_empty() {
            return Err(engine_error("empty prompt"));
        }
        if let Some(&bad) = req.prompt.iter().find(|&&t| t as usize >= s.vocab_size) {
            return Err(engine_error(format!(
                "token id {bad} is beyond the vocabulary ({} ids)",
                s.vocab_size
            )));
        }
        if req.prompt.len() > s.max_context
            || (req.prompt.len() == s.max_context && req.max_tokens > 0)
        {
            return Err(engine_error(format!(
                "the prompt has {} tokens; the context holds {}",
                req.prompt.len(),
                s.max_context
            )));
        }
        if !req.stop.is_empty() && s.tokenizer.is_none() {
            return Err(engine_error("stop strings need a tokenizer"));
        }
        let stop_ids = req
            .stop_token_ids
            .clone()
            .unwrap_or_else(|| s.stop_ids.clone());
        let max_new = req
            .max_tokens
            .min(s.max_context.saturating_sub(req.prompt.len()));
        let (reply, answer) = oneshot::channel();
        let job = Job {
            req,
            stop_ids,
            max_new,
            reply,
        };
        s.tx.send(job)
            .await
            .map_err(|_| engine_error("the engine thread has stopped"))?;
        answer
            .await
            .map_err(|_| engine_error("the engine thread dropped the request (it panicked?)"))?
    }

    /// The log-probability of each of `ids[start..]` given the ids before it (`start` ≥ 1).
    ///
    /// # Errors
    /// As [`LocalEngine::generate`], and [`Error::Engine`] if `start` is 0.
    pub async fn score_tokens(&self, ids: Vec<u32>, start: usize) -> Result<Vec<f32>> {
        if start == 0 {
            return Err(engine_error(
                "the first token has no log-probability: start at 1 or later",
            ));
        }
        let n = ids.len();
        if start >= n {
            return Ok(Vec::new());
        }
        let mut req = GenerateRequest::new(ids, 0).with_prompt_logprobs(0);
        req.prompt_logprobs_start = start;
        let generation = self.generate(req).await?;
        let positions = generation.prompt_logprobs.unwrap_or_default();
        Ok(positions
            .into_iter()
            .skip(start)
            .map(|p| p.map_or(f32::NEG_INFINITY, |p| p.logprob))
            .collect())
    }

    /// The prompt a chat request becomes: its messages rendered with the chat template
    /// (honouring `add_generation_prompt`, `continue_final_message` and
    /// `chat_template_kwargs` in `extra`) and tokenized.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] if there is no template or rendering fails; [`Error::Config`]
    /// for `extra` values of the wrong type; [`Error::Engine`] without a tokenizer.
    pub fn chat_prompt(&self, req: &ChatRequest) -> Result<Vec<u32>> {
        let tok = self.tokenizer_or_error()?;
        let template = self.chat_template()?;
        let flag = |key: &str| -> Result<Option<bool>> {
            match req.extra.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(Error::Config(format!(
                    "`{key}` must be a bool, got {other}"
                ))),
            }
        };
        let continue_final_message = flag("continue_final_message")?.unwrap_or(false);
        let add_generation_prompt =
            flag("add_generation_prompt")?.unwrap_or(!continue_final_message);
        let kwargs = match req.extra.get("chat_template_kwargs") {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(map)) => map.clone(),
            Some(other) => {
                return Err(Error::Config(format!(
                    "`chat_template_kwargs` must be an object, got {other}"
                )))
            }
        };
        let text = template.render(
            &req.messages,
            &RenderOptions {
                add_generation_prompt,
                continue_final_message,
                kwargs,
            },
        )?;
        // The template writes the special tokens itself, as in transformers.
        tok.encode(&text, false).map_err(tokenizer_error)
    }

    fn tokenizer_or_error(&self) -> Result<&Tokenizer> {
        self.shared
            .tokenizer
            .as_ref()
            .ok_or_else(|| engine_error("the model has no tokenizer"))
    }

    /// [`Client::chat`].
    #[tracing::instrument(skip_all, fields(messages = req.messages.len()))]
    async fn chat_inner(&self, req: ChatRequest) -> Result<ChatResponse> {
        let tok = self.tokenizer_or_error()?;
        let prompt = self.chat_prompt(&req)?;
        let cfg = &self.shared.config;
        let top_k = match req.extra.get("top_k") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(k) if k <= 0 => None,
                Some(k) => Some(k as usize),
                None => {
                    return Err(Error::Config(format!(
                        "`top_k` must be an integer, got {v}"
                    )))
                }
            },
        };
        let temperature = req.temperature.unwrap_or(cfg.default_temperature);
        let gen = GenerateRequest {
            prompt,
            max_tokens: req.max_tokens.unwrap_or(cfg.default_max_tokens) as usize,
            temperature: if temperature < GREEDY_BELOW {
                0.0
            } else {
                temperature
            },
            top_p: req.top_p.unwrap_or(1.0),
            top_k,
            seed: req.seed,
            stop_token_ids: None,
            stop: req.stop.clone(),
            logprobs: req.logprobs.map(usize::from),
            prompt_logprobs: req.prompt_logprobs.map(usize::from),
            prompt_logprobs_start: 1,
            steering: None,
        };
        let prompt_ids = gen.prompt.clone();
        let out = self.generate(gen).await?;

        let mut text = tok.decode(&out.tokens, true).map_err(tokenizer_error)?;
        if let Some(cut) = req
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
        }
        // Alternatives repeat a lot (digits at every position of a simulation prompt).
        let mut texts = TokenTexts::new(tok);
        let logprobs = match &out.logprobs {
            None => None,
            Some(lps) => {
                let context = &prompt_ids[prompt_ids.len().saturating_sub(4)..];
                let ids: Vec<u32> = lps.iter().map(|l| l.id).collect();
                let pieces = token_pieces(tok, context, &ids)?;
                Some(
                    lps.iter()
                        .zip(pieces)
                        .map(|(lp, piece)| texts.wire(lp, piece))
                        .collect(),
                )
            }
        };
        let prompt_logprobs = match &out.prompt_logprobs {
            None => None,
            Some(positions) => {
                let pieces = token_pieces(tok, &[], &prompt_ids)?;
                Some(
                    positions
                        .iter()
                        .zip(pieces)
                        .map(|(p, piece)| p.as_ref().map(|lp| texts.wire(lp, piece)))
                        .collect(),
                )
            }
        };
        Ok(ChatResponse {
            text,
            logprobs,
            prompt_logprobs,
            usage: Usage {
                prompt_tokens: out.prompt_tokens as u64,
                completion_tokens: out.tokens.len() as u64,
                cost: None,
            },
            finish_reason: Some(out.finish_reason.as_str().to_owned()),
        })
    }

    /// [`TokenScorer::logprobs`].
    async fn logprobs_inner(&self, prefix: &str, text: &str) -> Result<Vec<f32>> {
        let tok = self.tokenizer_or_error()?;
        let mut ids = tok.encode(prefix, true).map_err(tokenizer_error)?;
        let body = tok.encode(text, false).map_err(tokenizer_error)?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        if ids.is_empty() {
            // Nothing to condition the first token on but the start of a sequence.
            match tok.bos_id() {
                Some(bos) => ids.push(bos),
                None => {
                    return Err(engine_error(
                        "empty prefix and no BOS token: the first token cannot be scored",
                    ))
                }
            }
        }
        let start = ids.len();
        ids.extend(body);
        self.score_tokens(ids, start).await
    }
}

/// The text of single tokens, remembered.
struct TokenTexts<'a> {
    tokenizer: &'a Tokenizer,
    known: HashMap<u32, String>,
}

impl<'a> TokenTexts<'a> {
    fn new(tokenizer: &'a Tokenizer) -> Self {
        Self {
            tokenizer,
            known: HashMap::new(),
        }
    }

    /// One position in the client's format: the token as its piece of the text, alternatives
    /// as their own text.
    fn wire(&mut self, lp: &TokenLogprob, piece: String) -> TokenLogprobs {
        let tokenizer = self.tokenizer;
        let top = lp
            .top
            .iter()
            .map(|&(id, l)| {
                let text = self
                    .known
                    .entry(id)
                    .or_insert_with(|| token_text(tokenizer, id));
                (text.clone(), l)
            })
            .collect();
        TokenLogprobs {
            token: piece,
            logprob: lp.logprob,
            top,
        }
    }
}

impl Client for LocalEngine {
    fn chat(
        &self,
        req: ChatRequest,
    ) -> impl std::future::Future<Output = Result<ChatResponse>> + Send {
        self.chat_inner(req)
    }
}

impl TokenScorer for LocalEngine {
    fn logprobs(
        &self,
        prefix: &str,
        text: &str,
    ) -> impl std::future::Future<Output = Result<Vec<f32>>> + Send {
        self.logprobs_inner(prefix, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_give_the_wait_in_milliseconds() {
        let c: EngineConfig =
            serde_json::from_str(r#"{"max_batch_size": 8, "batch_wait_ms": 2.5}"#).unwrap();
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.batch_wait, Duration::from_micros(2500));
        assert_eq!(
            c.default_max_tokens,
            EngineConfig::default().default_max_tokens
        );
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["batch_wait_ms"], 2.5);
        assert!(serde_json::from_str::<EngineConfig>(r#"{"batch_wait_ms": -1}"#).is_err());
        assert!(serde_json::from_str::<EngineConfig>(r#"{"max_batch": 8}"#).is_err());
    }

    #[test]
    fn finish_reasons_read_as_openai_writes_them() {
        assert_eq!(FinishReason::Stop.as_str(), "stop");
        assert_eq!(FinishReason::Length.as_str(), "length");
    }
}
