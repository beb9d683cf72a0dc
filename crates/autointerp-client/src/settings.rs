//! The transport settings of the HTTP clients, as a config file or command line sets them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::redact::is_secret_name;
use crate::{Error, Result};

/// Default of [`HttpSettings::max_requests_in_flight`] for chat clients.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 32;
/// Default of [`HttpSettings::max_requests_in_flight`] for embedders
/// ([`HttpSettings::embeddings`]): each request already carries a batch of texts.
pub const DEFAULT_EMBEDDING_REQUESTS_IN_FLIGHT: usize = 8;
/// Default of [`HttpSettings::request_timeout`]: 120 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Default of [`HttpSettings::queue_timeout`]: one hour.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default of [`HttpSettings::max_response_bytes`]: 32 MiB, far above any chat or embedding answer
/// (a 256-text batch of 3072-dimension vectors is about 16 MB of JSON).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

/// How an HTTP client ([`crate::OpenAiClient`], [`crate::OpenAiEmbedder`]) uses its server: how
/// many requests it keeps in flight, how long each may take, how long one may wait to be sent,
/// how much of an answer it reads, and extra fields for every request body.
///
/// Apply with [`crate::OpenAiClient::with_settings`] or [`crate::OpenAiEmbedder::with_settings`]
/// (or [`crate::ModelSpec::client_with`]); each field also has its own builder there. In a
/// config file durations are seconds (`request_timeout_secs = 300`); missing fields take their
/// defaults, unknown fields are refused.
///
/// A request's life has two clocks:
/// - **queue** ([`HttpSettings::queue_timeout`]): from the call until the client admits the
///   request, i.e. one of the `max_requests_in_flight` slots frees up and the requests-per-minute
///   limit (if any) lets it start. Waiting here means this client is saturated, not that the
///   server is slow, so the allowance is long (an hour by default). Exceeding it fails the call
///   with [`Error::QueueTimeout`], which is not retried.
/// - **request** ([`HttpSettings::request_timeout`]): from sending the request to reading the
///   last byte of the answer, per attempt; exceeding it is an [`Error::Timeout`], retried.
///   Time the server keeps a request in its own queue counts here, since the client cannot tell
///   it apart: match `max_requests_in_flight` to what the server runs at once (vLLM's
///   `--max-num-seqs`, llama.cpp's `--parallel`) so that requests queue on this side instead.
///
/// ```
/// use autointerp_client::{HttpSettings, OpenAiClient};
/// use std::time::Duration;
///
/// let settings: HttpSettings = serde_json::from_str(
///     r#"{"max_requests_in_flight": 4, "request_timeout_secs": 300,
///         "extra_body": {"top_k": 20, "chat_template_kwargs": {"enable_thinking": false}}}"#,
/// )?;
/// assert_eq!(settings.request_timeout, Duration::from_secs(300));
/// assert_eq!(settings.queue_timeout, Duration::from_secs(3600), "a default");
/// let client = OpenAiClient::new("http://localhost:8000/v1", "Qwen3-8B")?.with_settings(&settings)?;
/// assert_eq!(client.settings(), settings);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Requests in flight at once, across the client and its clones; at least 1. Default 32 for
    /// chat, 8 for embeddings.
    pub max_requests_in_flight: usize,
    /// Longest time one attempt may take, from sending the request to the answer's last byte.
    /// More than zero; default 120 s. In files: `request_timeout_secs`.
    #[serde(rename = "request_timeout_secs", with = "secs")]
    pub request_timeout: Duration,
    /// Longest time one attempt may wait to be admitted (a free slot, the requests-per-minute
    /// limit) before it is sent; more than zero; default one hour. In files:
    /// `queue_timeout_secs`.
    #[serde(rename = "queue_timeout_secs", with = "secs")]
    pub queue_timeout: Duration,
    /// Most bytes of one answer the client reads, whatever its `Content-Length` says; a success
    /// answer above it fails with [`Error::ResponseTooLarge`]. More than zero; default 32 MiB.
    pub max_response_bytes: u64,
    /// Fields added to every request body, e.g. vLLM's `top_k` or `chat_template_kwargs`,
    /// OpenRouter's `provider`, a `user` tag. They replace the fields the client would have
    /// written under the same key (`max_tokens`, `temperature`, `dimensions`, …), and a
    /// [`crate::ChatRequest::extra`] key replaces them in turn; replacement is whole values, not
    /// a deep merge. The fields that make a request what it is are refused: `model` and
    /// `messages` and `stream` for chat (this client reads whole JSON answers, not event
    /// streams), `model`, `input` and `encoding_format` for embeddings.
    pub extra_body: Map<String, Value>,
}

impl Default for HttpSettings {
    /// The chat defaults: 32 in flight, 120 s per request, an hour in the queue, 32 MiB answers.
    fn default() -> Self {
        Self {
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            extra_body: Map::new(),
        }
    }
}

impl HttpSettings {
    /// The embedders' defaults: as [`HttpSettings::default`], with 8 requests in flight.
    pub fn embeddings() -> Self {
        Self {
            max_requests_in_flight: DEFAULT_EMBEDDING_REQUESTS_IN_FLIGHT,
            ..Self::default()
        }
    }

    /// Checks the settings for a client whose requests' own fields are `reserved`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field at fault: zero in flight, zero timeouts or body limit,
    /// or an `extra_body` key the client must write itself.
    pub(crate) fn check(&self, reserved: &[&str]) -> Result<()> {
        let bad = |problem: String| Err(Error::Config(problem));
        if self.max_requests_in_flight == 0 {
            return bad("max_requests_in_flight must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout_secs must be more than 0".into());
        }
        if self.queue_timeout.is_zero() {
            return bad("queue_timeout_secs must be more than 0".into());
        }
        if self.max_response_bytes == 0 {
            return bad("max_response_bytes must be more than 0".into());
        }
        check_extra_body(&self.extra_body, reserved)
    }
}

/// Refuses `extra_body` keys that the client must write itself.
pub(crate) fn check_extra_body(extra: &Map<String, Value>, reserved: &[&str]) -> Result<()> {
    match extra.keys().find(|k| reserved.contains(&k.as_str())) {
        Some(key) => Err(Error::Config(format!(
            "extra_body may not set `{key}`: the client writes {} itself",
            reserved
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Ok(()),
    }
}

/// `extra_body` as Debug shows it: a body field may carry a key (some providers take one there).
pub(crate) struct RedactedBody<'a>(pub &'a Map<String, Value>);

impl fmt::Debug for RedactedBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.0 {
            if is_secret_name(key) {
                map.entry(key, &format_args!("[redacted]"));
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("max_requests_in_flight", &self.max_requests_in_flight)
            .field("request_timeout", &self.request_timeout)
            .field("queue_timeout", &self.queue_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("extra_body", &RedactedBody(&self.extra_body))
            .finish()
    }
}

/// Durations as seconds (`300`, `0.5`) in config files.
mod secs {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        // Whole seconds stay integers, so a saved config reads `120`, not `120.0`.
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let x = f64::deserialize(d)?;
        // `Duration::from_secs_f64` panics on negative, NaN or huge values.
        Duration::try_from_secs_f64(x).map_err(|_| {
            de::Error::custom(format!(
                "expected a non-negative number of seconds, got {x}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_todays_behaviour_and_round_trip() {
        let s = HttpSettings::default();
        assert_eq!(s.max_requests_in_flight, 32);
        assert_eq!(s.request_timeout, Duration::from_secs(120));
        assert_eq!(HttpSettings::embeddings().max_requests_in_flight, 8);
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"request_timeout_secs\":120"), "{text}");
        assert_eq!(serde_json::from_str::<HttpSettings>(&text).unwrap(), s);
        assert_eq!(serde_json::from_str::<HttpSettings>("{}").unwrap(), s);
        let half: HttpSettings =
            serde_json::from_value(json!({"queue_timeout_secs": 0.5})).unwrap();
        assert_eq!(half.queue_timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_are_errors_naming_the_field() {
        // serde_json names no field in value errors; TOML points at the key.
        for (value, field) in [
            (json!({"request_timeout_secs": -1}), "non-negative"),
            (json!({"request_timeout_secs": 1e300}), "non-negative"),
            (json!({"max_requests_in_flight": -1}), "expected usize"),
            (json!({"timeout": 3}), "unknown field `timeout`"),
        ] {
            let err = serde_json::from_value::<HttpSettings>(value.clone()).unwrap_err();
            assert!(err.to_string().contains(field), "{value}: {err}");
        }
        for (settings, field) in [
            (
                HttpSettings {
                    max_requests_in_flight: 0,
                    ..HttpSettings::default()
                },
                "max_requests_in_flight",
            ),
            (
                HttpSettings {
                    request_timeout: Duration::ZERO,
                    ..HttpSettings::default()
                },
                "request_timeout_secs",
            ),
            (
                HttpSettings {
                    queue_timeout: Duration::ZERO,
                    ..HttpSettings::default()
                },
                "queue_timeout_secs",
            ),
            (
                HttpSettings {
                    max_response_bytes: 0,
                    ..HttpSettings::default()
                },
                "max_response_bytes",
            ),
        ] {
            let err = settings.check(&[]).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn reserved_extra_body_keys_are_refused_and_secrets_not_shown() {
        let mut s = HttpSettings::default();
        s.extra_body.insert("top_k".into(), 5.into());
        s.extra_body
            .insert("api_key".into(), "sk-body-secret".into());
        assert!(s.check(&["model", "messages"]).is_ok());
        let debug = format!("{s:?}");
        assert!(!debug.contains("sk-body-secret"), "{debug}");
        assert!(debug.contains("top_k"), "{debug}");
        s.extra_body.insert("messages".into(), json!([]));
        let err = s.check(&["model", "messages"]).unwrap_err().to_string();
        assert!(err.contains("`messages`"), "{err}");
    }
}
