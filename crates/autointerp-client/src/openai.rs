use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::http::{endpoint, http_client, ApiKey, Transport};
use crate::redact::RedactedUrl;
use crate::wire::{self, ParseError};
use crate::{ChatRequest, ChatResponse, Client, Error, HttpSettings, Result};

/// Body fields a chat client writes itself, which `extra_body` may not replace.
const CHAT_RESERVED: &[&str] = &["model", "messages", "stream"];

/// A client for any server that speaks OpenAI's `POST {base_url}/chat/completions`: OpenAI,
/// OpenRouter, vLLM, SGLang, llama.cpp's `llama-server`, Ollama, ….
///
/// Clones share one connection pool, one concurrency limit and one requests-per-minute limiter, so
/// clone it (or wrap it in an `Arc`) to use it from many tasks. Set the limits before cloning:
/// [`OpenAiClient::with_max_concurrency`], [`OpenAiClient::with_settings`] and
/// [`OpenAiClient::with_requests_per_minute`] give the client a fresh limiter of its own.
///
/// Each request is retried on 429, 5xx, timeouts and dropped connections, up to
/// [`OpenAiClient::with_max_attempts`] attempts in all, waiting between attempts with exponential
/// backoff and full jitter (a random wait between zero and `base · 2^(attempt-1)`, capped), or as
/// long as the server's `Retry-After` header asks, capped by [`OpenAiClient::with_max_retry_after`].
/// Timeouts, the queue allowance, the answer size limit and extra body fields are the
/// [`HttpSettings`].
///
/// The API key is read once, from an environment variable whose *name* is configured; it is sent
/// only in the `Authorization` header, never printed by `Debug`, and redacted from the response
/// snippets that errors carry. Credentials in the base URL (`user:pass@`, `?key=`) are redacted
/// wherever the client shows it.
#[derive(Clone)]
pub struct OpenAiClient {
    transport: Transport,
    base_url: String,
    model: String,
    price: Option<Price>,
}

/// Prices per million tokens, to fill [`crate::Usage::cost`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Price {
    prompt_per_million: f64,
    completion_per_million: f64,
}

impl OpenAiClient {
    /// A client for `model` at `base_url` (the part before `/chat/completions`, e.g.
    /// `http://localhost:8000/v1` for vLLM, `http://localhost:11434/v1` for Ollama), without an API
    /// key; add one with [`OpenAiClient::with_api_key_env`]. A query in `base_url`
    /// (`?api-version=…`) is sent after the path.
    ///
    /// Defaults: 5 attempts, backoff from 500 ms up to 30 s, `Retry-After` honoured up to 60 s,
    /// no requests-per-minute limit, no prices, and [`HttpSettings::default`]: 32 requests in
    /// flight, a 120 s timeout per attempt, an hour's queue allowance, answers up to 32 MiB.
    ///
    /// # Errors
    /// [`Error::Config`] when `base_url` is not an http(s) URL or the HTTP client cannot be built.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Result<Self> {
        let (base_url, http) = http_client(base_url.into())?;
        Ok(Self {
            transport: Transport::new(
                http,
                endpoint(&base_url, "chat/completions"),
                HttpSettings::default(),
                CHAT_RESERVED,
            ),
            base_url,
            model: model.into(),
            price: None,
        })
    }

    /// OpenAI's API (`https://api.openai.com/v1`), with the key from `OPENAI_API_KEY`.
    ///
    /// # Errors
    /// [`Error::Config`] when `OPENAI_API_KEY` is unset or empty.
    pub fn openai(model: impl Into<String>) -> Result<Self> {
        Self::new("https://api.openai.com/v1", model)?.with_api_key_env("OPENAI_API_KEY")
    }

    /// OpenRouter (`https://openrouter.ai/api/v1`), with the key from `OPENROUTER_API_KEY`.
    ///
    /// # Errors
    /// [`Error::Config`] when `OPENROUTER_API_KEY` is unset or empty.
    pub fn openrouter(model: impl Into<String>) -> Result<Self> {
        Self::new("https://openrouter.ai/api/v1", model)?.with_api_key_env("OPENROUTER_API_KEY")
    }

    /// Reads the API key from the environment variable named `var`, to send as
    /// `Authorization: Bearer <key>`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `var` when it is unset, empty, not Unicode, or holds characters a
    /// header cannot carry.
    pub fn with_api_key_env(mut self, var: impl Into<String>) -> Result<Self> {
        self.transport.set_key(ApiKey::from_env(var.into())?);
        Ok(self)
    }

    /// Uses `key` as the API key, for keys that come from somewhere other than the environment
    /// (a secrets manager). Prefer [`OpenAiClient::with_api_key_env`].
    ///
    /// # Errors
    /// [`Error::Config`] when the key holds characters a header cannot carry.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Result<Self> {
        self.transport
            .set_key(ApiKey::new(key.into().trim().to_owned(), None)?);
        Ok(self)
    }

    /// Adds a header to every request, e.g. OpenRouter's `HTTP-Referer` and `X-Title`.
    ///
    /// # Errors
    /// [`Error::Config`] when the name or value is not a valid header.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::Config(format!("`{name}` is not a valid header name")))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            Error::Config(format!(
                "the value of header `{name}` is not a valid header value"
            ))
        })?;
        self.transport.headers.insert(name, value);
        Ok(self)
    }

    /// Applies every [`HttpSettings`] field: requests in flight (a fresh limiter, as
    /// [`OpenAiClient::with_max_concurrency`]), request timeout, queue allowance, answer size
    /// limit and extra body fields.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field when one is out of range (zero in flight, a zero
    /// timeout or limit) or `extra_body` sets `model`, `messages` or `stream`.
    pub fn with_settings(mut self, settings: &HttpSettings) -> Result<Self> {
        self.transport.apply(settings)?;
        Ok(self)
    }

    /// The [`HttpSettings`] in effect, e.g. to save them beside a run.
    pub fn settings(&self) -> HttpSettings {
        self.transport.settings()
    }

    /// Sets how many requests one [`Client::chat`] call may send in all (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.transport.retry.max_attempts = max_attempts.max(1);
        self
    }

    /// Sets the backoff between attempts: a random wait in `[0, min(max, base · 2^(attempt-1))]`.
    #[must_use]
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.transport.retry.base_delay = base;
        self.transport.retry.max_delay = max.max(base);
        self
    }

    /// Sets the longest wait a server's `Retry-After` header may impose.
    #[must_use]
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.transport.retry.max_retry_after = max;
        self
    }

    /// Sets the timeout of each attempt ([`HttpSettings::request_timeout`]), from sending the
    /// request to reading the last byte of the answer; waiting for the concurrency and rate
    /// limits is not counted (that is [`OpenAiClient::with_queue_timeout`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.transport.timeout = timeout;
        self
    }

    /// Sets how long an attempt may wait for the concurrency and rate limits before it is sent
    /// ([`HttpSettings::queue_timeout`]); past it the call fails with [`Error::QueueTimeout`].
    #[must_use]
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.transport.set_queue_timeout(timeout);
        self
    }

    /// Sets the most bytes of an answer read ([`HttpSettings::max_response_bytes`], at least 1).
    #[must_use]
    pub fn with_max_response_bytes(mut self, limit: u64) -> Self {
        self.transport.set_max_response_bytes(limit);
        self
    }

    /// Sets the fields added to every request body ([`HttpSettings::extra_body`]), replacing
    /// any set before.
    ///
    /// # Errors
    /// [`Error::Config`] when it sets `model`, `messages` or `stream`.
    pub fn with_extra_body(mut self, extra: Map<String, Value>) -> Result<Self> {
        self.transport.set_extra_body(extra)?;
        Ok(self)
    }

    /// Sets how many requests may be in flight at once across this client and its later clones
    /// ([`HttpSettings::max_requests_in_flight`], at least 1).
    #[must_use]
    pub fn with_max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.transport.set_max_in_flight(max_concurrency);
        self
    }

    /// Spaces requests (retries included) evenly so that at most `rpm` start per minute, across
    /// this client and its later clones; 0 removes the limit.
    #[must_use]
    pub fn with_requests_per_minute(mut self, rpm: u32) -> Self {
        self.transport.set_requests_per_minute(rpm);
        self
    }

    /// Sets prices per million prompt and completion tokens, so that responses carry
    /// [`crate::Usage::cost`]. Without prices, the cost is what the server reports, if anything.
    #[must_use]
    pub fn with_price(mut self, prompt_per_million: f64, completion_per_million: f64) -> Self {
        self.price = Some(Price {
            prompt_per_million,
            completion_per_million,
        });
        self
    }

    /// The model requests name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The base URL, without a trailing slash, as given: it may hold credentials, so show it
    /// through [`crate::redact_url`].
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn chat_with_retries(&self, req: ChatRequest) -> Result<ChatResponse> {
        let body = wire::request_body(&self.model, &req, self.transport.extra_body());
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::Config(format!("cannot serialise the request: {e}")))?;
        self.transport
            .retry
            .run("chat", &self.model, self.transport.endpoint(), || {
                self.attempt(&body, req.prompt_logprobs)
            })
            .await
    }

    /// One request: wait for the limits, send, read the whole answer, parse it.
    async fn attempt(&self, body: &[u8], prompt_top_k: Option<u8>) -> Result<ChatResponse> {
        let bytes = self.transport.post(body).await?;
        let mut response = wire::parse_response(&bytes, prompt_top_k).map_err(|e| match e {
            ParseError::Malformed(problem) => Error::MalformedResponse {
                problem,
                body: self.transport.snippet(&bytes),
            },
            ParseError::Api { message, code } => Error::Api {
                message: self.transport.redact(message),
                code,
            },
        })?;
        if let Some(price) = self.price {
            response.usage.cost = Some(
                (response.usage.prompt_tokens as f64 * price.prompt_per_million
                    + response.usage.completion_tokens as f64 * price.completion_per_million)
                    / 1e6,
            );
        }
        tracing::debug!(
            model = %self.model,
            prompt_tokens = response.usage.prompt_tokens,
            completion_tokens = response.usage.completion_tokens,
            "chat request done"
        );
        Ok(response)
    }

    #[cfg(test)]
    fn snippet(&self, body: &[u8]) -> String {
        self.transport.snippet(body)
    }
}

impl Client for OpenAiClient {
    async fn chat(&self, req: ChatRequest) -> Result<ChatResponse> {
        self.chat_with_retries(req).await
    }
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("OpenAiClient");
        d.field("base_url", &RedactedUrl(&self.base_url))
            .field("model", &self.model);
        self.transport.debug_fields(&mut d);
        d.field("price", &self.price).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::retry_after;
    use reqwest::header::HeaderMap;

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let c = OpenAiClient::new("http://localhost:1/v1", "m")
            .unwrap()
            .with_backoff(Duration::from_millis(100), Duration::from_millis(250))
            .with_max_retry_after(Duration::from_secs(2));
        let e = Error::Timeout {
            after: Duration::ZERO,
        };
        for attempt in 1..40 {
            let d = c.transport.retry.delay(attempt, &e);
            assert!(d <= Duration::from_millis(250), "{d:?}");
        }
        assert!(c.transport.retry.delay(1, &e) <= Duration::from_millis(100));
        let limited = |s| Error::RateLimited {
            retry_after: Some(Duration::from_secs(s)),
            body: String::new(),
        };
        assert_eq!(
            c.transport.retry.delay(1, &limited(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            c.transport.retry.delay(1, &limited(100)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn bad_configuration_is_a_config_error() {
        assert!(matches!(
            OpenAiClient::new("localhost:8000", "m"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            OpenAiClient::new("ftp://x/v1", "m"),
            Err(Error::Config(_))
        ));
        let c = OpenAiClient::new("http://x/v1/", "m").unwrap();
        assert_eq!(c.base_url(), "http://x/v1");
        assert!(matches!(
            c.clone().with_api_key("a\nb"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            c.with_header("bad header", "v"),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn snippets_are_short_and_redacted() {
        let c = OpenAiClient::new("http://x/v1", "m")
            .unwrap()
            .with_api_key("sk-secret")
            .unwrap();
        let body = format!("echo sk-secret {}", "é".repeat(2000));
        let s = c.snippet(body.as_bytes());
        assert!(!s.contains("sk-secret"));
        assert!(s.chars().count() <= crate::http::SNIPPET_CHARS + 1);
        assert!(!format!("{c:?}").contains("sk-secret"));
    }
}
