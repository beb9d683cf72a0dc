//! Known answers, end to end. A synthetic cache over a real text (the State of the Union
//! addresses of 1790–1800, word-level tokens) whose latents fire on known words, a judge that
//! answers every explainer and scorer prompt perfectly from the prompt's text alone, and
//! `autointerp run` with the random control, in both classifier answer modes. Every score must
//! then be what can be computed by hand from the examples shown; a miss is a bug in window
//! cutting, highlighting, label order, answer parsing or the metrics.
//!
//! Latents of [`SINGLE`] fire on every occurrence of a word; latents of [`CONTEXT`] fire on a
//! word only right after another one, so an example window that starts on the word hides the
//! context that made it fire. A latent's activation at row position `p` is `1 + p % 8`, which a
//! window aligned on the row's 16-token grid shows at its own position modulo 8: the true
//! activations of every example are known from its tokens alone.

mod run_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use autointerp_core::split::{Location, Split, Tokens};
use autointerp_report::load_results;
use axum::routing::post;
use axum::{Json, Router};
use run_support::{assert_success, command};
use serde_json::{json, Value};

const HOOK: &str = "layers.0";
/// Tokens per cached row.
const CTX: usize = 64;
/// Tokens per example window.
const WINDOW: usize = 16;
/// Latents that fire on every occurrence of one word.
const SINGLE: [&str; 6] = [
    "united",
    "government",
    "treaty",
    "war",
    "congress",
    "measures",
];
/// Latents that fire on a word only right after another: `(before, word)`.
const CONTEXT: [(&str, &str); 2] = [("the", "public"), ("our", "country")];

/// What a latent fires on; also what its perfect explanation says.
#[derive(Debug, Clone, PartialEq)]
enum Meaning {
    Word(String),
    After(String, String),
}

impl Meaning {
    fn of_latent(l: usize) -> Self {
        match SINGLE.get(l) {
            Some(w) => Self::Word((*w).to_string()),
            None => {
                let (a, b) = CONTEXT[l - SINGLE.len()];
                Self::After(a.to_string(), b.to_string())
            }
        }
    }

    fn word(&self) -> &str {
        match self {
            Self::Word(w) | Self::After(_, w) => w,
        }
    }

    fn explanation(&self) -> String {
        match self {
            Self::Word(w) => format!("the word {w}"),
            Self::After(a, w) => format!("the word {w} right after {a}"),
        }
    }

    fn parse(explanation: &str) -> Option<Self> {
        let rest = explanation
            .trim()
            .trim_end_matches('.')
            .strip_prefix("the word ")?;
        Some(match rest.split_once(" right after ") {
            Some((w, a)) => Self::After(a.to_string(), w.to_string()),
            None => Self::Word(rest.to_string()),
        })
    }

    /// Whether the latent fires on `words[i]`, as far as `words` shows.
    fn fires(&self, words: &[String], i: usize) -> bool {
        match self {
            Self::Word(w) => words[i] == *w,
            Self::After(a, w) => words[i] == *w && i > 0 && words[i - 1] == *a,
        }
    }

    /// Whether the latent fires on a word of `words`.
    fn fires_in(&self, words: &[String]) -> bool {
        (0..words.len()).any(|i| self.fires(words, i))
    }
}

/// The activation of a firing latent at row position `p`.
fn activation(p: usize) -> f32 {
    1.0 + (p % 8) as f32
}

/// The words of the fixture text, lower-cased, punctuation dropped.
fn corpus() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/known_answers/sotu_1790_1800.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    text.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Writes the word-level tokenizer (`<unk>`, then the corpus's words sorted, each a token with
/// a leading space) into `dir` and returns the vocabulary.
fn write_tokenizer(dir: &Path, words: &[String]) -> Vec<String> {
    let mut vocab: Vec<String> = words.to_vec();
    vocab.sort();
    vocab.dedup();
    let mut map = serde_json::Map::new();
    map.insert("<unk>".into(), json!(0));
    for (i, w) in vocab.iter().enumerate() {
        map.insert(format!(" {w}"), json!(i + 1));
    }
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": map, "unk_token": "<unk>"}
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    vocab
}

/// Writes the cache of every latent of [`SINGLE`] then [`CONTEXT`] under `run_dir/latents/`.
fn write_cache(run_dir: &Path, tokenizer_dir: &Path) {
    let words = corpus();
    let vocab = write_tokenizer(tokenizer_dir, &words);
    let rows = words.len() / CTX;
    let n_latents = SINGLE.len() + CONTEXT.len();
    let meanings: Vec<Meaning> = (0..n_latents).map(Meaning::of_latent).collect();
    let (mut ids, mut locations, mut activations) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rows {
        let row = &words[r * CTX..(r + 1) * CTX];
        for (p, w) in row.iter().enumerate() {
            ids.push(vocab.binary_search(w).unwrap() as u32 + 1);
            for (l, m) in meanings.iter().enumerate() {
                if m.fires(row, p) {
                    locations.push(Location {
                        row: r as u32,
                        position: p as u32,
                        latent: l as u32,
                    });
                    activations.push(activation(p));
                }
            }
        }
    }
    let dir = run_dir.join("latents").join(HOOK);
    std::fs::create_dir_all(&dir).unwrap();
    Split {
        start: 0,
        end: n_latents as u32 - 1,
        locations,
        activations,
        tokens: Some(Tokens {
            rows,
            ctx_len: CTX,
            ids,
        }),
    }
    .write_to_dir(&dir)
    .unwrap();
    let config = json!({"model_name": tokenizer_dir, "ctx_len": CTX, "n_splits": 1});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// An excerpt as shown, read back: its words and which of them are highlighted.
fn read_excerpt(text: &str) -> (Vec<String>, Vec<bool>) {
    let (mut words, mut marked) = (Vec::new(), Vec::new());
    let mut on = false;
    let mut rest = text;
    loop {
        let next = [rest.find("<<"), rest.find(">>")]
            .into_iter()
            .flatten()
            .min();
        let (chunk, after) = match next {
            Some(k) => (&rest[..k], Some(&rest[k..])),
            None => (rest, None),
        };
        for w in chunk.split_whitespace() {
            words.push(w.to_string());
            marked.push(on);
        }
        let Some(after) = after else { break };
        on = after.starts_with("<<");
        rest = &after[2..];
    }
    (words, marked)
}

/// Whether an excerpt's highlighting is exactly the latent's firing words.
fn highlights_right(meaning: &Meaning, text: &str) -> bool {
    let (words, marked) = read_excerpt(text);
    marked.iter().any(|&m| m) && (0..words.len()).all(|i| marked[i] == meaning.fires(&words, i))
}

/// The `<label> N: …` lines of a prompt.
fn numbered(text: &str, label: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (k, t) = l.split_once(": ")?;
            let n = k.strip_prefix(label)?.strip_prefix(' ')?;
            n.parse::<usize>().ok().map(|_| t.to_string())
        })
        .collect()
}

/// The explanation that fits the explainer's highlighted examples: the word highlighted
/// everywhere, and the word before it when that is a [`CONTEXT`] word.
fn explain(prompt: &str) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for e in numbered(prompt, "Excerpt") {
        let (words, marked) = read_excerpt(&e);
        for (w, m) in words.iter().zip(marked) {
            if m {
                *counts.entry(w.clone()).or_default() += 1;
            }
        }
    }
    let word = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(w, _)| w)
        .unwrap_or_default();
    let meaning = match CONTEXT.iter().find(|(_, w)| *w == word) {
        Some((a, w)) => Meaning::After((*a).to_string(), (*w).to_string()),
        None => Meaning::Word(word),
    };
    meaning.explanation()
}

/// A perfect judge's answer to a chat request: `(text, logprob answer)`, the second `Some` for
/// a one-excerpt classifier prompt (answered by the first token's logprobs).
fn answer(body: &Value) -> (String, Option<bool>) {
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
        let meaning = Meaning::parse(doc["description"].as_str().unwrap_or_default());
        if let (Some(meaning), Some(acts)) = (meaning, doc["activations"].as_array_mut()) {
            let words: Vec<String> = acts
                .iter()
                .map(|a| a["token"].as_str().unwrap_or_default().trim().to_string())
                .collect();
            for (i, a) in acts.iter_mut().enumerate() {
                a["activation"] = json!(if meaning.fires(&words, i) { 10 } else { 0 });
            }
        }
        return (doc.to_string(), None);
    }
    if let Some(rest) = last.strip_prefix("Feature description: ") {
        let meaning = Meaning::parse(rest.lines().next().unwrap_or_default());
        let label = |e: &str| {
            meaning.as_ref().is_some_and(|m| {
                if e.contains("<<") {
                    highlights_right(m, e)
                } else {
                    m.fires_in(&read_excerpt(e).0)
                }
            })
        };
        if let Some((_, one)) = last.split_once("\n\nExcerpt: ") {
            let yes = label(one);
            return (if yes { "1" } else { "0" }.into(), Some(yes));
        }
        let labels: Vec<&str> = numbered(&last, "Excerpt")
            .iter()
            .map(|e| if label(e) { "1" } else { "0" })
            .collect();
        return (format!("[{}]", labels.join(",")), None);
    }
    if system.contains("[INTRUDER]") {
        // The intruder is the one excerpt whose highlighting no meaning of the others explains.
        let shown = numbered(&last, "Excerpt");
        let fits = |m: &Meaning, e: &str| highlights_right(m, e);
        let candidates: Vec<Meaning> = (0..SINGLE.len() + CONTEXT.len())
            .map(Meaning::of_latent)
            .collect();
        let meaning = candidates
            .iter()
            .max_by_key(|m| shown.iter().filter(|e| fits(m, e)).count());
        let k = meaning
            .and_then(|m| shown.iter().position(|e| !fits(m, e)))
            .unwrap_or(0);
        return (format!("[INTRUDER]: {}", k + 1), None);
    }
    let text = format!(
        "The highlighted tokens are one word.\n[EXPLANATION]: {}",
        explain(&last)
    );
    (text, None)
}

async fn chat(Json(body): Json<Value>) -> Json<Value> {
    let (text, label) = answer(&body);
    let mut choice = json!({
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
    });
    if let Some(yes) = label {
        // A confident judge: the right label first, the other far behind.
        let (first, second) = if yes { ("1", "0") } else { ("0", "1") };
        choice["logprobs"] = json!({"content": [{
            "token": first, "logprob": -0.01,
            "top_logprobs": [
                {"token": first, "logprob": -0.01},
                {"token": second, "logprob": -4.6},
            ],
        }]});
    }
    Json(json!({
        "id": "chatcmpl-known",
        "object": "chat.completion",
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1},
    }))
}

/// Starts the judge on 127.0.0.1 on a thread of its own; returns its base URL.
fn start_judge() -> String {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new().route("/v1/chat/completions", post(chat));
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    format!("http://{addr}/v1")
}

/// Pearson correlation; `None` when either side is constant.
fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// The detection or fuzzing balanced accuracy (the headline) a perfect judge must reach on a
/// score file: each example is answered from its shown text alone; also checks that every
/// example is labelled by what the latent truly does in it.
fn expected_classifier(meaning: &Meaning, outcomes: &[Value], fuzz: bool) -> f64 {
    // [label] → (right, total)
    let mut counts = [(0u32, 0u32); 2];
    for o in outcomes {
        let words: Vec<String> = o["str_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().trim().to_string())
            .collect();
        let acts: Vec<f64> = o["activations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_f64().unwrap())
            .collect();
        // The latent fires exactly where the words say, except on a context word at the
        // window's first position, whose context lies before the window.
        assert_eq!(acts.len(), words.len());
        for (i, a) in acts.iter().enumerate() {
            let hidden = i == 0 && matches!(meaning, Meaning::After(_, w) if *w == words[0]);
            if !hidden {
                assert_eq!(*a > 0.0, meaning.fires(&words, i), "{o}");
            }
        }
        let text = o["text"].as_str().unwrap();
        let answer = if fuzz {
            highlights_right(meaning, text)
        } else {
            meaning.fires_in(&read_excerpt(text).0)
        };
        let label = o["activating"].as_bool().unwrap();
        let c = &mut counts[usize::from(label)];
        c.0 += u32::from(answer == label);
        c.1 += 1;
    }
    let rate = |(right, total): (u32, u32)| f64::from(right) / f64::from(total);
    (rate(counts[0]) + rate(counts[1])) / 2.0
}

/// The intruder accuracy a perfect judge must reach: it names the first excerpt whose
/// highlighting the latent's meaning does not explain, which is the intruder unless a window
/// hid the context of a highlighted word.
fn expected_intruder(meaning: &Meaning, trials: &Value) -> f64 {
    let trials = trials.as_array().unwrap();
    let right = trials
        .iter()
        .filter(|t| {
            let shown = t["sample"]["examples"].as_array().unwrap();
            let odd = shown
                .iter()
                .position(|e| !highlights_right(meaning, e.as_str().unwrap()));
            odd == t["correct_index"].as_u64().map(|k| k as usize)
        })
        .count();
    right as f64 / trials.len() as f64
}

/// The simulation score a perfect judge must reach: the correlation, over every token of the
/// sequences shown, of a 10-or-0 prediction from the words with the true activations, which are
/// `ceil(10 · a / max)` of the activation the window position implies.
fn expected_simulation(meaning: &Meaning, groups: &Value, max: f32) -> f64 {
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    let all = &groups[0];
    assert_eq!(all["distance"], 0);
    for s in all["scored_sequence_simulations"].as_array().unwrap() {
        let words: Vec<String> = s["simulation"]["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().trim().to_string())
            .collect();
        let shown: Vec<f64> = s["true_activations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_f64().unwrap())
            .collect();
        for i in 0..words.len() {
            let fires = meaning.fires(&words, i)
                || (i == 0 && words[0] == meaning.word() && shown[0] > 0.0);
            let t = if fires {
                f64::from((10.0 * activation(i) / max).ceil())
            } else {
                0.0
            };
            assert_eq!(shown[i], t, "true activation {i} of {words:?}");
            truth.push(t);
            predicted.push(if meaning.fires(&words, i) { 10.0 } else { 0.0 });
        }
    }
    pearson(&truth, &predicted).unwrap()
}

fn run_and_check(answer_mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    let results = dir.path().join("results");
    let run_dir = results.join("known");
    write_cache(&run_dir, &tok);
    let url = start_judge();
    let (tok_s, results_s) = (tok.to_str().unwrap(), results.to_str().unwrap());
    let window = WINDOW.to_string();
    let mut args = vec![
        "run",
        tok_s,
        "unused-sparse-model",
        "--results-dir",
        results_s,
        "--name",
        "known",
        "--hookpoints",
        HOOK,
        "--explainer-model",
        "judge",
        "--explainer-base-url",
        &url,
        "--scorers",
        "detection,fuzz,intruder,simulation",
        "--simulation-mode",
        "json",
        "--classifier-answer",
        answer_mode,
        "--random-control",
        "--max-concurrency",
        "4",
        "--example-ctx-len",
        &window,
        "--center-examples=false",
        "--min-examples",
        "20",
        "--n-examples-train",
        "10",
        "--n-examples-test",
        "10",
        "--n-non-activating",
        "10",
        "--n-quantiles",
        "2",
    ];
    if answer_mode == "list" {
        args.push("--log-probs");
    }
    assert_success(&command(&args).output().unwrap());

    let results = load_results(&run_dir).unwrap();
    let n_latents = SINGLE.len() + CONTEXT.len();
    assert_eq!(results.latents.len(), n_latents, "{:?}", results.problems);
    for l in 0..n_latents {
        let meaning = Meaning::of_latent(l);
        let id = format!("{HOOK}_latent{l}");
        let latent = results
            .latents
            .values()
            .find(|r| r.id.to_string() == id)
            .unwrap();
        assert_eq!(
            latent.explanation.as_deref(),
            Some(meaning.explanation().as_str())
        );
        let max = latent.record.as_ref().unwrap().stats.max_activation;
        let score = |scorer: &str, control: bool| {
            let (_, s) = latent
                .scores
                .iter()
                .find(|(k, _)| k.name == scorer && k.control == control)
                .unwrap_or_else(|| panic!("no {scorer} score for {id}"));
            assert_eq!(s.n_failed, 0, "{scorer} {id}");
            s.value
        };
        let file = |scorer: &str| {
            read_json(
                &run_dir
                    .join("scores")
                    .join(scorer)
                    .join(format!("{id}.txt")),
            )
        };
        for (scorer, fuzz) in [("detection", false), ("fuzz", true)] {
            let outcomes = file(scorer);
            let expected = expected_classifier(&meaning, outcomes.as_array().unwrap(), fuzz);
            let got = score(scorer, false);
            assert!(
                (got - expected).abs() < 1e-9,
                "{scorer} {id}: {got} vs {expected}"
            );
            if matches!(meaning, Meaning::Word(_)) {
                assert!(got >= 0.97, "{scorer} {id}: {got}");
            }
            let control = score(scorer, true);
            assert!(
                (0.4..=0.6).contains(&control),
                "{scorer} control {id}: {control}"
            );
        }
        let intruder = score("intruder", false);
        let expected = expected_intruder(&meaning, &file("intruder"));
        assert!(
            (intruder - expected).abs() < 1e-9,
            "intruder {id}: {intruder} vs {expected}"
        );
        if matches!(meaning, Meaning::Word(_)) {
            assert!(intruder >= 0.97, "intruder {id}: {intruder}");
        }
        let simulation = score("simulation", false);
        let expected = expected_simulation(&meaning, &file("simulation"), max);
        assert!(
            (simulation - expected).abs() < 1e-9,
            "simulation {id}: {simulation} vs {expected}"
        );
    }
}

#[test]
fn a_perfect_judge_gets_the_known_scores_in_list_mode() {
    run_and_check("list");
}

#[test]
fn a_perfect_judge_gets_the_known_scores_in_logprob_mode() {
    run_and_check("logprob");
}
