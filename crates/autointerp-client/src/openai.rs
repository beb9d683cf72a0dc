use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::http::{http_client, retry_after, RetryPolicy};
use crate::wire::{self, ParseError};
use crate::{ChatRequest, ChatResponse, Client, Error, Result};

/// A client for any server that speaks OpenAI's `POST {base_url}/chat/completions`: OpenAI,
/// OpenRouter, vLLM, SGLang, llama.cpp's `llama-server`, Ollama, ….
///
/// Clones share one connection pool, one concurrency limit and one requests-per-minute limiter, so
/// clone it (or wrap it in an `Arc`) to use it from many tasks. Set the limits before cloning:
/// [`OpenAiClient::with_max_concurrency`] and [`OpenAiClient::with_requests_per_minute`] give the
/// client a fresh limiter of its own.
///
/// Each request is retried on 429, 5xx, timeouts and dropped connections, up to
/// [`OpenAiClient::with_max_attempts`] attempts in all, waiting between attempts with exponential
/// backoff and full jitter (a random wait between zero and `base · 2^(attempt-1)`, capped), or as
/// long as the server's `Retry-After` header asks, capped by [`OpenAiClient::with_max_retry_after`].
///
/// The API key is read once, from an environment variable whose *name* is configured; it is sent
/// only in the `Authorization` header, never printed by `Debug`, and redacted from the response
/// snippets that errors carry.
#[derive(Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    base_url: String,
    endpoint: String,
    model: String,
    api_key: Option<ApiKey>,
    headers: HeaderMap,
    retry: RetryPolicy,
    timeout: Duration,
    max_concurrency: usize,
    in_flight: Arc<Semaphore>,
    rpm: Option<Arc<RateLimiter>>,
    price: Option<Price>,
}

/// An API key: where it came from, and the header it makes. Never printed.
#[derive(Clone)]
struct ApiKey {
    /// The environment variable it was read from, if any (safe to print).
    env_var: Option<String>,
    secret: String,
    header: HeaderValue,
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
    /// key; add one with [`OpenAiClient::with_api_key_env`].
    ///
    /// Defaults: 5 attempts, backoff from 500 ms up to 30 s, `Retry-After` honoured up to 60 s, a
    /// 120 s timeout per attempt, 32 requests in flight, no requests-per-minute limit, no prices.
    ///
    /// # Errors
    /// [`Error::Config`] when `base_url` is not an http(s) URL or the HTTP client cannot be built.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Result<Self> {
        let (base_url, http) = http_client(base_url.into())?;
        let max_concurrency = 32;
        Ok(Self {
            http,
            endpoint: format!("{base_url}/chat/completions"),
            base_url,
            model: model.into(),
            api_key: None,
            headers: HeaderMap::new(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(120),
            max_concurrency,
            in_flight: Arc::new(Semaphore::new(max_concurrency)),
            rpm: None,
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
    pub fn with_api_key_env(self, var: impl Into<String>) -> Result<Self> {
        let var = var.into();
        let secret = match std::env::var(&var) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
            Ok(_) => {
                return Err(Error::Config(format!(
                    "environment variable {var} (the API key) is empty"
                )))
            }
            Err(std::env::VarError::NotPresent) => {
                return Err(Error::Config(format!(
                    "environment variable {var} (the API key) is not set"
                )));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::Config(format!(
                    "environment variable {var} (the API key) is not valid Unicode"
                )));
            }
        };
        self.set_key(secret, Some(var))
    }

    /// Uses `key` as the API key, for keys that come from somewhere other than the environment
    /// (a secrets manager). Prefer [`OpenAiClient::with_api_key_env`].
    ///
    /// # Errors
    /// [`Error::Config`] when the key holds characters a header cannot carry.
    pub fn with_api_key(self, key: impl Into<String>) -> Result<Self> {
        self.set_key(key.into().trim().to_owned(), None)
    }

    fn set_key(mut self, secret: String, env_var: Option<String>) -> Result<Self> {
        let from = env_var
            .as_deref()
            .map_or_else(String::new, |v| format!(" from {v}"));
        let mut header = HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| {
            Error::Config(format!(
                "the API key{from} holds characters an HTTP header cannot carry"
            ))
        })?;
        header.set_sensitive(true);
        self.api_key = Some(ApiKey {
            env_var,
            secret,
            header,
        });
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
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Sets how many requests one [`Client::chat`] call may send in all (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.retry.max_attempts = max_attempts.max(1);
        self
    }

    /// Sets the backoff between attempts: a random wait in `[0, min(max, base · 2^(attempt-1))]`.
    #[must_use]
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry.base_delay = base;
        self.retry.max_delay = max.max(base);
        self
    }

    /// Sets the longest wait a server's `Retry-After` header may impose.
    #[must_use]
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.retry.max_retry_after = max;
        self
    }

    /// Sets the timeout of each attempt, from sending the request to reading the last byte of the
    /// answer (waiting for the concurrency and rate limits is not counted).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how many requests may be in flight at once across this client and its later clones
    /// (at least 1).
    #[must_use]
    pub fn with_max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.max_concurrency = max_concurrency.clamp(1, Semaphore::MAX_PERMITS);
        self.in_flight = Arc::new(Semaphore::new(self.max_concurrency));
        self
    }

    /// Spaces requests (retries included) evenly so that at most `rpm` start per minute, across
    /// this client and its later clones; 0 removes the limit.
    #[must_use]
    pub fn with_requests_per_minute(mut self, rpm: u32) -> Self {
        self.rpm = (rpm > 0).then(|| {
            Arc::new(RateLimiter {
                interval: Duration::from_secs(60) / rpm,
                next: Mutex::new(Instant::now()),
            })
        });
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

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn chat_with_retries(&self, req: ChatRequest) -> Result<ChatResponse> {
        let body = serde_json::to_vec(&wire::request_body(&self.model, &req))
            .map_err(|e| Error::Config(format!("cannot serialise the request: {e}")))?;
        self.retry
            .run("chat", &self.model, || {
                self.attempt(&body, req.prompt_logprobs)
            })
            .await
    }

    /// One request: wait for the limits, send, read the whole answer, parse it.
    async fn attempt(&self, body: &[u8], prompt_top_k: Option<u8>) -> Result<ChatResponse> {
        let permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Error::Config("the concurrency limiter was closed".into()))?;
        if let Some(rpm) = &self.rpm {
            rpm.acquire().await;
        }
        let exchange = async {
            let mut request = self
                .http
                .post(&self.endpoint)
                .headers(self.headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
            if let Some(key) = &self.api_key {
                request = request.header(AUTHORIZATION, key.header.clone());
            }
            let response = request.send().await.map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let bytes = response
                .bytes()
                .await
                .map_err(|e| self.transport_error(&e))?;
            Ok::<_, Error>((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                after: self.timeout,
            })??;
        drop(permit);

        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Error::RateLimited {
                retry_after,
                body: self.snippet(&bytes),
            });
        }
        if !status.is_success() {
            return Err(Error::Http {
                status: status.as_u16(),
                body: self.snippet(&bytes),
            });
        }
        let mut response = wire::parse_response(&bytes, prompt_top_k).map_err(|e| match e {
            ParseError::Malformed(problem) => Error::MalformedResponse {
                problem,
                body: self.snippet(&bytes),
            },
            ParseError::Api { message, code } => Error::Api {
                message: self.redact(message),
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

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        crate::http::transport_error(
            e,
            self.timeout,
            self.api_key.as_ref().map(|k| k.secret.as_str()),
        )
    }

    fn snippet(&self, body: &[u8]) -> String {
        crate::http::snippet(body, self.api_key.as_ref().map(|k| k.secret.as_str()))
    }

    fn redact(&self, text: String) -> String {
        crate::http::redact(text, self.api_key.as_ref().map(|k| k.secret.as_str()))
    }
}

impl Client for OpenAiClient {
    async fn chat(&self, req: ChatRequest) -> Result<ChatResponse> {
        self.chat_with_retries(req).await
    }
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field(
                "requests_per_minute",
                &self.rpm.as_ref().map(|r| r.per_minute()),
            )
            .field("price", &self.price)
            .finish()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.env_var {
            Some(var) => write!(f, "[redacted, from {var}]"),
            None => f.write_str("[redacted]"),
        }
    }
}

/// Starts requests at most once per `interval`, in the order they ask.
struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    async fn acquire(&self) {
        let slot = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    fn per_minute(&self) -> f64 {
        60.0 / self.interval.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let d = c.retry.delay(attempt, &e);
            assert!(d <= Duration::from_millis(250), "{d:?}");
        }
        assert!(c.retry.delay(1, &e) <= Duration::from_millis(100));
        let limited = |s| Error::RateLimited {
            retry_after: Some(Duration::from_secs(s)),
            body: String::new(),
        };
        assert_eq!(c.retry.delay(1, &limited(1)), Duration::from_secs(1));
        assert_eq!(c.retry.delay(1, &limited(100)), Duration::from_secs(2));
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
