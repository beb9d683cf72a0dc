use std::time::Duration;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when asking a model for a chat completion.
///
/// No variant ever carries an API key: bodies are cut to a short snippet and any occurrence of the
/// configured key is redacted before it is stored, and URLs are shown with their credentials
/// redacted ([`crate::redact_url`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a non-success status other than 429.
    #[error("HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The server answered 429 Too Many Requests.
    #[error("rate limited (HTTP 429{}): {body}", retry_after_text(*.retry_after))]
    RateLimited {
        /// What the server's `Retry-After` (or `retry-after-ms`) header asked for, if anything.
        retry_after: Option<Duration>,
        /// The start of the response body.
        body: String,
    },
    /// No complete answer arrived within the per-request timeout.
    #[error("request timed out after {after:?}")]
    Timeout {
        /// The timeout that fired.
        after: Duration,
    },
    /// The request waited longer than the queue allowance
    /// ([`crate::HttpSettings::queue_timeout`]) to be admitted by this client's own limits (the
    /// requests in flight, the requests per minute) and was never sent. Not retried: the client
    /// is saturated, and another attempt would queue again.
    #[error(
        "waited {waited:?} for one of {max_in_flight} request slots and was not sent \
         (queue_timeout_secs); raise queue_timeout_secs or max_requests_in_flight"
    )]
    QueueTimeout {
        /// How long it waited: the queue allowance.
        waited: Duration,
        /// The configured requests in flight.
        max_in_flight: usize,
    },
    /// A success answer was longer than [`crate::HttpSettings::max_response_bytes`] (declared by
    /// its `Content-Length`, or found while reading it); the rest was not read. Not retried.
    #[error(
        "the answer from {url} is larger than the limit of {limit} bytes (max_response_bytes){}",
        declared_text(*.declared)
    )]
    ResponseTooLarge {
        /// The URL asked, credentials redacted.
        url: String,
        /// The limit.
        limit: u64,
        /// The length the server declared, if it declared one.
        declared: Option<u64>,
    },
    /// The connection could not be made, or was dropped before the answer was complete.
    #[error("connection error: {message}")]
    Connection {
        /// What the HTTP stack reported.
        message: String,
    },
    /// The server answered with success, but the body is not a chat completion we can read:
    /// invalid or truncated JSON, no choices, wrong field types.
    #[error("malformed response: {problem}; body starts with: {body}")]
    MalformedResponse {
        /// What is wrong with it.
        problem: String,
        /// The start of the response body.
        body: String,
    },
    /// The server answered with an error object (`{"error": {"message": ..}}`) in a success body,
    /// as OpenRouter does for errors from the upstream provider.
    #[error("API error{}: {message}", code_text(*.code))]
    Api {
        /// The error's message.
        message: String,
        /// The error's numeric code, when the server gave one (often an HTTP status).
        code: Option<i64>,
    },
    /// Every allowed attempt failed with a retryable error; `last` is the final one.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many requests were sent.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<Error>,
    },
    /// The client is misconfigured: a missing API key variable, an invalid base URL or header.
    #[error("configuration error: {0}")]
    Config(String),
    /// A model spec ([`crate::ModelSpec`]) that cannot be parsed, or that no HTTP client can ask.
    #[error("model spec {spec:?}: {problem}")]
    ModelSpec {
        /// The spec given.
        spec: String,
        /// What is wrong with it, and the accepted forms.
        problem: String,
    },
    /// The in-process engine (feature `local`) failed: loading the model, libtorch, the
    /// tokenizer, or a request it cannot serve (a prompt longer than the model's context, a
    /// token id beyond its vocabulary).
    #[error("local engine: {problem}")]
    Engine {
        /// What went wrong.
        problem: String,
    },
    /// The model's chat template is missing, does not compile, or failed to render (including a
    /// `raise_exception` from the template itself).
    #[error("chat template: {problem}")]
    ChatTemplate {
        /// What went wrong.
        problem: String,
    },
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| format!(", retry after {d:?}"))
}

fn declared_text(declared: Option<u64>) -> String {
    declared.map_or_else(String::new, |n| format!("; it declared {n} bytes"))
}

fn code_text(code: Option<i64>) -> String {
    code.map_or_else(String::new, |c| format!(" {c}"))
}

impl Error {
    /// Whether sending the same request again may succeed: rate limits, 5xx statuses, timeouts,
    /// dropped connections, and API error objects whose code is 429 or 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http { status, .. } => *status >= 500,
            Error::RateLimited { .. } | Error::Timeout { .. } | Error::Connection { .. } => true,
            Error::Api {
                code: Some(code), ..
            } => *code == 429 || (500..600).contains(code),
            _ => false,
        }
    }

    /// The error behind any [`Error::RetriesExhausted`] wrapper.
    pub fn root(&self) -> &Error {
        match self {
            Error::RetriesExhausted { last, .. } => last.root(),
            other => other,
        }
    }
}
