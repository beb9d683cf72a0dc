//! [`OpenAiEmbedder`]: the [`Embedder`] (defined in autointerp-core) for any server with OpenAI's
//! `POST {base_url}/embeddings` (OpenAI, vLLM, SGLang, llama.cpp, Ollama,
//! text-embeddings-inference). A sentence-transformers model in this process is autointerp-engine's
//! `LocalEmbedder`.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use autointerp_core::{EmbedFuture, Embedder};

use crate::http::{endpoint, http_client, ApiKey, Transport};
use crate::{Error, HttpSettings, Result};

/// Body fields an embedder writes itself, which `extra_body` may not replace: asking for
/// base64 vectors would make every answer unreadable.
const EMBEDDING_RESERVED: &[&str] = &["model", "input", "encoding_format"];

/// An embedder for any server that speaks OpenAI's `POST {base_url}/embeddings`.
///
/// Texts are sent in requests of at most [`OpenAiEmbedder::with_batch_size`] inputs, at most
/// [`OpenAiEmbedder::with_max_concurrency`] requests at a time across clones. Each request is
/// retried on 429, 5xx, timeouts and dropped connections, with exponential backoff and full jitter
/// (or the server's `Retry-After`, up to 60 s). Timeouts, the queue allowance, the answer size
/// limit and extra body fields are the [`HttpSettings`] ([`HttpSettings::embeddings`] by
/// default). The API key is sent only in the `Authorization` header, never printed, and
/// redacted from error snippets; credentials in the base URL are redacted wherever it is shown.
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
    transport: Transport,
    model: String,
    dimensions: Option<u32>,
    batch_size: usize,
}

impl OpenAiEmbedder {
    /// An embedder for `model` at `base_url` (the part before `/embeddings`, e.g.
    /// `http://localhost:8000/v1`), without an API key.
    ///
    /// Defaults: 256 texts per request, 5 attempts, backoff from 500 ms up to 30 s, and
    /// [`HttpSettings::embeddings`]: 8 requests in flight, a 120 s timeout per attempt, an hour's
    /// queue allowance, answers up to 32 MiB.
    ///
    /// # Errors
    /// [`Error::Config`] when `base_url` is not an http(s) URL or the HTTP client cannot be built.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Result<Self> {
        let (base_url, http) = http_client(base_url.into())?;
        Ok(Self {
            transport: Transport::new(
                http,
                endpoint(&base_url, "embeddings"),
                HttpSettings::embeddings(),
                EMBEDDING_RESERVED,
            ),
            model: model.into(),
            dimensions: None,
            batch_size: 256,
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
    pub fn with_api_key_env(mut self, var: &str) -> Result<Self> {
        self.transport.set_key(ApiKey::from_env(var.to_owned())?);
        Ok(self)
    }

    /// Uses `key` as the API key.
    ///
    /// # Errors
    /// [`Error::Config`] when the key holds characters a header cannot carry.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Result<Self> {
        self.transport
            .set_key(ApiKey::new(key.into().trim().to_owned(), None)?);
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

    /// Applies every [`HttpSettings`] field: requests in flight (a fresh limiter, as
    /// [`OpenAiEmbedder::with_max_concurrency`]), request timeout, queue allowance, answer size
    /// limit and extra body fields.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field when one is out of range (zero in flight, a zero
    /// timeout or limit) or `extra_body` sets `model`, `input` or `encoding_format`.
    pub fn with_settings(mut self, settings: &HttpSettings) -> Result<Self> {
        self.transport.apply(settings)?;
        Ok(self)
    }

    /// The [`HttpSettings`] in effect.
    pub fn settings(&self) -> HttpSettings {
        self.transport.settings()
    }

    /// Sets how many requests may be in flight at once across this embedder and its later clones
    /// ([`HttpSettings::max_requests_in_flight`], at least 1).
    #[must_use]
    pub fn with_max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.transport.set_max_in_flight(max_concurrency);
        self
    }

    /// Sets how many requests one batch may send in all (at least 1).
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

    /// Sets the timeout of each attempt ([`HttpSettings::request_timeout`]), from sending the
    /// request to reading the answer's last byte.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.transport.timeout = timeout;
        self
    }

    /// Sets how long an attempt may wait for a free request slot before it is sent
    /// ([`HttpSettings::queue_timeout`]).
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
    /// [`Error::Config`] when it sets `model`, `input` or `encoding_format`.
    pub fn with_extra_body(mut self, extra: Map<String, Value>) -> Result<Self> {
        self.transport.set_extra_body(extra)?;
        Ok(self)
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
        let mut body = Map::new();
        body.insert("model".into(), self.model.clone().into());
        body.insert("input".into(), texts.into());
        body.insert("encoding_format".into(), "float".into());
        if let Some(d) = self.dimensions {
            body.insert("dimensions".into(), d.into());
        }
        self.transport.merge_extra(&mut body);
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::Config(format!("cannot serialise the request: {e}")))?;
        self.transport
            .retry
            .run("embedding", &self.model, self.transport.endpoint(), || {
                self.attempt(&body, texts.len())
            })
            .await
    }

    async fn attempt(&self, body: &[u8], n: usize) -> Result<Vec<Vec<f32>>> {
        let bytes = self.transport.post(body).await?;
        self.parse(&bytes, n)
    }

    fn parse(&self, bytes: &[u8], n: usize) -> Result<Vec<Vec<f32>>> {
        let malformed = |problem: String| Error::MalformedResponse {
            problem,
            body: self.transport.snippet(bytes),
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
        if let Some(err) = value.get("error").filter(|_| value.get("data").is_none()) {
            let message = err
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| err.to_string(), str::to_owned);
            return Err(Error::Api {
                message: self.transport.redact(message),
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
        let mut d = f.debug_struct("OpenAiEmbedder");
        d.field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("batch_size", &self.batch_size);
        self.transport.debug_fields(&mut d);
        d.finish()
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
