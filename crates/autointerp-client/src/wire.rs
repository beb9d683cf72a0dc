//! The OpenAI chat-completions wire format: the request body we send and a tolerant reading of
//! the answers OpenAI, OpenRouter, vLLM, SGLang, llama.cpp and Ollama give.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::{ChatRequest, ChatResponse, TokenLogprobs, Usage};

/// Builds the JSON body of `POST /chat/completions`: the typed fields of `req`, then the client's
/// `provider_extra` (its `extra_body`), then `req.extra`, each replacing what came before under
/// the same key.
pub(crate) fn request_body(
    model: &str,
    req: &ChatRequest,
    provider_extra: &Map<String, Value>,
) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    let messages = serde_json::to_value(&req.messages).unwrap_or_else(|_| Value::Array(Vec::new()));
    body.insert("messages".into(), messages);
    if let Some(n) = req.max_tokens {
        body.insert("max_tokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), f64::from(t).into());
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), f64::from(p).into());
    }
    if !req.stop.is_empty() {
        body.insert("stop".into(), req.stop.clone().into());
    }
    if let Some(seed) = req.seed {
        body.insert("seed".into(), seed.into());
    }
    if let Some(k) = req.logprobs {
        body.insert("logprobs".into(), true.into());
        body.insert("top_logprobs".into(), k.into());
    }
    if let Some(k) = req.prompt_logprobs {
        body.insert("prompt_logprobs".into(), k.into());
    }
    for (key, value) in provider_extra.iter().chain(&req.extra) {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

/// Why a success body could not be turned into a [`ChatResponse`].
#[derive(Debug)]
pub(crate) enum ParseError {
    /// Not a chat completion: the text says why.
    Malformed(String),
    /// An error object instead of a completion.
    Api { message: String, code: Option<i64> },
}

/// Reads a chat-completion body. `prompt_top_k` is the `prompt_logprobs` asked for: vLLM's
/// per-position dictionaries hold the prompt token itself besides the top `k`.
/// `usage.cost` is left as the server reported it.
pub(crate) fn parse_response(
    body: &[u8],
    prompt_top_k: Option<u8>,
) -> Result<ChatResponse, ParseError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::Malformed(format!("invalid JSON: {e}")))?;
    if let Some(err) = api_error(&value) {
        return Err(err);
    }
    // Read again from the bytes, not from `value`: serde_json's maps are sorted, and the order of
    // vLLM's prompt-logprob objects matters.
    drop(value);
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| ParseError::Malformed(format!("unexpected shape: {e}")))?;
    let Some(choice) = wire.choices.into_iter().next() else {
        return Err(ParseError::Malformed("no choices".into()));
    };
    let text = choice
        .message
        .and_then(|m| m.content)
        .or(choice.text)
        .unwrap_or_default();
    let logprobs = choice.logprobs.and_then(|l| l.content).map(|tokens| {
        tokens
            .into_iter()
            .map(|t| TokenLogprobs {
                token: t.token,
                logprob: logprob(t.logprob),
                top: t
                    .top_logprobs
                    .into_iter()
                    .map(|a| (a.token, logprob(a.logprob)))
                    .collect(),
            })
            .collect()
    });
    let prompt_logprobs = wire
        .prompt_logprobs
        .or(choice.prompt_logprobs)
        .map(|positions| {
            positions
                .into_iter()
                .map(|p| p.and_then(|p| p.into_token(prompt_top_k)))
                .collect()
        });
    let usage = wire.usage.unwrap_or_default();
    Ok(ChatResponse {
        text,
        logprobs,
        prompt_logprobs,
        usage: Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost: usage.cost,
        },
        finish_reason: choice.finish_reason,
    })
}

/// An error object in place of a completion: OpenAI/OpenRouter's `{"error": {..}}` or vLLM's
/// `{"object": "error", "message": ..}`.
fn api_error(value: &Value) -> Option<ParseError> {
    let obj = value.as_object()?;
    if obj.contains_key("choices") {
        return None;
    }
    let err = match obj.get("error") {
        Some(err) => err,
        None if obj.get("object").and_then(Value::as_str) == Some("error") => value,
        None => return None,
    };
    let message = match err {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => err.to_string(),
        },
        other => other.to_string(),
    };
    let code = err.get("code").and_then(|c| match c {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    Some(ParseError::Api { message, code })
}

/// A missing (`null`) log-probability is read as impossible.
fn logprob(x: Option<f64>) -> f32 {
    x.map_or(f32::NEG_INFINITY, |x| x as f32)
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    prompt_logprobs: Option<Vec<Option<PromptPosition>>>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    /// Completion-style servers put the text here.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<WireLogprobs>,
    #[serde(default)]
    prompt_logprobs: Option<Vec<Option<PromptPosition>>>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireLogprobs {
    #[serde(default)]
    content: Option<Vec<WireToken>>,
}

#[derive(Deserialize)]
struct WireToken {
    token: String,
    #[serde(default)]
    logprob: Option<f64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    top_logprobs: Vec<WireAlternative>,
}

#[derive(Deserialize)]
struct WireAlternative {
    token: String,
    #[serde(default)]
    logprob: Option<f64>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    cost: Option<f64>,
}

fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// One position of vLLM's `prompt_logprobs`: `{token_id: {logprob, rank, decoded_token}}`, with the
/// prompt token first, then the top `k` (the prompt token appears once if it is among them). The
/// JSON object's order matters, so it is read into a list rather than a map.
struct PromptPosition(Vec<(String, PromptEntry)>);

#[derive(Deserialize)]
#[serde(untagged)]
enum PromptEntry {
    Full {
        #[serde(default)]
        logprob: Option<f64>,
        #[serde(default)]
        rank: Option<u64>,
        #[serde(default)]
        decoded_token: Option<String>,
    },
    Bare(Option<f64>),
}

impl PromptEntry {
    fn logprob(&self) -> f32 {
        match self {
            PromptEntry::Full { logprob: l, .. } | PromptEntry::Bare(l) => logprob(*l),
        }
    }
    fn rank(&self) -> Option<u64> {
        match self {
            PromptEntry::Full { rank, .. } => *rank,
            PromptEntry::Bare(_) => None,
        }
    }
}

fn entry_text(id: &str, entry: &PromptEntry) -> String {
    match entry {
        PromptEntry::Full {
            decoded_token: Some(t),
            ..
        } => t.clone(),
        _ => id.to_owned(),
    }
}

impl PromptPosition {
    fn into_token(self, top_k: Option<u8>) -> Option<TokenLogprobs> {
        let (first_id, first) = self.0.first()?;
        let token = entry_text(first_id, first);
        let lp = first.logprob();
        let mut ranked: Vec<&(String, PromptEntry)> = self.0.iter().collect();
        // Best first; entries without a rank keep their order, after the ranked ones.
        ranked.sort_by_key(|(_, e)| e.rank().unwrap_or(u64::MAX));
        let top = ranked
            .into_iter()
            .filter(|(_, e)| match (e.rank(), top_k) {
                (Some(rank), Some(k)) => rank <= u64::from(k),
                _ => true,
            })
            .map(|(id, e)| (entry_text(id, e), e.logprob()))
            .collect();
        Some(TokenLogprobs {
            token,
            logprob: lp,
            top,
        })
    }
}

impl<'de> Deserialize<'de> for PromptPosition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;
        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = PromptPosition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of token id to logprob")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PromptPosition, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<String, PromptEntry>()? {
                    entries.push((k, v));
                }
                Ok(PromptPosition(entries))
            }
        }
        d.deserialize_map(OrderedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autointerp_core::Message;

    #[test]
    fn body_has_typed_fields_then_extra() {
        let req = ChatRequest::new(vec![Message::user("hi")])
            .with_max_tokens(3)
            .with_logprobs(2)
            .with_prompt_logprobs(1)
            .with_stop("\n")
            .with_extra("top_k", 5)
            .with_extra("max_tokens", 7);
        let mut provider = Map::new();
        provider.insert("top_k".into(), 9.into());
        provider.insert("temperature".into(), 0.5.into());
        let body = request_body("m", &req, &provider);
        assert_eq!(body["model"], "m");
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["logprobs"], true);
        assert_eq!(body["top_logprobs"], 2);
        assert_eq!(body["prompt_logprobs"], 1);
        assert_eq!(body["stop"][0], "\n");
        assert_eq!(
            body["top_k"], 5,
            "the request's extra overrides the client's"
        );
        assert_eq!(body["max_tokens"], 7, "extra overrides typed fields");
        assert_eq!(body["temperature"], 0.5, "the client's extra is kept");
    }

    #[test]
    fn reads_generated_and_prompt_logprobs() {
        let body = br#"{
            "choices": [{"message": {"role": "assistant", "content": "Yes"}, "finish_reason": "stop",
              "logprobs": {"content": [{"token": "Yes", "logprob": -0.1, "bytes": [89],
                 "top_logprobs": [{"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.4}]}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            "prompt_logprobs": [null,
              {"9": {"logprob": -5.0, "rank": 7, "decoded_token": "b"},
               "3": {"logprob": -0.5, "rank": 1, "decoded_token": "x"}},
              {"4": {"logprob": -0.2, "rank": 1, "decoded_token": "c"}}]
        }"#;
        let r = parse_response(body, Some(1)).unwrap();
        assert_eq!(r.text, "Yes");
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        let lp = r.logprobs.unwrap();
        assert_eq!(lp[0].token, "Yes");
        assert_eq!(lp[0].top[1], ("No".to_owned(), -2.4));
        let p = r.prompt_logprobs.unwrap();
        assert_eq!(p.len(), 3);
        assert!(p[0].is_none());
        let p1 = p[1].as_ref().unwrap();
        assert_eq!((p1.token.as_str(), p1.logprob), ("b", -5.0));
        assert_eq!(p1.top, vec![("x".to_owned(), -0.5)]);
        assert_eq!(p[2].as_ref().unwrap().top, vec![("c".to_owned(), -0.2)]);
        assert_eq!(r.usage.prompt_tokens, 3);
    }

    #[test]
    fn tolerates_nulls_and_missing_fields() {
        let body = br#"{"choices": [{"message": {"content": null}, "logprobs": null}]}"#;
        let r = parse_response(body, None).unwrap();
        assert_eq!(r.text, "");
        assert!(r.logprobs.is_none());
        assert_eq!(r.usage, Usage::default());
        let body = br#"{"choices": [{"message": {"content": "a"},
            "logprobs": {"content": [{"token": "a", "logprob": null, "top_logprobs": null}]}}]}"#;
        let r = parse_response(body, None).unwrap();
        assert_eq!(r.logprobs.unwrap()[0].logprob, f32::NEG_INFINITY);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [
            &b"{\"choices\": [{\"message\": {\"content\": \"tru"[..],
            b"not json",
            b"{}",
            b"{\"choices\": []}",
            b"{\"choices\": 3}",
            b"[]",
            b"",
        ] {
            assert!(
                matches!(parse_response(body, None), Err(ParseError::Malformed(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn error_objects_are_api_errors() {
        let body = br#"{"error": {"message": "upstream overloaded", "code": 502}}"#;
        match parse_response(body, None) {
            Err(ParseError::Api { message, code }) => {
                assert_eq!(message, "upstream overloaded");
                assert_eq!(code, Some(502));
            }
            other => panic!("{other:?}"),
        }
        let body = br#"{"object": "error", "message": "bad", "code": 400}"#;
        assert!(matches!(
            parse_response(body, None),
            Err(ParseError::Api {
                code: Some(400),
                ..
            })
        ));
    }
}
