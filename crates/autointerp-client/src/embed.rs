//! [`OpenAiEmbedder`]: the [`Embedder`] (defined in autointerp-core) for any server with OpenAI's
//! `POST {base_url}/embeddings` (OpenAI, vLLM, SGLang, llama.cpp, Ollama,
//! text-embeddings-inference). A sentence-transformers model in this process is autointerp-engine's
//! `LocalEmbedder`.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::Semaphore;

use autointerp_core::{EmbedFuture, Embedder};

use crate::http::{http_client, retry_after, RetryPolicy};
use crate::{Error, Result};

/// An embedder for any server that speaks OpenAI's `POST {base_url}/embeddings`.
///
/// Texts are sent in requests of at most [`OpenAiEmbedder::with_batch_size`] inputs, at most
/// [`OpenAiEmbedder::with_max_concurrency`] requests at a time across clones. Each request is
/// retried on 429, 5xx, timeouts and dropped connections, with exponential backoff and full jitter
/// (or the server's `Retry-After`, up to 60 s). The API key is sent only in the `Authorization`
/// header, never printed, and redacted from error snippets.
///
/// ```no_run
/// use autointerp_client::{Embedder, OpenAiEmbedder};
///
/// # async fn run() -> Result<(), autointerp_core::EmbedError> {
/// let embedder = OpenAiEmbedder::new("http://localhost:8000/v1", "sentence-transformers/all-MiniLM-L6-v2")?;
/// let vectors = embedder.embed(&["a river".to_string(), "a bank".to_string()]).await?;
/// assert_eq!(vectors.len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    key: Option<(String, HeaderValue)>,
    dimensions: Option<u32>,
    batch_size: usize,
    retry: RetryPolicy,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

impl OpenAiEmbedder {
    /// An embedder for `model` at `base_url` (the part before `/embeddings`, e.g.
    /// `http://localhost:8000/v1`), without an API key.
    ///
    /// Defaults: 256 texts per request, 8 requests in flight, 5 attempts, backoff from 500 ms up
    /// to 30 s, a 120 s timeout per attempt.
    ///
    /// # Errors
    /// [`Error::Config`] when `base_url` is not an http(s) URL or the HTTP client cannot be built.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Result<Self> {
        let (base_url, http) = http_client(base_url.into())?;
        Ok(Self {
            http,
            endpoint: format!("{base_url}/embeddings"),
            model: model.into(),
            key: None,
            dimensions: None,
            batch_size: 256,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(120),
            in_flight: Arc::new(Semaphore::new(8)),
        })
    }

    /// OpenAI's API (`https://api.openai.com/v1`), with the key from `OPENAI_API_KEY`.
    ///
    /// # Errors
    /// [`Error::Config`] when `OPENAI_API_KEY` is unset or empty.
    pub fn openai(model: impl Into<String>) -> Result<Self> {
        Self::new("https://api.openai.com/v1", model)?.with_api_key_env("OPENAI_API_KEY")
    }

    /// Reads the API key from the environment variable named `var`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `var` when it is unset, empty, not Unicode, or not a valid header.
    pub fn with_api_key_env(self, var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(s) if !s.trim().is_empty() => self.with_api_key(s),
            Ok(_) => Err(Error::Config(format!(
                "environment variable {var} (the API key) is empty"
            ))),
            Err(_) => Err(Error::Config(format!(
                "environment variable {var} (the API key) is not set or not Unicode"
            ))),
        }
    }

    /// Uses `key` as the API key.
    ///
    /// # Errors
    /// [`Error::Config`] when the key holds characters a header cannot carry.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Result<Self> {
        let secret = key.into().trim().to_owned();
        let mut header = HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| {
            Error::Config("the API key holds characters an HTTP header cannot carry".into())
        })?;
        header.set_sensitive(true);
        self.key = Some((secret, header));
        Ok(self)
    }

    /// Asks for vectors of this many dimensions (OpenAI's `text-embedding-3-*` can shorten them).
    #[must_use]
    pub fn with_dimensions(mut self, dimensions: u32) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// Sets the most texts per request (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets how many requests may be in flight at once across this embedder and its later clones
    /// (at least 1).
    #[must_use]
    pub fn with_max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.in_flight = Arc::new(Semaphore::new(
            max_concurrency.clamp(1, Semaphore::MAX_PERMITS),
        ));
        self
    }

    /// Sets how many requests one batch may send in all (at least 1).
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

    /// Sets the timeout of each attempt.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The model requests name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// One vector per text, in the order of `texts`: [`Embedder::embed`] with this crate's typed
    /// error (the trait boxes it).
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            out.extend(self.embed_batch(chunk).await?);
        }
        Ok(out)
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut body = serde_json::json!({
            "model": self.model,
            "input": texts,
            "encoding_format": "float",
        });
        if let Some(d) = self.dimensions {
            body["dimensions"] = d.into();
        }
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::Config(format!("cannot serialise the request: {e}")))?;
        self.retry
            .run("embedding", &self.model, || {
                self.attempt(&body, texts.len())
            })
            .await
    }

    async fn attempt(&self, body: &[u8], n: usize) -> Result<Vec<Vec<f32>>> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Error::Config("the concurrency limiter was closed".into()))?;
        let exchange = async {
            let mut request = self
                .http
                .post(&self.endpoint)
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
            if let Some((_, header)) = &self.key {
                request = request.header(AUTHORIZATION, header.clone());
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
        self.parse(&bytes, n)
    }

    fn parse(&self, bytes: &[u8], n: usize) -> Result<Vec<Vec<f32>>> {
        let malformed = |problem: String| Error::MalformedResponse {
            problem,
            body: self.snippet(bytes),
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
        if let Some(err) = value.get("error").filter(|_| value.get("data").is_none()) {
            let message = err
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| err.to_string(), str::to_owned);
            return Err(Error::Api {
                message: self.redact(message),
                code: err.get("code").and_then(serde_json::Value::as_i64),
            });
        }
        let wire: WireEmbeddings = serde_json::from_value(value)
            .map_err(|e| malformed(format!("unexpected shape: {e}")))?;
        if wire.data.len() != n {
            return Err(malformed(format!(
                "{} embeddings for {n} inputs",
                wire.data.len()
            )));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; n];
        for (i, item) in wire.data.into_iter().enumerate() {
            let at = item.index.unwrap_or(i);
            match slots.get_mut(at) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => return Err(malformed(format!("bad or repeated index {at}"))),
            }
        }
        let out: Vec<Vec<f32>> = slots.into_iter().flatten().collect();
        if out.windows(2).any(|w| w[0].len() != w[1].len()) {
            return Err(malformed("embeddings of different lengths".into()));
        }
        Ok(out)
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        crate::http::transport_error(
            e,
            self.timeout,
            self.key.as_ref().map(|(secret, _)| secret.as_str()),
        )
    }

    fn snippet(&self, body: &[u8]) -> String {
        crate::http::snippet(body, self.key.as_ref().map(|(secret, _)| secret.as_str()))
    }

    fn redact(&self, text: String) -> String {
        crate::http::redact(text, self.key.as_ref().map(|(secret, _)| secret.as_str()))
    }
}

impl Embedder for OpenAiEmbedder {
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Box::pin(async move { Ok(Self::embed(self, texts).await?) });
        }
        // reqwest needs a tokio reactor; a caller without one (the latents crate's record
        // threads, `futures::executor::block_on`) gets its request run on a small runtime kept
        // for that purpose.
        let this = self.clone();
        let texts = texts.to_vec();
        let task = fallback_runtime().map(|rt| rt.spawn(async move { this.embed(&texts).await }));
        Box::pin(async move {
            let task = task?;
            let vectors = task.await.map_err(|e| {
                Error::Config(format!("the embedding request's task failed: {e}"))
            })??;
            Ok(vectors)
        })
    }
}

/// The runtime of requests made outside any tokio runtime, started on first use.
fn fallback_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("autointerp-embed-http")
                .enable_all()
                .build()
        })
        .as_ref()
        .map_err(|e| {
            Error::Config(format!(
                "cannot start a runtime for embedding requests: {e}"
            ))
        })
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("dimensions", &self.dimensions)
            .field("batch_size", &self.batch_size)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Deserialize)]
struct WireEmbeddings {
    data: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedder() -> OpenAiEmbedder {
        OpenAiEmbedder::new("http://localhost:1/v1", "m")
            .unwrap()
            .with_api_key("sk-secret")
            .unwrap()
    }

    #[test]
    fn reads_embeddings_in_index_order() {
        let body = br#"{"object": "list", "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.5]}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}}"#;
        assert_eq!(
            embedder().parse(body, 2).unwrap(),
            vec![vec![1.0, 0.5], vec![0.0, 1.0]]
        );
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        let e = embedder();
        for body in [
            &br#"{"data": [{"embedding": [1.0]}]}"#[..],
            br#"{"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}"#,
            br#"{"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]}"#,
            b"not json",
            br#"{"data": "x"}"#,
        ] {
            assert!(
                matches!(e.parse(body, 2), Err(Error::MalformedResponse { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let err = e
            .parse(
                br#"{"error": {"message": "bad key sk-secret", "code": 401}}"#,
                1,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Api {
                code: Some(401),
                ..
            }
        ));
        assert!(!err.to_string().contains("sk-secret"));
        assert!(!format!("{e:?}").contains("sk-secret"));
    }

    #[test]
    fn bad_configuration_is_a_config_error() {
        assert!(matches!(
            OpenAiEmbedder::new("localhost:8000", "m"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            OpenAiEmbedder::new("http://x/v1", "m")
                .unwrap()
                .with_api_key_env("AUTOINTERP_SURELY_UNSET_VARIABLE"),
            Err(Error::Config(_))
        ));
    }
}
