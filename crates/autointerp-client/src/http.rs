//! Error shaping shared by the HTTP clients (chat and embeddings): both must report transport
//! failures the same way and never let the API key reach a message.

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
