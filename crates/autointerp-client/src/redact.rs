//! Credentials that ride in URLs (`https://user:pass@host`, `?api_key=…`, `&token=…`) kept out of
//! everything this crate prints or returns, and out of what other crates save or show (a run's
//! saved config, a report).

use std::fmt;

/// What replaces a secret.
const REDACTED: &str = "[redacted]";

/// `url` with its credentials replaced by `[redacted]`: the password of `user:pass@` (the whole
/// user part when it has no `:`, since `https://TOKEN@host` is a common form), and the value of
/// every query or fragment parameter whose name looks like a secret (`key`, `api_key`,
/// `api-key`, `token`, `access_token`, `secret`, `password`, `auth`, `sig`, `signature`,
/// `credential`, `session`, …, matched as substrings, ignoring case).
///
/// Anything else is kept byte for byte, so the result still tells which server and path were
/// asked. The text need not be a valid URL: a model spec such as
/// `openai:http://u:p@host/v1/model` is redacted the same way, and text without `://` only has
/// its query parameters redacted. It never fails.
///
/// ```
/// use autointerp_client::redact_url;
///
/// assert_eq!(
///     redact_url("https://bob:hunter2@api.example.com/v1?api_key=sk-1&model=m"),
///     "https://bob:[redacted]@api.example.com/v1?api_key=[redacted]&model=m"
/// );
/// assert_eq!(redact_url("http://localhost:8000/v1"), "http://localhost:8000/v1");
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    let rest = if head.is_empty() {
        rest
    } else {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                // `user:pass` keeps the user; a lone user part may be the token itself.
                if let Some((user, _)) = userinfo.split_once(':') {
                    out.push_str(user);
                    out.push(':');
                }
                out.push_str(REDACTED);
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        after
    };
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            push_params(&mut out, query);
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        // OAuth's implicit flow returns `#access_token=…`.
        push_params(&mut out, fragment);
    }
    out
}

/// `&`-separated `name=value` pairs, with the values of secret-looking names redacted.
fn push_params(out: &mut String, params: &str) {
    for (i, pair) in params.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_secret_name(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
}

/// Whether a parameter or body field of this name may hold a credential. Deliberately broad
/// (`author` matches `auth`): hiding a harmless value costs less than printing a key.
pub(crate) fn is_secret_name(name: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "key",
        "token",
        "secret",
        "passw",
        "pwd",
        "auth",
        "sig",
        "credential",
        "session",
    ];
    let name = name.to_ascii_lowercase();
    MARKERS.iter().any(|m| name.contains(m))
}

/// A URL that displays (and debugs) with its credentials redacted, as [`redact_url`] does, without
/// building the redacted string until it is printed.
///
/// ```
/// use autointerp_client::RedactedUrl;
///
/// let url = "https://api.example.com/v1?key=sk-1";
/// assert_eq!(RedactedUrl(url).to_string(), "https://api.example.com/v1?key=[redacted]");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RedactedUrl<'a>(pub &'a str);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.0))
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(self.0), f)
    }
}

/// `text` with every `http://` or `https://` URL in it redacted. The HTTP stack's messages name
/// the URL they failed on ("error sending request for url (http://u:p@host/…)").
pub(crate) fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        // Where a URL ends in prose: whitespace, quotes, or the brackets messages wrap it in.
        // `[` and `]` are not among them: IPv6 hosts use them.
        let end = tail
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '(' | ')')
            })
            .unwrap_or(tail.len());
        out.push_str(&redact_url(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The byte offset of the first `http://` or `https://` in `text`, in any case.
fn find_url(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        for (url, want) in [
            (
                "https://user:pass@host:8000/v1/chat",
                "https://user:[redacted]@host:8000/v1/chat",
            ),
            ("https://ghp_TOKEN@host/v1", "https://[redacted]@host/v1"),
            ("http://u:p@h", "http://u:[redacted]@h"),
            (
                "https://h/v1?key=AIza123&alt=json",
                "https://h/v1?key=[redacted]&alt=json",
            ),
            (
                "https://h/v1?api-version=2024&API_KEY=x&token=t&access_token=a",
                "https://h/v1?api-version=2024&API_KEY=[redacted]&token=[redacted]&access_token=[redacted]",
            ),
            (
                "https://s3/x?X-Amz-Credential=c&X-Amz-Signature=s&part=1",
                "https://s3/x?X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]&part=1",
            ),
            (
                "https://h/cb#access_token=abc&state=1",
                "https://h/cb#access_token=[redacted]&state=1",
            ),
            // `@` in the path is not userinfo.
            ("https://h/v1/@user", "https://h/v1/@user"),
            ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
            (
                "openai:http://u:p@h/v1/Qwen2.5-7B",
                "openai:http://u:[redacted]@h/v1/Qwen2.5-7B",
            ),
            ("not a url ?token=t", "not a url ?token=[redacted]"),
            ("https://h/v1?token=", "https://h/v1?token="),
            ("", ""),
            ("http://", "http://"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
            assert_eq!(RedactedUrl(url).to_string(), want, "{url}");
        }
    }

    #[test]
    fn urls_inside_messages_are_redacted() {
        let text = "error sending request for url (http://u:secret@127.0.0.1:9/v1/chat/completions?key=k1): \
                    see HTTPS://h/?token=t2 \"https://a:b@c\"";
        let got = redact_urls_in(text);
        for secret in ["secret", "k1", "t2", ":b@"] {
            assert!(!got.contains(secret), "{secret} in {got}");
        }
        assert!(
            got.contains("(http://u:[redacted]@127.0.0.1:9/v1/chat/completions?key=[redacted])")
        );
        assert_eq!(redact_urls_in("no urls here"), "no urls here");
    }
}
