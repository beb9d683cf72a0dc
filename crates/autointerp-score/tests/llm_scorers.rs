//! Every scorer end to end on two latents: against a scripted client that answers the first
//! latent correctly and the second with garbage, and against deterministic fake embedders and
//! token scorers on hand-checkable cases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use autointerp_client::{ChatRequest, ChatResponse, Client, Embedder, TokenScorer, Usage};
use autointerp_core::{Explanation, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_explain::split_highlighted;
use autointerp_score::*;
use futures::executor::block_on;

// ---------------------------------------------------------------------------------------------
// Fixtures

mod support;

use support::{example, is_river, RIVERS};

const GOOD: &str = "Names of rivers.";
const BAD: &str = "Days of the week.";

/// Latent 1 fires on river names, latent 2 on weekdays; both have six test examples in three
/// quantiles and six non-activating examples.
fn records() -> [LatentRecord; 2] {
    let rivers = support::rivers();
    let weekdays = LatentRecord {
        id: LatentId::new(HookPoint::Residual(4), 2),
        train: vec![],
        test: ["Monday", "Tuesday", "Friday", "Sunday", "Monday", "Friday"]
            .iter()
            .enumerate()
            .map(|(i, d)| {
                example(
                    &format!("See you next {d} at ten"),
                    Some(3),
                    Some(1 + (i / 2) as u8),
                )
            })
            .collect(),
        non_activating: support::silent(),
        stats: LatentStats::default(),
        logits: None,
    };
    [rivers, weekdays]
}

fn explanations(records: &[LatentRecord; 2]) -> [Explanation; 2] {
    [
        Explanation {
            latent: records[0].id,
            text: GOOD.into(),
        },
        Explanation {
            latent: records[1].id,
            text: BAD.into(),
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The scripted client

type Script = dyn Fn(&ChatRequest) -> autointerp_client::Result<ChatResponse> + Send + Sync;

/// A client that answers from a closure, counting and keeping the requests.
struct Scripted {
    answer: Box<Script>,
    calls: AtomicUsize,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(
        answer: impl Fn(&ChatRequest) -> autointerp_client::Result<ChatResponse> + Send + Sync + 'static,
    ) -> Self {
        Self {
            answer: Box::new(answer),
            calls: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        }
    }
}

impl Client for Scripted {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = (self.answer)(&req);
        self.requests.lock().unwrap().push(req);
        answer
    }
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 50,
        completion_tokens: 5,
        cost: Some(0.001),
    }
}

fn text_response(text: impl Into<String>) -> ChatResponse {
    ChatResponse {
        text: text.into(),
        usage: usage(),
        finish_reason: Some("stop".into()),
        ..ChatResponse::default()
    }
}

/// The last message of a request.
fn last(req: &ChatRequest) -> &str {
    &req.messages.last().unwrap().content
}

/// The excerpts of the last message: `Excerpt k: text` lines.
fn excerpts(req: &ChatRequest) -> Vec<String> {
    last(req)
        .lines()
        .filter_map(|l| l.strip_prefix("Excerpt "))
        .filter_map(|l| l.split_once(": ").map(|(_, t)| t.to_string()))
        .collect()
}

/// A `[1,0,…]` answer, with per-token logprobs putting 0.9 on each label given when `logprobs`.
fn labels_response(labels: &[bool], logprobs: bool) -> ChatResponse {
    let mut tokens = vec!["[".to_string()];
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            tokens.push(",".into());
        }
        tokens.push(if *l { "1" } else { "0" }.into());
    }
    tokens.push("]".into());
    let mut response = text_response(tokens.concat());
    if logprobs {
        response.logprobs = Some(
            tokens
                .iter()
                .map(|t| {
                    let top = match t.as_str() {
                        "1" => vec![("1".into(), 0.9f32.ln()), ("0".into(), 0.1f32.ln())],
                        "0" => vec![("0".into(), 0.9f32.ln()), ("1".into(), 0.1f32.ln())],
                        _ => vec![(t.clone(), 0.0)],
                    };
                    autointerp_client::TokenLogprobs {
                        token: t.clone(),
                        logprob: top[0].1,
                        top,
                    }
                })
                .collect(),
        );
    }
    response
}

/// A classifier scorer that knows the river latent: right for its explanation, garbage for any
/// other. `label` says whether an excerpt deserves a 1.
fn classifier_oracle(
    label: fn(&str) -> bool,
) -> impl Fn(&ChatRequest) -> autointerp_client::Result<ChatResponse> + Send + Sync {
    move |req| {
        if !last(req).contains(GOOD) {
            return Ok(text_response("I am not sure what these have in common."));
        }
        let labels: Vec<bool> = excerpts(req).iter().map(|e| label(e)).collect();
        Ok(labels_response(&labels, req.logprobs.is_some()))
    }
}

fn mentions_river(excerpt: &str) -> bool {
    excerpt.split(' ').any(is_river)
}

fn highlights_only_rivers(excerpt: &str) -> bool {
    let marked: Vec<String> = split_highlighted(excerpt)
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(t, _)| t)
        .collect();
    !marked.is_empty() && marked.iter().all(|t| is_river(t))
}

/// Checks a classifier result of each latent: the first perfect, the second all failed.
fn check_classifier(results: &[ScorerResult], records: &[LatentRecord; 2], expect_auc: bool) {
    let good = &results[0];
    assert_eq!(good.score.latent, records[0].id);
    assert_eq!(good.score.value, 1.0, "{:?}", good.failures);
    assert_eq!(good.n_failed(), 0);
    assert!(good.failures.is_empty());
    let ScoreDetails::Classifier { outcomes, summary } = &good.details else {
        panic!("classifier details expected");
    };
    assert!(outcomes.iter().all(|o| o.correct == Some(true)));
    if expect_auc {
        assert_eq!(summary.auc, Some(1.0));
        assert!(outcomes.iter().all(|o| o.probability.is_some()));
    } else {
        assert_eq!(summary.auc, None);
    }
    assert!(good.usage.prompt_tokens > 0 && good.usage.cost.unwrap() > 0.0);

    let bad = &results[1];
    let ScoreDetails::Classifier { outcomes, summary } = &bad.details else {
        panic!("classifier details expected");
    };
    assert_eq!(bad.n_failed(), outcomes.len());
    assert_eq!(summary.confusion.failed, outcomes.len());
    assert!(outcomes.iter().all(|o| o.failed()));
    assert!(!bad.failures.is_empty());
    assert!(
        bad.failures[0].contains("unparseable"),
        "{}",
        bad.failures[0]
    );
    assert_eq!(summary.auc, None);
}

/// Scores both latents through the [`Scorer`] trait, as a pipeline would.
fn score_both(scorer: &impl Scorer) -> Vec<ScorerResult> {
    let records = records();
    let explanations = explanations(&records);
    records
        .iter()
        .zip(&explanations)
        .map(|(r, e)| block_on(scorer.score(r, e)).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// LLM scorers

#[test]
fn detection_with_and_without_logprobs() {
    let records = records();
    let client = Scripted::new(classifier_oracle(mentions_river));
    let scorer = DetectionScorer::new(&client, ClassifierConfig::default());
    assert_eq!(scorer.name(), "detection");
    let results = score_both(&scorer);
    check_classifier(&results, &records, true);
    // 12 examples per latent in batches of 5: 3 requests each.
    assert_eq!(client.calls.load(Ordering::SeqCst), 6);
    let requests = client.requests.lock().unwrap();
    assert_eq!(requests[0].logprobs, Some(5));
    assert_eq!(requests[0].max_tokens, Some(200));
    drop(requests);

    let plain = DetectionScorer::new(&client, ClassifierConfig::default()).with_logprobs(None);
    check_classifier(&score_both(&plain), &records, false);

    // The outcomes go to disk in delphi's layout.
    let dir = tempfile::tempdir().unwrap();
    let path = results[0].write_score_file(dir.path()).unwrap();
    assert!(path.ends_with("detection/layers.4_latent1.txt"));
    let ScoreDetails::Classifier { outcomes, .. } = &results[0].details else {
        unreachable!()
    };
    assert_eq!(&read_classifier_file(&path).unwrap(), outcomes);
    // And the whole result round-trips through JSON.
    let json = serde_json::to_string(&results[1]).unwrap();
    assert_eq!(
        serde_json::from_str::<ScorerResult>(&json).unwrap(),
        results[1]
    );
}

#[test]
fn fuzzing_in_both_modes() {
    let records = records();
    let client = Scripted::new(classifier_oracle(highlights_only_rivers));
    let scorer = FuzzingScorer::new(&client, FuzzConfig::default());
    assert_eq!(scorer.name(), "fuzz");
    check_classifier(&score_both(&scorer), &records, true);
    let active = FuzzingScorer::new(
        &client,
        FuzzConfig {
            mode: FuzzMode::Active,
            ..FuzzConfig::default()
        },
    );
    check_classifier(&score_both(&active), &records, true);
}

/// A one-token answer whose first token puts 0.8 on the right label, as a small model in
/// [`AnswerMode::Logprob`] would; for any other explanation, a word with neither label in its
/// top logprobs.
fn first_token_oracle(
    label: fn(&str) -> bool,
) -> impl Fn(&ChatRequest) -> autointerp_client::Result<ChatResponse> + Send + Sync {
    move |req| {
        let lp = |t: &str, p: f32| (t.to_string(), p.ln());
        let excerpt = last(req)
            .lines()
            .find_map(|l| l.strip_prefix("Excerpt: "))
            .expect("one excerpt per prompt");
        let (token, top) = if !last(req).contains(GOOD) {
            ("The", vec![lp("The", 0.7), lp("I", 0.3)])
        } else if label(excerpt) {
            // Leading space and a second `1` spelling: both count for the label.
            (" 1", vec![lp(" 1", 0.6), lp("1", 0.2), lp("0", 0.2)])
        } else {
            ("0", vec![lp("0", 0.8), lp("1", 0.2)])
        };
        let mut response = text_response(token);
        response.logprobs = Some(vec![autointerp_client::TokenLogprobs {
            token: token.into(),
            logprob: top[0].1,
            top,
        }]);
        Ok(response)
    }
}

#[test]
fn detection_and_fuzzing_from_first_token_logprobs() {
    let records = records();
    let cfg = ClassifierConfig {
        answer: AnswerMode::Logprob,
        ..ClassifierConfig::default()
    };
    let client = Scripted::new(first_token_oracle(mentions_river));
    let results = score_both(&DetectionScorer::new(&client, cfg.clone()));
    check_classifier(&results, &records, true);
    let ScoreDetails::Classifier { outcomes, .. } = &results[0].details else {
        unreachable!()
    };
    for o in outcomes {
        let want = if o.activating { 0.8 } else { 0.2 };
        assert!((o.probability.unwrap() - want).abs() < 1e-5, "{o:?}");
    }
    // One request per example, one token each, with the top 20 logprobs.
    assert_eq!(client.calls.load(Ordering::SeqCst), 24);
    let requests = client.requests.lock().unwrap();
    assert!(requests
        .iter()
        .all(|r| r.max_tokens == Some(1) && r.logprobs == Some(20) && r.temperature == Some(0.0)));
    assert!(last(&requests[0]).contains("Excerpt: ") && !last(&requests[0]).contains("Excerpt 1:"));
    drop(requests);

    let client = Scripted::new(first_token_oracle(highlights_only_rivers));
    let fuzz = FuzzingScorer::new(
        &client,
        FuzzConfig {
            classifier: cfg.clone(),
            ..FuzzConfig::default()
        },
    );
    check_classifier(&score_both(&fuzz), &records, true);

    // A backend without logprobs cannot answer in this mode: every example fails, and says why.
    let bare = Scripted::new(|_req: &ChatRequest| Ok(text_response("1")));
    let result =
        block_on(DetectionScorer::new(&bare, cfg).score(&records[0], &explanations(&records)[0]))
            .unwrap();
    assert_eq!(result.n_failed(), 12);
    assert!(
        result.failures[0].contains("logprobs"),
        "{:?}",
        result.failures
    );
}

#[test]
fn intruder_finds_the_odd_excerpt_or_fails_cleanly() {
    let client = Scripted::new(|req| {
        let shown = excerpts(req);
        let odd: Vec<usize> = (0..shown.len())
            .filter(|&i| !highlights_only_rivers(&shown[i]))
            .collect();
        Ok(text_response(match odd.as_slice() {
            [k] => format!("Most excerpts mark rivers.\n[INTRUDER]: {}", k + 1),
            _ => "They all look alike to me.".to_string(),
        }))
    });
    let scorer = IntruderScorer::new(&client, IntruderConfig::default());
    assert_eq!(scorer.name(), "intruder");
    let results = score_both(&scorer);
    let (good, bad) = (&results[0], &results[1]);
    assert_eq!((good.score.value, good.n_failed()), (1.0, 0));
    let ScoreDetails::Intruder { outcomes } = &good.details else {
        panic!()
    };
    assert_eq!(outcomes.len(), 6, "one trial per non-activating example");
    assert!(outcomes
        .iter()
        .all(|o| o.interpretation == "Most excerpts mark rivers."));
    assert_eq!((bad.score.value, bad.n_failed()), (0.0, 6));
    assert_eq!(bad.failures.len(), 6);
    assert_eq!(good.usage.prompt_tokens, 6 * 50);
}

/// #13: with disjoint train and test, a latent of 50 windows keeps 10 test examples, one per
/// quantile. Trials drawn from one quantile then showed 2 excerpts, which a judge passes by
/// coin flip; now every trial shows the configured 5, and a latent too small for one is
/// skipped with a typed error, not scored.
#[test]
fn intruder_on_a_small_latent_shows_full_trials_or_skips_it() {
    let client = Scripted::new(|req| {
        let shown = excerpts(req);
        let odd: Vec<usize> = (0..shown.len())
            .filter(|&i| !highlights_only_rivers(&shown[i]))
            .collect();
        Ok(text_response(match odd.as_slice() {
            [k] => format!("[INTRUDER]: {}", k + 1),
            _ => "They all look alike to me.".to_string(),
        }))
    });
    let small = LatentRecord {
        id: LatentId::new(HookPoint::Residual(4), 3),
        train: vec![],
        test: (0..10)
            .map(|i| {
                example(
                    &format!("We sailed down the {} on day {i}", RIVERS[i % 6]),
                    Some(4),
                    Some(i as u8 + 1),
                )
            })
            .collect(),
        non_activating: records()[0].non_activating.clone(),
        stats: LatentStats::default(),
        logits: None,
    };
    let scorer = IntruderScorer::new(&client, IntruderConfig::default());
    let result = block_on(scorer.score(&small)).unwrap();
    assert_eq!((result.score.value, result.n_failed()), (1.0, 0));
    let ScoreDetails::Intruder { outcomes } = &result.details else {
        panic!()
    };
    assert_eq!(outcomes.len(), 6);
    for o in outcomes {
        assert_eq!(o.sample.examples.len(), 5, "{:?}", o.sample.examples);
    }
    assert!(client
        .requests
        .lock()
        .unwrap()
        .iter()
        .all(|r| excerpts(r).len() == 5));
    // Quantiles 1–4 make the first pool, 5–10 the second; trials alternate between them.
    let quantile_of = |tokens: &Vec<String>| {
        small
            .test
            .iter()
            .find(|e| &e.str_tokens == tokens)
            .and_then(|e| e.quantile)
    };
    for (i, o) in outcomes.iter().enumerate() {
        let pool = if i % 2 == 0 { 1..=4 } else { 5..=10 };
        for (j, tokens) in o.sample.tokens.iter().enumerate() {
            if j != o.sample.intruder_index {
                assert!(pool.contains(&quantile_of(tokens).unwrap()), "trial {i}");
            }
        }
        assert!(pool.contains(&o.sample.chosen_quantile));
    }

    let calls = client.calls.load(Ordering::SeqCst);
    let mut tiny = small.clone();
    tiny.test.truncate(3);
    let err = block_on(scorer.score(&tiny)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooFewExamples {
                scorer: INTRUDER,
                have: 3,
                need: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_skip());
    assert!(err.to_string().contains("too few test examples"), "{err}");
    assert_eq!(
        client.calls.load(Ordering::SeqCst),
        calls,
        "no request made"
    );
    // Exactly enough for one trial's majority is enough.
    tiny.test = small.test[..4].to_vec();
    assert_eq!(
        intruder_trials(&tiny, &IntruderConfig::default())
            .unwrap()
            .len(),
        6
    );
}

/// Answers a JSON simulation prompt: 10 on river names when the description is right.
fn json_simulator(req: &ChatRequest) -> autointerp_client::Result<ChatResponse> {
    let doc: serde_json::Value = serde_json::from_str(last(req)).unwrap();
    if doc["description"] != GOOD {
        return Ok(text_response("Sorry, I can only guess: all zeros?"));
    }
    let acts: Vec<serde_json::Value> = doc["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let token = e["token"].as_str().unwrap();
            serde_json::json!({"token": token, "activation": if is_river(token) { 10 } else { 0 }})
        })
        .collect();
    let answer = serde_json::json!({"description": doc["description"], "activations": acts});
    Ok(text_response(format!("```json\n{answer}\n```")))
}

/// Answers a simulation prompt with prompt logprobs, tokenising the prompt one character per
/// token: after each tab, most of the mass on 10 for a river's line, on 0 otherwise. For any
/// other description, no prompt logprobs at all (a server that ignores the parameter).
fn logprob_simulator(req: &ChatRequest) -> autointerp_client::Result<ChatResponse> {
    let mut response = text_response("");
    if !req.messages[req.messages.len() - 2].content.contains(GOOD) {
        return Ok(response);
    }
    let text = req
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let chars: Vec<char> = text.chars().collect();
    let mut positions = vec![None];
    for i in 1..chars.len() {
        let top = if chars[i - 1] == '\t' {
            let line_start = chars[..i - 1]
                .iter()
                .rposition(|&c| c == '\n')
                .map_or(0, |p| p + 1);
            let token: String = chars[line_start..i - 1].iter().collect();
            if is_river(&token) {
                vec![("10".to_string(), 0.8f32.ln()), ("0".into(), 0.2f32.ln())]
            } else {
                vec![("0".to_string(), 0.9f32.ln()), ("1".into(), 0.1f32.ln())]
            }
        } else {
            vec![]
        };
        positions.push(Some(autointerp_client::TokenLogprobs {
            token: chars[i].to_string(),
            logprob: -1.0,
            top,
        }));
    }
    response.prompt_logprobs = Some(positions);
    Ok(response)
}

fn check_simulation(results: &[ScorerResult]) {
    let (good, bad) = (&results[0], &results[1]);
    assert!(
        (good.score.value - 1.0).abs() < 1e-9,
        "{}",
        good.score.value
    );
    assert_eq!(good.n_failed(), 0);
    let ScoreDetails::Simulation { groups } = &good.details else {
        panic!()
    };
    assert_eq!(
        groups.iter().map(|g| g.distance).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(groups[0].scored_sequence_simulations.len(), 12);
    assert!(bad.score.value.is_nan());
    assert_eq!(bad.n_failed(), 12);
    assert_eq!(bad.failures.len(), 12);
    // An undefined score survives JSON, written as delphi writes it.
    let json = serde_json::to_value(bad).unwrap();
    assert_eq!(json["score"]["value"], "nan");
    let back: ScorerResult = serde_json::from_value(json).unwrap();
    assert!(back.score.value.is_nan());
    assert_eq!(
        (back.details, back.failures),
        (bad.details.clone(), bad.failures.clone())
    );
}

#[test]
fn simulation_in_json_mode() {
    let client = Scripted::new(json_simulator);
    let scorer = SimulationScorer::new(
        &client,
        SimulationConfig {
            mode: SimulationMode::Json,
            ..SimulationConfig::default()
        },
    );
    assert_eq!(scorer.name(), "simulation");
    let results = score_both(&scorer);
    check_simulation(&results);
    assert_eq!(results[0].usage.prompt_tokens, 12 * 50);
}

#[test]
fn simulation_from_prompt_logprobs() {
    let client = Scripted::new(logprob_simulator);
    let scorer = SimulationScorer::new(&client, SimulationConfig::default());
    let results = score_both(&scorer);
    check_simulation(&results);
    assert!(results[1].failures[0].contains("no prompt logprobs"));
    let requests = client.requests.lock().unwrap();
    let req = &requests[0];
    assert_eq!((req.max_tokens, req.prompt_logprobs), (Some(1), Some(20)));
    assert_eq!(req.extra["continue_final_message"], true);
    assert_eq!(req.extra["add_generation_prompt"], false);
    assert!(last(req).ends_with("\tunknown\n<end>\n"));
}

#[test]
fn one_failed_request_fails_its_examples_and_all_failed_is_an_error() {
    let records = records();
    let explanations = explanations(&records);
    let oracle = classifier_oracle(mentions_river);
    let first = AtomicUsize::new(0);
    let client = Scripted::new(move |req| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(autointerp_client::Error::Timeout {
                after: std::time::Duration::from_secs(1),
            })
        } else {
            oracle(req)
        }
    });
    let result = block_on(
        DetectionScorer::new(&client, ClassifierConfig::default())
            .score(&records[0], &explanations[0]),
    )
    .unwrap();
    assert_eq!(result.n_failed(), 5, "the first batch of five");
    assert_eq!(result.score.value, 1.0, "the rest are right");
    assert_eq!(result.failures.len(), 1);
    assert!(
        result.failures[0].contains("timed out"),
        "{}",
        result.failures[0]
    );

    let down = Scripted::new(|_| {
        Err(autointerp_client::Error::Http {
            status: 401,
            body: "bad key".into(),
        })
    });
    let err = block_on(IntruderScorer::new(&down, IntruderConfig::default()).score(&records[0]))
        .unwrap_err();
    assert!(matches!(err, Error::Client(_)), "{err}");
    let err = block_on(
        SimulationScorer::new(&down, SimulationConfig::default())
            .score(&records[0], &explanations[0]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bad key"));

    let mut empty = records[0].clone();
    empty.test.clear();
    assert!(matches!(
        block_on(
            FuzzingScorer::new(&client, FuzzConfig::default()).score(&empty, &explanations[0])
        ),
        Err(Error::NotEnoughExamples { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Embedding and surprisal, with fakes

/// Bag of words over a fixed vocabulary; other words are ignored.
struct BagOfWords;

const VOCAB: [&str; 7] = ["river", "the", "thames", "a", "boat", "bank", "loan"];

impl Embedder for BagOfWords {
    fn embed<'a>(&'a self, texts: &'a [String]) -> autointerp_core::EmbedFuture<'a> {
        let vectors = texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0; VOCAB.len()];
                for w in t.split_whitespace() {
                    if let Some(i) = VOCAB.iter().position(|x| w.eq_ignore_ascii_case(x)) {
                        v[i] += 1.0;
                    }
                }
                v
            })
            .collect();
        Box::pin(std::future::ready(Ok(vectors)))
    }
}

/// A record of two activating and some non-activating examples, given as texts.
fn small_record(activating: &[&str], silent: &[&str]) -> LatentRecord {
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(1), 7),
        train: vec![],
        test: activating
            .iter()
            .map(|t| example(t, Some(0), Some(1)))
            .collect(),
        non_activating: silent.iter().map(|t| example(t, None, None)).collect(),
        stats: LatentStats::default(),
        logits: None,
    }
}

#[test]
fn embedding_auc_on_a_hand_checked_case() {
    // Query "river". Cosine similarities:
    //   activating  "the river Thames"      1/√3 ≈ 0.577
    //   activating  "a boat"                0
    //   silent      "the river bank river"  2/√6 ≈ 0.816
    //   silent      "a loan"                0
    //   silent      ""                      undefined (zero vector): failed
    // Pairs (activating, silent): 0.577<0.816 → 0, 0.577>0 → 1, 0<0.816 → 0, 0=0 → ½.
    // AUC = 1.5 / 4 = 0.375.
    let record = small_record(
        &["the river Thames", "a boat"],
        &["the river bank river", "a loan", ""],
    );
    let explanation = Explanation {
        latent: record.id,
        text: "river".into(),
    };
    let scorer = EmbeddingScorer::new(BagOfWords, EmbeddingConfig::default());
    assert_eq!(scorer.name(), "embedding");
    let result = block_on(Scorer::score(&scorer, &record, &explanation)).unwrap();
    assert!(
        (result.score.value - 0.375).abs() < 1e-12,
        "{}",
        result.score.value
    );
    assert_eq!(result.n_failed(), 1);
    let ScoreDetails::Embedding { outcomes } = &result.details else {
        panic!()
    };
    let sims: Vec<Option<f32>> = outcomes.iter().map(|o| o.similarity).collect();
    assert!((sims[0].unwrap() - 1.0 / 3f32.sqrt()).abs() < 1e-6);
    assert!((sims[2].unwrap() - 2.0 / 6f32.sqrt()).abs() < 1e-6);
    assert_eq!((sims[1], sims[3], sims[4]), (Some(0.0), Some(0.0), None));
    assert_eq!(
        outcomes.iter().map(|o| o.activating).collect::<Vec<_>>(),
        vec![true, true, false, false, false]
    );

    // A prefix of words outside the vocabulary changes nothing.
    let prefixed = EmbeddingScorer::new(
        BagOfWords,
        EmbeddingConfig {
            query_prefix: "Query: ".into(),
        },
    );
    let again = block_on(prefixed.score(&record, &explanation)).unwrap();
    assert_eq!(again.score.value, result.score.value);

    // Two latents: a perfect explanation, and one that ranks the wrong way.
    let record = small_record(&["the Thames", "the river"], &["a bank", "a loan"]);
    let auc = |text: &str| {
        let e = Explanation {
            latent: record.id,
            text: text.into(),
        };
        block_on(scorer.score(&record, &e)).unwrap().score.value
    };
    assert_eq!(auc("river Thames"), 1.0);
    assert_eq!(auc("bank loan"), 0.0);
}

/// An embedder that returns one vector too few.
struct Short;

impl Embedder for Short {
    fn embed<'a>(&'a self, texts: &'a [String]) -> autointerp_core::EmbedFuture<'a> {
        Box::pin(std::future::ready(Ok(vec![vec![1.0]; texts.len() - 1])))
    }
}

#[test]
fn bad_embedders_are_errors() {
    let record = small_record(&["the river"], &["a loan"]);
    let e = Explanation {
        latent: record.id,
        text: "river".into(),
    };
    let err = block_on(EmbeddingScorer::new(Short, EmbeddingConfig::default()).score(&record, &e))
        .unwrap_err();
    assert!(matches!(err, Error::Embedder { .. }), "{err}");
    let no_silent = small_record(&["the river"], &[]);
    assert!(matches!(
        block_on(
            EmbeddingScorer::new(BagOfWords, EmbeddingConfig::default()).score(&no_silent, &e)
        ),
        Err(Error::NotEnoughExamples { .. })
    ));
}

/// A token scorer whose tokens are words: log-probability −1 for a word of the description the
/// prefix ends with, −3 for any other. The word `broken` cannot be scored.
struct DescriptionReader {
    calls: AtomicUsize,
}

impl TokenScorer for DescriptionReader {
    async fn logprobs(&self, prefix: &str, text: &str) -> autointerp_client::Result<Vec<f32>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if text.contains("broken") {
            return Err(autointerp_client::Error::Config("cannot score".into()));
        }
        let (_, description) = prefix.rsplit_once("Description: ").unwrap();
        let description: Vec<String> = description
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .map(|w| w.trim_end_matches('.').to_lowercase())
            .collect();
        Ok(text
            .split_whitespace()
            .map(|w| {
                if description.contains(&w.to_lowercase()) {
                    -1.0
                } else {
                    -3.0
                }
            })
            .collect())
    }
}

#[test]
fn surprisal_auc_on_a_hand_checked_case() {
    // Explanation "river Thames"; the baseline names none of the words, so every word costs 3.
    //   activating "the river Thames": losses 3,1,1 → 5/3; baseline 3 → reduction 4/3
    //   activating "a boat":           reduction 0
    //   silent     "river bank":       losses 1,3 → 2 → reduction 1
    //   silent     "a loan":           reduction 0
    //   silent     "broken text":      the model fails: a failed example
    // Pairs: 4/3>1 → 1, 4/3>0 → 1, 0<1 → 0, 0=0 → ½; AUC = 2.5 / 4 = 0.625.
    let record = small_record(
        &["the river Thames", "a boat"],
        &["river bank", "a loan", "broken text"],
    );
    let explanation = Explanation {
        latent: record.id,
        text: "river Thames".into(),
    };
    let model = DescriptionReader {
        calls: AtomicUsize::new(0),
    };
    let scorer = SurprisalScorer::new(&model, SurprisalConfig::default());
    assert_eq!(scorer.name(), "surprisal");
    let result = block_on(Scorer::score(&scorer, &record, &explanation)).unwrap();
    assert!(
        (result.score.value - 0.625).abs() < 1e-12,
        "{}",
        result.score.value
    );
    assert_eq!(result.n_failed(), 1);
    assert_eq!(result.failures.len(), 1);
    assert!(result.failures[0].contains("cannot score"));
    assert_eq!(
        model.calls.load(Ordering::SeqCst),
        10,
        "two calls per example"
    );
    let ScoreDetails::Surprisal { outcomes } = &result.details else {
        panic!()
    };
    assert_eq!(outcomes[0].explanation, vec![3.0, 1.0, 1.0]);
    assert_eq!(outcomes[0].no_explanation, vec![3.0, 3.0, 3.0]);
    assert!((outcomes[0].loss_reduction.unwrap() - 4.0 / 3.0).abs() < 1e-12);
    assert_eq!(outcomes[2].loss_reduction, Some(1.0));
    assert_eq!(outcomes[4].loss_reduction, None);

    // Two latents: an explanation naming only the activating words, and one naming the silent.
    let record = small_record(&["the Thames", "the Rhine"], &["a bank", "a loan"]);
    let auc = |text: &str| {
        let e = Explanation {
            latent: record.id,
            text: text.into(),
        };
        block_on(scorer.score(&record, &e)).unwrap().score.value
    };
    assert_eq!(auc("Thames and Rhine"), 1.0);
    assert_eq!(auc("bank loan"), 0.0);

    // A model that fails on everything is an error.
    let all_broken = small_record(&["broken a"], &["broken b"]);
    assert!(matches!(
        block_on(scorer.score(&all_broken, &explanation)),
        Err(Error::Client(_))
    ));
}

#[test]
fn surprisal_asks_for_an_excerpts_baseline_once() {
    // The random control and best-of-K score the same excerpts again with another explanation:
    // the baseline side is remembered, the explanation side asked anew, and the scores are those
    // of a scorer that remembers nothing.
    let record = small_record(
        &["the Thames", "the Rhine"],
        &["a bank", "a loan", "broken x"],
    );
    let explain = |text: &str| Explanation {
        latent: record.id,
        text: text.into(),
    };
    let model = DescriptionReader {
        calls: AtomicUsize::new(0),
    };
    let fresh = DescriptionReader {
        calls: AtomicUsize::new(0),
    };
    let scorer = SurprisalScorer::new(&model, SurprisalConfig::default());
    let forgetful =
        SurprisalScorer::new(&fresh, SurprisalConfig::default()).with_baseline_memo_bytes(0);
    for (i, text) in ["Thames and Rhine", "bank loan", "rivers"]
        .iter()
        .enumerate()
    {
        let a = block_on(scorer.score(&record, &explain(text))).unwrap();
        let b = block_on(forgetful.score(&record, &explain(text))).unwrap();
        assert_eq!(a.score, b.score);
        assert_eq!(a.details, b.details);
        // 5 excerpts: the first explanation asks for both sides of each (10 calls); later ones
        // only for the explanation's side, and for the baseline of the one that failed.
        assert_eq!(model.calls.load(Ordering::SeqCst), 10 + 6 * i, "{text}");
        assert_eq!(fresh.calls.load(Ordering::SeqCst), 10 * (i + 1));
    }
}
