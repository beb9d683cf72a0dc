//! The prefix cache changes nothing but speed: engines with it on (with room to spare, and
//! with a budget so small that it evicts all the time) and off answer the same requests with the
//! same tokens, and logprobs within float rounding, on the tiny random `llama` fixture of
//! autointerp-model and on SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by
//! `scripts/fetch-assets.sh smollm2`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use autointerp_client::{ChatRequest, ChatResponse, Client, TokenLogprobs, TokenScorer};
use autointerp_core::Message;
use autointerp_engine::{EngineConfig, GenerateRequest, Generation, LocalEngine, TokenLogprob};
use autointerp_model::DType;
use futures::future::join_all;
use tch::Device;

/// Logprobs of the two engines differ by float rounding only.
const TOLERANCE: f32 = 1e-4;

fn config(cache: bool, bytes: usize) -> EngineConfig {
    EngineConfig::default()
        .with_batch_wait(Duration::from_millis(50))
        .with_prefix_cache(cache)
        .with_prefix_cache_bytes(bytes)
}

fn load(source: &Path, config: EngineConfig) -> LocalEngine {
    LocalEngine::load(source.to_str().unwrap(), Device::Cpu, DType::F32, config).unwrap()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../autointerp-model/tests/fixtures/llama")
}

fn smollm2() -> PathBuf {
    autointerp_core::assets::fetch(autointerp_core::assets::Asset::Smollm2)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Two lists of alternatives, best first, agree: values within tolerance, and the same ids
/// except where two values are too close to order.
fn same_top<T: PartialEq + std::fmt::Debug>(a: &[(T, f32)], b: &[(T, f32)], at: &str) {
    assert_eq!(a.len(), b.len(), "{at}");
    for (i, ((ta, la), (tb, lb))) in a.iter().zip(b).enumerate() {
        assert!((la - lb).abs() < TOLERANCE, "{at} top {i}: {la} vs {lb}");
        if ta != tb {
            let tie = a.iter().any(|(t, l)| t == tb && (l - lb).abs() < TOLERANCE);
            assert!(tie, "{at} top {i}: {ta:?} vs {tb:?}");
        }
    }
}

fn same_logprob(a: &TokenLogprob, b: &TokenLogprob, at: &str) {
    assert_eq!(a.id, b.id, "{at}");
    assert!(
        (a.logprob - b.logprob).abs() < TOLERANCE,
        "{at}: {} vs {}",
        a.logprob,
        b.logprob
    );
    same_top(&a.top, &b.top, at);
}

fn same_generation(a: &Generation, b: &Generation, at: &str) {
    assert_eq!(a.tokens, b.tokens, "{at}");
    assert_eq!(a.finish_reason, b.finish_reason, "{at}");
    match (&a.logprobs, &b.logprobs) {
        (Some(x), Some(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same_logprob(p, q, &format!("{at} token {i}"));
            }
        }
        (x, y) => assert_eq!(x.is_some(), y.is_some(), "{at}"),
    }
    same_positions(&a.prompt_logprobs, &b.prompt_logprobs, at, same_logprob);
}

/// Prompt logprobs, by position, agree as `same` says.
fn same_positions<T>(
    a: &Option<Vec<Option<T>>>,
    b: &Option<Vec<Option<T>>>,
    at: &str,
    same: impl Fn(&T, &T, &str),
) {
    let (Some(x), Some(y)) = (a, b) else {
        return assert_eq!(a.is_some(), b.is_some(), "{at}");
    };
    assert_eq!(x.len(), y.len(), "{at}");
    for (j, (p, q)) in x.iter().zip(y).enumerate() {
        match (p, q) {
            (Some(p), Some(q)) => same(p, q, &format!("{at} prompt {j}")),
            (p, q) => assert_eq!(p.is_some(), q.is_some(), "{at} prompt {j}"),
        }
    }
}

fn same_wire(a: &[TokenLogprobs], b: &[TokenLogprobs], at: &str) {
    assert_eq!(a.len(), b.len(), "{at}");
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        assert_eq!(p.token, q.token, "{at} {i}");
        assert!((p.logprob - q.logprob).abs() < TOLERANCE, "{at} {i}");
        same_top(&p.top, &q.top, &format!("{at} {i}"));
    }
}

fn same_chat(a: &ChatResponse, b: &ChatResponse, at: &str) {
    assert_eq!(a.text, b.text, "{at}");
    match (&a.logprobs, &b.logprobs) {
        (Some(x), Some(y)) => same_wire(x, y, at),
        (x, y) => assert_eq!(x.is_some(), y.is_some(), "{at}"),
    }
    same_positions(&a.prompt_logprobs, &b.prompt_logprobs, at, |p, q, at| {
        same_wire(std::slice::from_ref(p), std::slice::from_ref(q), at)
    });
}

/// Token ids below 96 (the fixture's vocabulary) from a little generator.
fn tokens(seed: u64, n: usize) -> Vec<u32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 96) as u32
        })
        .collect()
}

/// Requests of every kind that share prefixes in several ways: one long prefix with suffixes of
/// different lengths, a prompt that is the prefix itself, a prompt that extends another, and
/// an unrelated one.
fn fixture_requests(round: u64) -> Vec<GenerateRequest> {
    let prefix = tokens(1, 40);
    let mut prompts: Vec<Vec<u32>> = [3usize, 7, 12, 1]
        .iter()
        .enumerate()
        .map(|(i, &n)| [prefix.clone(), tokens(100 * round + i as u64, n)].concat())
        .collect();
    prompts.push(prefix.clone());
    prompts.push([prompts[1].clone(), tokens(7 + round, 5)].concat());
    prompts.push(tokens(50 + round, 9));
    prompts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let req = GenerateRequest::new(p, 6).with_stop_token_ids([]);
            match i % 3 {
                0 => req.with_logprobs(5),
                1 => req.with_prompt_logprobs(4),
                _ => req.with_logprobs(3).with_prompt_logprobs(0),
            }
        })
        .collect()
}

async fn answers(engine: &LocalEngine, reqs: &[GenerateRequest]) -> Vec<Generation> {
    join_all(reqs.iter().map(|r| engine.generate(r.clone())))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Each round in one batch, and then one request at a time, so that prompts hit prefixes both
/// of their own batch and of earlier ones.
async fn fixture_rounds(engine: &LocalEngine) -> Vec<Generation> {
    let mut all = Vec::new();
    for round in 0..3 {
        all.extend(answers(engine, &fixture_requests(round)).await);
    }
    for req in fixture_requests(3) {
        all.push(engine.generate(req).await.unwrap());
    }
    // Scoring a prompt the cache holds entirely.
    let whole = fixture_requests(0).swap_remove(1);
    all.push(engine.generate(whole).await.unwrap());
    all
}

#[tokio::test]
async fn cached_prefixes_give_the_uncached_answers_on_the_fixture() {
    let off = load(&fixture(), config(false, 0));
    let want = fixture_rounds(&off).await;
    assert_eq!(off.stats().cached_prompt_tokens, 0);

    for budget in [usize::MAX, 256 << 20, 24 * 1024] {
        let on = load(&fixture(), config(true, budget));
        let got = fixture_rounds(&on).await;
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            same_generation(g, w, &format!("budget {budget}, request {i}"));
        }
        let stats = on.stats();
        assert!(stats.cached_prompt_tokens > 0, "{stats:?}");
        assert!(stats.prefix_cache_bytes as usize <= budget, "{stats:?}");
        assert!(stats.largest_batch > 1, "{stats:?}");
    }
}

/// A system prompt, shots and an explanation shared by every request, as detection sends them.
fn detection_chat(excerpt: &str) -> ChatRequest {
    ChatRequest::new(vec![
        Message::system(
            "You are an intelligent and meticulous linguistics researcher. You will be given a \
             certain feature of text, such as \"male pronouns\" or \"text with negative \
             sentiment\", and a text example. Answer 1 if the example shows the feature, else 0.",
        ),
        Message::user("Feature: words about the weather.\nExample: It rained all day long."),
        Message::assistant("1"),
        Message::user("Feature: words about the weather.\nExample: She paid for the bread."),
        Message::assistant("0"),
        Message::user(format!("Feature: names of animals.\nExample: {excerpt}")),
    ])
}

const EXCERPTS: [&str; 5] = [
    "The cat slept on the warm windowsill.",
    "Interest rates rose again this quarter.",
    "A herd of elephants crossed the river at dawn.",
    "He fixed the bicycle with a borrowed wrench.",
    "Owls hunt mostly at night.",
];

async fn smollm2_round(engine: &LocalEngine) -> Vec<ChatResponse> {
    let mut reqs = Vec::new();
    for e in EXCERPTS {
        reqs.push(
            detection_chat(e)
                .with_max_tokens(1)
                .with_temperature(0.0)
                .with_logprobs(5),
        );
        reqs.push(detection_chat(e).with_max_tokens(8).with_temperature(0.0));
        reqs.push(detection_chat(e).with_max_tokens(0).with_prompt_logprobs(3));
    }
    let mut out: Vec<ChatResponse> = join_all(reqs.iter().map(|r| engine.chat(r.clone())))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // Seeded sampling draws the same tokens too.
    let sampled = detection_chat(EXCERPTS[0])
        .with_max_tokens(6)
        .with_temperature(0.8)
        .with_seed(7);
    out.push(engine.chat(sampled).await.unwrap());
    out
}

async fn smollm2_scores(engine: &LocalEngine) -> Vec<Vec<f32>> {
    let prefix = "Once upon a time, in a village by the sea, there lived an old fisherman who";
    let texts = [
        " never caught a fish.",
        " sang to the waves.",
        " owned a boat.",
    ];
    join_all(texts.iter().map(|t| engine.logprobs(prefix, t)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn cached_prefixes_give_the_uncached_answers_on_smollm2() {
    let path = smollm2();
    let off = load(&path, config(false, 0));
    let want = smollm2_round(&off).await;
    let want_scores = smollm2_scores(&off).await;
    drop(off);
    // A budget of a few hundred tokens: prompts of ~150 tokens evict each other.
    for budget in [256usize << 20, 8 << 20] {
        let on = load(&path, config(true, budget));
        for pass in 0..2 {
            let got = smollm2_round(&on).await;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                same_chat(g, w, &format!("budget {budget}, pass {pass}, request {i}"));
            }
            let scores = smollm2_scores(&on).await;
            for (g, w) in scores.iter().zip(&want_scores) {
                assert_eq!(g.len(), w.len());
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() < TOLERANCE, "{a} vs {b}");
                }
            }
        }
        let stats = on.stats();
        assert!(stats.cached_prompt_tokens > 0, "{stats:?}");
        assert!(stats.prefix_cache_bytes as usize <= budget, "{stats:?}");
    }
}
