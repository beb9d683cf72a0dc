//! What the `run_*` tests share: a tiny latent cache with a word-level tokenizer, and an
//! OpenAI-compatible server that answers explainer and scorer prompts from their text, with an
//! optional fault-injecting mode.
//!
//! In the fixture, latent `i` fires exactly on the word `WORDS[i]` (every occurrence, activation
//! 1–5), so a "perfect" LLM explains it as `the word <w>` and scores that explanation right.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autointerp_core::split::{Location, Split, Tokens};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The words latents fire on, in latent order.
pub const WORDS: [&str; 24] = [
    "river", "apple", "violin", "copper", "tiger", "winter", "castle", "pepper", "rocket",
    "meadow", "harbor", "lantern", "glacier", "walnut", "falcon", "canyon", "saddle", "marble",
    "cobalt", "thistle", "beacon", "orchid", "quartz", "tundra",
];

/// Words no latent fires on.
const FILLERS: [&str; 12] = [
    "the", "a", "of", "and", "to", "in", "is", "was", "on", "for", "with", "at",
];

/// The hook point of the fixture cache.
pub const HOOK: &str = "layers.0";

/// The flags that make the fixture's latents (16 activating windows each) into records.
pub const RECORD_FLAGS: [&str; 12] = [
    "--example-ctx-len",
    "8",
    "--min-examples",
    "8",
    "--n-examples-train",
    "4",
    "--n-examples-test",
    "4",
    "--n-non-activating",
    "4",
    "--n-quantiles",
    "2",
];

/// The latent id of latent `i`, as file names spell it.
pub fn latent(i: usize) -> String {
    format!("{HOOK}_latent{i}")
}

/// Writes a word-level `tokenizer.json` into `dir` (ids: `<unk>`, then `WORDS`, then fillers; each
/// token is a word with a leading space, so decoded examples read as text).
pub fn write_tokenizer(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), json!(0));
    for (i, w) in WORDS.iter().chain(&FILLERS).enumerate() {
        vocab.insert(format!(" {w}"), json!(i + 1));
    }
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

/// Writes a cache of `n_latents` latents (at most 24) of hook point `layers.0` under
/// `<root>/latents/layers.0/`, whose `config.json` names `tokenizer_dir` as the model.
///
/// Rows of 16 tokens; a latent word at positions 1, 5, 9, 13 of each row, fillers elsewhere; each
/// latent's word appears once in each of 16 rows, in its own 8-token window.
pub fn write_cache(root: &Path, n_latents: usize, tokenizer_dir: &Path) {
    assert!((4..=WORDS.len()).contains(&n_latents) && n_latents.is_multiple_of(4));
    let ctx_len = 16;
    let rows = 16 * n_latents / 4;
    let mut ids = Vec::with_capacity(rows * ctx_len);
    let mut locations = Vec::new();
    let mut activations = Vec::new();
    for r in 0..rows {
        for p in 0..ctx_len {
            if p % 4 == 1 {
                let l = (r * 4 + p / 4) % n_latents;
                ids.push(l as u32 + 1);
                locations.push(Location {
                    row: r as u32,
                    position: p as u32,
                    latent: l as u32,
                });
                activations.push(1.0 + ((r * 7 + l) % 5) as f32);
            } else {
                ids.push((WORDS.len() + 1 + (r * 3 + p) % FILLERS.len()) as u32);
            }
        }
    }
    let dir = root.join("latents").join(HOOK);
    std::fs::create_dir_all(&dir).unwrap();
    let split = Split {
        start: 0,
        end: n_latents as u32 - 1,
        locations,
        activations,
        tokens: Some(Tokens { rows, ctx_len, ids }),
    };
    split.write_to_dir(&dir).unwrap();
    let config = json!({"model_name": tokenizer_dir, "ctx_len": ctx_len, "n_splits": 1});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// A tiny random llama (autointerp-model's test fixture) in `dir`, with the test tokenizer and a
/// plain chat template.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../autointerp-model/tests/fixtures/llama");
    let model = dir.join("tiny-llama");
    write_tokenizer(&model);
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("config.json")).unwrap()).unwrap();
    // Room for the explainer's few-shot prompt.
    config["max_position_embeddings"] = json!(4096);
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        fixture.join("model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    let template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}\
                    {% if add_generation_prompt %}assistant:{% endif %}";
    std::fs::write(
        model.join("tokenizer_config.json"),
        json!({ "chat_template": template }).to_string(),
    )
    .unwrap();
    model
}

/// A text of `n` words of the fixture's vocabulary, in a fixed pseudo-random order.
pub fn text(n: usize) -> String {
    let all: Vec<&str> = WORDS.iter().chain(&FILLERS).copied().collect();
    let mut x: u64 = 22;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            all[(x >> 33) as usize % all.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `run TOKENIZER unused --results-dir RESULTS --name NAME --hookpoints layers.0
/// --explainer-model m --explainer-base-url URL`: a run over a cache of [`write_cache`] (whose
/// model argument only names the tokenizer) against a test server; callers add their flags.
#[allow(dead_code)]
pub fn run_args<'a>(tok: &'a str, results: &'a str, name: &'a str, url: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        tok,
        "unused",
        "--results-dir",
        results,
        "--name",
        name,
        "--hookpoints",
        HOOK,
        "--explainer-model",
        "m",
        "--explainer-base-url",
        url,
    ]
}

/// Runs the `autointerp` binary to the end.
pub fn autointerp(args: &[&str]) -> Output {
    command(args).output().expect("run autointerp")
}

/// The `autointerp` binary with `args`, not started.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autointerp"));
    c.args(args).env("RUST_LOG", "error");
    c
}

/// Panics with the process's output unless it succeeded.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "autointerp failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir`, relative path → contents; but `run.log`, which every command appends
/// to (a rerun that writes nothing else still logs that it ran).
pub fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "run.log") {
                continue;
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// The lines of `failures.jsonl` in `run_dir`, parsed.
pub fn failures(run_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("failures.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad failure line {l:?}: {e}")))
        .collect()
}

/// Whether latent `i` has its explanation and every score file of `scorers` in `run_dir`, each
/// without failed items.
pub fn complete(run_dir: &Path, i: usize, scorers: &[&str]) -> bool {
    let id = latent(i);
    run_dir
        .join("explanations")
        .join(format!("{id}.txt"))
        .is_file()
        && scorers.iter().all(|s| {
            let path = run_dir.join("scores").join(s).join(format!("{id}.txt"));
            autointerp_score::read_score_file(&path, s).is_ok_and(|d| d.n_failed() == 0)
        })
}

/// How the test server misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Wait this long before answering each chat request.
    pub delay: Duration,
    /// Inject 500s, 429s, dropped connections and garbage bodies, by request count; and always
    /// fail walnut's explanation and falcon's fuzzing.
    pub inject: bool,
    /// Ignore `continue_final_message`, as llama-cpp-python's server does: a prefilled answer
    /// is closed and a new turn opened after it (seen in the prompt token counts).
    pub ignores_continue: bool,
}

/// One chat request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `explain`, `detection`, `fuzz`, `intruder` or `simulation`.
    pub kind: String,
    /// The word the request is about (the latent's, as far as the prompt tells).
    pub word: String,
}

struct ServerState {
    faults: Faults,
    count: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// `(kind, body)` of every chat request answered.
    bodies: Mutex<Vec<(String, Value)>>,
    /// The `Authorization` header of every chat request, if it had one.
    auth: Mutex<Vec<Option<String>>>,
    injected: AtomicUsize,
}

/// An OpenAI-compatible server on 127.0.0.1, on a thread of its own.
pub struct Server {
    /// `http://127.0.0.1:PORT/v1`.
    pub url: String,
    state: Arc<ServerState>,
}

impl Server {
    /// Starts a server.
    pub fn start(faults: Faults) -> Self {
        let state = Arc::new(ServerState {
            faults,
            count: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            bodies: Mutex::new(Vec::new()),
            auth: Mutex::new(Vec::new()),
            injected: AtomicUsize::new(0),
        });
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/v1/chat/completions", post(chat))
                    .route("/v1/embeddings", post(embeddings))
                    .with_state(shared);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server start");
        Self {
            url: format!("http://{addr}/v1"),
            state,
        }
    }

    /// The chat requests answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// `(kind, body)` of every chat request answered so far.
    pub fn bodies(&self) -> Vec<(String, Value)> {
        self.state.bodies.lock().unwrap().clone()
    }

    /// The `Authorization` header of every chat request so far.
    pub fn auth_headers(&self) -> Vec<Option<String>> {
        self.state.auth.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }
}

/// The words of a text.
fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// The words between `<<` and `>>` in a text.
fn marked(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(">>") else { break };
        out.extend(after[..end].split_whitespace().map(str::to_string));
        rest = &after[end + 2..];
    }
    out
}

/// The `Excerpt N: ...` lines of a prompt, without their label.
fn excerpts(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.starts_with("Excerpt "))
                .map(|(_, t)| t)
        })
        .collect()
}

/// The latent word an explanation `the word <w>` names.
fn explained_word(description: &str) -> String {
    description
        .trim()
        .trim_start_matches("the word")
        .trim()
        .trim_end_matches('.')
        .to_string()
}

/// The most common of `words`.
fn majority(words: impl IntoIterator<Item = String>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for w in words {
        *counts.entry(w).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(w, _)| w)
        .unwrap_or_default()
}

/// Answers a chat request as a perfect LLM would on the fixture: `(kind, word, answer)`.
fn answer(body: &Value) -> (String, String, String) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let content = |m: Option<&Value>| {
        m.and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let system = content(messages.first());
    let last = content(messages.last());
    if last.starts_with('{') {
        let mut doc: Value = serde_json::from_str(&last).unwrap_or_default();
        let word = explained_word(doc["description"].as_str().unwrap_or_default());
        if let Some(acts) = doc["activations"].as_array_mut() {
            for a in acts {
                let on = a["token"].as_str().is_some_and(|t| t.trim() == word);
                a["activation"] = json!(if on { 10 } else { 0 });
            }
        }
        return ("simulation".into(), word, doc.to_string());
    }
    if let Some(rest) = last.strip_prefix("Feature description:") {
        let word = explained_word(rest.lines().next().unwrap_or_default());
        let fuzz = last.contains("<<");
        let labels: Vec<&str> = excerpts(&last)
            .iter()
            .map(|e| {
                let yes = if fuzz {
                    let m = marked(e);
                    !m.is_empty() && m.iter().all(|t| *t == word)
                } else {
                    words(e).contains(&word.as_str())
                };
                if yes {
                    "1"
                } else {
                    "0"
                }
            })
            .collect();
        let kind = if fuzz { "fuzz" } else { "detection" };
        return (kind.into(), word, format!("[{}]", labels.join(",")));
    }
    let shown = excerpts(&last);
    if system.contains("[INTRUDER]") {
        let word = majority(shown.iter().flat_map(|e| marked(e)));
        let text = match shown.iter().position(|e| !marked(e).contains(&word)) {
            Some(k) => format!("[INTRUDER]: {}", k + 1),
            None => "[INTRUDER]: 1".into(),
        };
        return ("intruder".into(), word, text);
    }
    let mut word = majority(shown.iter().flat_map(|e| marked(e)));
    // Sampled explanations (best-of-K) carry a seed: even seeds miss the word.
    if body["seed"].as_u64().is_some_and(|s| s % 2 == 0) {
        word = "nothing".into();
    }
    let text = format!("The marked tokens are all the same word.\n[EXPLANATION]: the word {word}");
    ("explain".into(), word, text)
}

async fn chat(
    State(state): State<Arc<ServerState>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let n = state.count.fetch_add(1, Ordering::SeqCst);
    state.auth.lock().unwrap().push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    );
    if !state.faults.delay.is_zero() {
        tokio::time::sleep(state.faults.delay).await;
    }
    let (kind, word, text) = answer(&body);
    if state.faults.inject {
        // Scripted, whatever the request count: walnut's explanation is never valid JSON (not
        // retried), falcon's fuzzing prompts are always rejected (400, not retried); their other
        // requests get no faults, so that these are the failures they have.
        if kind == "explain" && word == "walnut" {
            return (StatusCode::OK, "{\"choices\": [garbage").into_response();
        }
        if kind == "fuzz" && word == "falcon" {
            return (StatusCode::BAD_REQUEST, "prompt rejected").into_response();
        }
        let scripted = word == "walnut" || word == "falcon";
        let fault = match n % 23 {
            _ if scripted => None,
            3 | 11 => Some((StatusCode::INTERNAL_SERVER_ERROR, None, "upstream exploded")),
            6 => Some((StatusCode::TOO_MANY_REQUESTS, Some("0"), "slow down")),
            15 => Some((StatusCode::OK, None, "{\"choices\": [garbage")),
            _ => None,
        };
        if let Some((status, retry_after, text)) = fault {
            state.injected.fetch_add(1, Ordering::SeqCst);
            let mut response = (status, text.to_string()).into_response();
            if let Some(v) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", v.parse().unwrap());
            }
            return response;
        }
        if n % 23 == 19 && !scripted {
            // A dropped connection: the body fails half-way.
            state.injected.fetch_add(1, Ordering::SeqCst);
            let chunks: Vec<Result<&'static str, std::io::Error>> = vec![
                Ok("{\"choices\": "),
                Err(std::io::Error::other("connection dropped")),
            ];
            return Response::new(Body::from_stream(futures::stream::iter(chunks)));
        }
    }
    state
        .bodies
        .lock()
        .unwrap()
        .push((kind.clone(), body.clone()));
    state.seen.lock().unwrap().push(Seen { kind, word });
    let prompt_chars: usize = body["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| m["content"].as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    // A new turn costs an end-of-turn and an assistant header; a continued answer does not.
    let continued = body["continue_final_message"] == json!(true) && !state.faults.ignores_continue;
    let prompt_tokens = prompt_chars / 4 + if continued { 0 } else { 3 };
    Json(json!({
        "id": format!("chatcmpl-{n}"),
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": text.len() / 4 + 1, "cost": 0.001}
    }))
    .into_response()
}

/// Bag-of-words embeddings over the latent words (plus a constant, so no vector is zero).
async fn embeddings(Json(body): Json<Value>) -> Json<Value> {
    let inputs: Vec<String> = match &body["input"] {
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let ws = words(text);
            let mut v: Vec<f32> = WORDS
                .iter()
                .map(|w| ws.iter().filter(|t| *t == w).count() as f32)
                .collect();
            v.push(0.1);
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"]}))
}
