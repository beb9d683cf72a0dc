//! Error shaping shared by the HTTP clients (chat and embeddings): both must report transport
//! failures the same way and never let the API key reach a message.

use std::future::Future;
use std::time::Duration;

use crate::Error;

/// Longest body excerpt kept in an error.
pub(crate) const SNIPPET_CHARS: usize = 512;

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

/// The start of a body, as text, with the API key removed.
pub(crate) fn snippet(body: &[u8], secret: Option<&str>) -> String {
    let text = redact(String::from_utf8_lossy(body).into_owned(), secret);
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `text` with every occurrence of the API key replaced.
pub(crate) fn redact(text: String, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() && text.contains(secret) => {
            text.replace(secret, "[redacted]")
        }
        _ => text,
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
    /// `what` and `model` name the request in the log line of each retry.
    pub async fn run<T, F, Fut>(&self, what: &str, model: &str, mut attempt: F) -> Result<T, Error>
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

/// `base_url` without its trailing slash, checked to be an http(s) URL, and an HTTP client.
pub(crate) fn http_client(base_url: String) -> Result<(String, reqwest::Client), Error> {
    let base_url = base_url.trim_end_matches('/').to_owned();
    match reqwest::Url::parse(&base_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => {
            return Err(Error::Config(format!(
                "base URL `{base_url}` is not an http(s) URL"
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
