//! Error shaping shared by the HTTP clients (chat and embeddings): both must report transport
//! failures the same way and never let the API key reach a message.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::redact::{redact_url, redact_urls_in, RedactedUrl};
use crate::settings::{check_extra_body, HttpSettings, RedactedBody};
use crate::Error;

/// Longest body excerpt kept in an error.
pub(crate) const SNIPPET_CHARS: usize = 512;

/// Most bytes of an error answer read: only a snippet of it is kept, so a huge error page need
/// not be read to its end.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// A transport failure as a typed error: a timeout, or a connection error whose message carries
/// the whole cause chain (reqwest's own message is generic: "error sending request").
pub(crate) fn transport_error(
    e: &reqwest::Error,
    timeout: Duration,
    secret: Option<&str>,
) -> Error {
    if e.is_timeout() {
        return Error::Timeout { after: timeout };
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Connection {
        message: redact(message, secret),
    }
}

/// The start of a body, as text, with the API key and URL credentials removed.
pub(crate) fn snippet(body: &[u8], secret: Option<&str>) -> String {
    let text = redact(String::from_utf8_lossy(body).into_owned(), secret);
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `text` with every occurrence of the API key replaced, and the credentials of any URL in it.
pub(crate) fn redact(text: String, secret: Option<&str>) -> String {
    let text = match secret {
        Some(secret) if !secret.is_empty() && text.contains(secret) => {
            text.replace(secret, "[redacted]")
        }
        _ => text,
    };
    redact_urls_in(&text)
}

/// An API key: where it came from, and the header it makes. Never printed.
#[derive(Clone)]
pub(crate) struct ApiKey {
    /// The environment variable it was read from, if any (safe to print).
    env_var: Option<String>,
    secret: String,
    header: HeaderValue,
}

impl ApiKey {
    /// The key in the environment variable `var`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `var` when it is unset, empty, not Unicode, or holds characters a
    /// header cannot carry.
    pub fn from_env(var: String) -> Result<Self, Error> {
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
        Self::new(secret, Some(var))
    }

    /// `secret` as a bearer token; `env_var` names where it came from.
    ///
    /// # Errors
    /// [`Error::Config`] when the key holds characters a header cannot carry.
    pub fn new(secret: String, env_var: Option<String>) -> Result<Self, Error> {
        let from = env_var
            .as_deref()
            .map_or_else(String::new, |v| format!(" from {v}"));
        let mut header = HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| {
            Error::Config(format!(
                "the API key{from} holds characters an HTTP header cannot carry"
            ))
        })?;
        header.set_sensitive(true);
        Ok(Self {
            env_var,
            secret,
            header,
        })
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

/// The part of a client that talks to one endpoint: the key, the limits shared by clones, the
/// timeouts and the body cap. Chat and embeddings share it so that both get the same guards.
#[derive(Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    endpoint: String,
    key: Option<ApiKey>,
    pub headers: HeaderMap,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    queue_timeout: Duration,
    max_response_bytes: u64,
    max_in_flight: usize,
    in_flight: Arc<Semaphore>,
    rpm: Option<Arc<RateLimiter>>,
    extra_body: Map<String, Value>,
    /// The body fields `extra_body` may not replace.
    reserved: &'static [&'static str],
}

impl Transport {
    /// A transport for `endpoint` (built from a base URL `http_client` checked) with `defaults`.
    pub fn new(
        http: reqwest::Client,
        endpoint: String,
        defaults: HttpSettings,
        reserved: &'static [&'static str],
    ) -> Self {
        Self {
            http,
            endpoint,
            key: None,
            headers: HeaderMap::new(),
            retry: RetryPolicy::default(),
            timeout: defaults.request_timeout,
            queue_timeout: defaults.queue_timeout,
            max_response_bytes: defaults.max_response_bytes,
            max_in_flight: defaults.max_requests_in_flight,
            in_flight: Arc::new(Semaphore::new(defaults.max_requests_in_flight)),
            rpm: None,
            extra_body: defaults.extra_body,
            reserved,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn set_key(&mut self, key: ApiKey) {
        self.key = Some(key);
    }

    /// Applies every setting; a new in-flight limit gives this transport a limiter of its own.
    pub fn apply(&mut self, settings: &HttpSettings) -> Result<(), Error> {
        settings.check(self.reserved)?;
        self.set_max_in_flight(settings.max_requests_in_flight);
        self.timeout = settings.request_timeout;
        self.queue_timeout = settings.queue_timeout;
        self.max_response_bytes = settings.max_response_bytes;
        self.extra_body = settings.extra_body.clone();
        Ok(())
    }

    pub fn settings(&self) -> HttpSettings {
        HttpSettings {
            max_requests_in_flight: self.max_in_flight,
            request_timeout: self.timeout,
            queue_timeout: self.queue_timeout,
            max_response_bytes: self.max_response_bytes,
            extra_body: self.extra_body.clone(),
        }
    }

    pub fn set_max_in_flight(&mut self, n: usize) {
        self.max_in_flight = n.clamp(1, Semaphore::MAX_PERMITS);
        self.in_flight = Arc::new(Semaphore::new(self.max_in_flight));
    }

    pub fn set_queue_timeout(&mut self, timeout: Duration) {
        self.queue_timeout = timeout;
    }

    pub fn set_max_response_bytes(&mut self, limit: u64) {
        self.max_response_bytes = limit.max(1);
    }

    pub fn set_extra_body(&mut self, extra: Map<String, Value>) -> Result<(), Error> {
        check_extra_body(&extra, self.reserved)?;
        self.extra_body = extra;
        Ok(())
    }

    pub fn extra_body(&self) -> &Map<String, Value> {
        &self.extra_body
    }

    pub fn set_requests_per_minute(&mut self, rpm: u32) {
        self.rpm = (rpm > 0).then(|| {
            Arc::new(RateLimiter {
                interval: Duration::from_secs(60) / rpm,
                next: Mutex::new(Instant::now()),
            })
        });
    }

    /// Adds `extra_body` to a body the client built: its keys replace the client's.
    pub fn merge_extra(&self, body: &mut Map<String, Value>) {
        for (key, value) in &self.extra_body {
            body.insert(key.clone(), value.clone());
        }
    }

    /// One attempt: wait to be admitted (within the queue allowance), then send `body` and read
    /// the answer (within the request timeout, which starts only once admitted). Returns the body
    /// of a success answer; 429 and other statuses become errors.
    pub async fn post(&self, body: &[u8]) -> Result<Vec<u8>, Error> {
        let admitted = async {
            let permit = self
                .in_flight
                .acquire()
                .await
                .map_err(|_| Error::Config("the concurrency limiter was closed".into()))?;
            if let Some(rpm) = &self.rpm {
                rpm.acquire().await;
            }
            Ok::<_, Error>(permit)
        };
        let _permit = tokio::time::timeout(self.queue_timeout, admitted)
            .await
            .map_err(|_| Error::QueueTimeout {
                waited: self.queue_timeout,
                max_in_flight: self.max_in_flight,
            })??;
        let exchange = async {
            let mut request = self
                .http
                .post(&self.endpoint)
                .headers(self.headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
            if let Some(key) = &self.key {
                request = request.header(AUTHORIZATION, key.header.clone());
            }
            let response = request.send().await.map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let bytes = self.read_body(response).await?;
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
        Ok(bytes)
    }

    /// Reads at most `max_response_bytes` of a success answer (an error if there is more, before
    /// reading it when `Content-Length` says so), and the start of an error answer. A server that
    /// declares 1 GiB, or streams a chunked body that never ends, costs at most the limit.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
        let limit = usize::try_from(self.max_response_bytes).unwrap_or(usize::MAX);
        let success = response.status().is_success();
        let too_large = |declared: Option<u64>| Error::ResponseTooLarge {
            url: redact_url(&self.endpoint),
            limit: self.max_response_bytes,
            declared,
        };
        let declared = response.content_length();
        if success && declared.is_some_and(|n| n > self.max_response_bytes) {
            return Err(too_large(declared));
        }
        let keep = if success {
            limit
        } else {
            limit.min(ERROR_BODY_BYTES)
        };
        let expected = declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut body = Vec::with_capacity(expected.min(keep));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e))?
        {
            let room = keep - body.len();
            if chunk.len() > room {
                if success {
                    return Err(too_large(declared));
                }
                body.extend_from_slice(&chunk[..room]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn secret(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.secret.as_str())
    }

    pub fn transport_error(&self, e: &reqwest::Error) -> Error {
        transport_error(e, self.timeout, self.secret())
    }

    pub fn snippet(&self, body: &[u8]) -> String {
        snippet(body, self.secret())
    }

    pub fn redact(&self, text: String) -> String {
        redact(text, self.secret())
    }

    /// The fields every client's `Debug` shows, none of them secret.
    pub fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("endpoint", &RedactedUrl(&self.endpoint))
            .field("api_key", &self.key)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("queue_timeout", &self.queue_timeout)
            .field("max_requests_in_flight", &self.max_in_flight)
            .field("max_response_bytes", &self.max_response_bytes)
            .field(
                "requests_per_minute",
                &self.rpm.as_ref().map(|r| r.per_minute()),
            )
            .field("extra_body", &RedactedBody(&self.extra_body));
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

/// How a failed request is retried, the same for chat and embeddings: up to `max_attempts`
/// attempts on retryable errors (429, 5xx, timeouts, dropped connections), waiting a random time
/// in `[0, min(max_delay, base_delay · 2^(attempt-1))]` between them (full jitter), or as long as
/// the server's `Retry-After` asks, up to `max_retry_after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before the attempt after `attempt` (1-based) failed with `error`.
    pub fn delay(&self, attempt: u32, error: &Error) -> Duration {
        if let Error::RateLimited {
            retry_after: Some(wait),
            ..
        } = error
        {
            return (*wait).min(self.max_retry_after);
        }
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        exp.min(self.max_delay).mul_f64(rand::random::<f64>())
    }

    /// Runs `attempt` until it succeeds, fails with an error that is not worth retrying, or the
    /// attempts run out ([`Error::RetriesExhausted`] with the last error, after more than one).
    /// `what`, `model` and `url` name the request in the log line of each retry.
    pub async fn run<T, F, Fut>(
        &self,
        what: &str,
        model: &str,
        url: &str,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) if n >= self.max_attempts => {
                    return Err(if n == 1 {
                        e
                    } else {
                        Error::RetriesExhausted {
                            attempts: n,
                            last: Box::new(e),
                        }
                    });
                }
                Err(e) => {
                    let delay = self.delay(n, &e);
                    tracing::warn!(
                        model,
                        url = %RedactedUrl(url),
                        attempt = n,
                        max_attempts = self.max_attempts,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "{what} request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
            }
        }
    }
}

/// The wait a response asks for: `retry-after-ms` (OpenAI) or `Retry-After` in seconds. HTTP
/// dates are not read.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    // A server may send anything here (`1e20` made `Duration::from_secs_f64` panic): values are
    // capped at a day before they become durations; callers cap the wait further.
    const MAX_SECS: f64 = 86_400.0;
    let number = |name: &str| -> Option<f64> {
        let x: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (x.is_finite() && x >= 0.0).then_some(x)
    };
    let secs = |s: f64| Duration::from_secs_f64(s.min(MAX_SECS));
    number("retry-after-ms")
        .map(|ms| secs(ms / 1e3))
        .or_else(|| number("retry-after").map(secs))
}

/// `base_url` with `path` appended to its path and its query kept where servers expect it:
/// `http://h/v1?api-version=1` and `chat/completions` make
/// `http://h/v1/chat/completions?api-version=1`. A fragment is never sent, so it is dropped.
pub(crate) fn endpoint(base_url: &str, path: &str) -> String {
    let base = base_url.split_once('#').map_or(base_url, |(b, _)| b);
    match base.split_once('?') {
        Some((at, query)) => format!("{}/{path}?{query}", at.trim_end_matches('/')),
        None => format!("{}/{path}", base.trim_end_matches('/')),
    }
}

/// `base_url` without its trailing slash, checked to be an http(s) URL, and an HTTP client.
pub(crate) fn http_client(base_url: String) -> Result<(String, reqwest::Client), Error> {
    let base_url = base_url.trim_end_matches('/').to_owned();
    match reqwest::Url::parse(&base_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => {
            return Err(Error::Config(format!(
                "base URL `{}` is not an http(s) URL",
                redact_url(&base_url)
            )))
        }
    }
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
    Ok((base_url, http))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn endpoints_keep_the_query_after_the_path() {
        for (base, want) in [
            ("http://h/v1", "http://h/v1/embeddings"),
            (
                "http://h/v1?api-version=2&key=k",
                "http://h/v1/embeddings?api-version=2&key=k",
            ),
            ("http://h/v1/?key=k", "http://h/v1/embeddings?key=k"),
            ("http://h/v1#frag", "http://h/v1/embeddings"),
        ] {
            assert_eq!(endpoint(base, "embeddings"), want, "{base}");
        }
    }

    #[test]
    fn absurd_retry_after_values_are_capped_not_a_panic() {
        for (name, value, want) in [
            ("retry-after", "1e20", Some(86_400.0)),
            ("retry-after-ms", "1e300", Some(86_400.0)),
            ("retry-after", "2.5", Some(2.5)),
            ("retry-after", "-1", None),
            ("retry-after", "inf", None),
            ("retry-after", "NaN", None),
            ("retry-after", "soon", None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            let got = retry_after(&headers).map(|d| d.as_secs_f64());
            assert_eq!(got, want, "{name}: {value}");
        }
    }
}
