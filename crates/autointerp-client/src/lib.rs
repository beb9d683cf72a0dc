//! Chat-completion clients: the [`Client`] trait that explainers and scorers ask, and
//! [`OpenAiClient`] for any OpenAI-compatible server (OpenAI, OpenRouter, vLLM, SGLang,
//! llama.cpp, Ollama).
//!
//! ```no_run
//! use autointerp_client::{ChatRequest, Client, OpenAiClient};
//! use autointerp_core::Message;
//! use std::time::Duration;
//!
//! # async fn run() -> autointerp_client::Result<()> {
//! // A local vLLM server; `OpenAiClient::openrouter(model)` reads OPENROUTER_API_KEY instead.
//! let client = OpenAiClient::new("http://localhost:8000/v1", "Qwen/Qwen2.5-7B-Instruct")?
//!     .with_max_concurrency(8)
//!     .with_timeout(Duration::from_secs(60));
//! let req = ChatRequest::new(vec![Message::user("Name a colour.")])
//!     .with_max_tokens(8)
//!     .with_temperature(0.0)
//!     .with_logprobs(5);
//! let answer = client.chat(req).await?;
//! println!("{} ({} tokens)", answer.text, answer.usage.completion_tokens);
//! # Ok(())
//! # }
//! ```
//!
//! # Settings and guards
//!
//! [`HttpSettings`] are the transport settings both HTTP clients share, as a config file writes
//! them: requests in flight, the request timeout (from sending), the queue allowance (waiting on
//! this client's own limits), the answer size limit and `extra_body` fields for every request.
//! URLs are shown with their credentials redacted ([`redact_url`]), in errors, retry logs and
//! `Debug`.
//!
//! # Why not `async-openai`
//!
//! The HTTP client is reqwest (rustls, no native TLS) with this crate's own serde types for the
//! wire format, rather than `async-openai`, which was evaluated for it. Its typed
//! `CreateChatCompletionRequest` has no `prompt_logprobs` and no way to pass extra body parameters
//! (vLLM's `top_k`, `chat_template_kwargs`, OpenRouter's `provider`); its `byot` methods would
//! carry any body, but then none of its types are used. Its response types reject what
//! vLLM and llama.cpp send (vLLM's `prompt_logprobs`, `null` log-probabilities, missing fields),
//! and its built-in retry loop retries only 429s, ignores `Retry-After`, has no per-request
//! timeout, and folds truncated bodies, dropped connections and bad JSON into errors that
//! cannot be told apart. What remains after replacing all that is a POST and a JSON parse, which
//! reqwest does directly, with one TLS stack and no OpenSSL headers needed.
//!
//! # In process
//!
//! Models run in this process live in `autointerp-engine` (`LocalEngine`, a [`Client`] and a
//! [`TokenScorer`]; `LocalEmbedder`, an [`Embedder`]), so that this crate never links libtorch.
//!
//! Example: `cargo run --release -p autointerp-client --example client_chat -- BASE_URL MODEL "prompt"`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod embed;
mod error;
mod http;
mod intervener;
mod openai;
mod redact;
mod settings;
mod spec;
mod token_scorer;
mod types;
mod wire;

pub use autointerp_core::{EmbedError, EmbedFuture, Embedder};
pub use client::{ChatFuture, Client, DynClient, SharedClient};
pub use embed::OpenAiEmbedder;
pub use error::{Error, Result};
pub use intervener::{
    DynIntervener, Intervener, Intervention, InterventionFuture, SharedIntervener, SteeredPair,
};
pub use openai::OpenAiClient;
pub use redact::{redact_url, RedactedUrl};
pub use settings::{
    HttpSettings, DEFAULT_EMBEDDING_REQUESTS_IN_FLIGHT, DEFAULT_MAX_REQUESTS_IN_FLIGHT,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_QUEUE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
pub use spec::ModelSpec;
pub use token_scorer::{DynTokenScorer, LogprobsFuture, SharedTokenScorer, TokenScorer};
pub use types::{ChatRequest, ChatResponse, TokenLogprobs, Usage};
