//! `Scorer::retry_failed`: after a judge failed some requests, asking again sends exactly the
//! failed batches (trials, sequences), keeps every other outcome verbatim, and ends where a
//! healthy judge would have started; a judge still failing leaves the failed items failed,
//! without an error. The earlier result goes through its score file, as in a rerun.

use std::sync::{Arc, Mutex};

use autointerp_client::{ChatRequest, ChatResponse, Client};
use autointerp_core::{Example, Explanation, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_score::*;
use futures::executor::block_on;

const RIVERS: [&str; 6] = ["Thames", "Rhine", "Nile", "Danube", "Seine", "Volga"];

fn example(words: &str, active: Option<usize>, quantile: Option<u8>) -> Example {
    let str_tokens: Vec<String> = words
        .split(' ')
        .enumerate()
        .map(|(i, w)| if i == 0 { w.into() } else { format!(" {w}") })
        .collect();
    let activations: Vec<f32> = (0..str_tokens.len())
        .map(|i| if Some(i) == active { 4.0 } else { 0.0 })
        .collect();
    Example {
        tokens: (0..str_tokens.len() as u32).collect(),
        normalized: activations
            .iter()
            .map(|&a| if a > 0.0 { 10 } else { 0 })
            .collect(),
        str_tokens,
        activations,
        quantile,
        distance: None,
    }
}

/// Six river excerpts in three quantiles, six silent ones.
fn record() -> LatentRecord {
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(4), 1),
        train: vec![],
        test: RIVERS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let q = 1 + (i / 2) as u8;
                example(&format!("We sailed down the {r} today"), Some(4), Some(q))
            })
            .collect(),
        non_activating: [
            "The bank raised its rates again",
            "She bought three apples and pears",
            "Our team meets at noon today",
            "The parser was written last week",
            "He read the letter twice slowly",
            "A loan was approved this morning",
        ]
        .iter()
        .map(|t| example(t, None, None))
        .collect(),
        stats: LatentStats::default(),
        logits: None,
    }
}

fn explanation() -> Explanation {
    Explanation {
        latent: record().id,
        text: "Names of rivers.".into(),
    }
}

/// The excerpts of the last message: `Excerpt k: text` lines.
fn excerpts(req: &ChatRequest) -> Vec<String> {
    let last = &req.messages.last().unwrap().content;
    last.lines()
        .filter_map(|l| l.strip_prefix("Excerpt "))
        .filter_map(|l| l.split_once(": ").map(|(_, t)| t.to_string()))
        .collect()
}

/// A judge for every LLM scorer: a classifier prompt gets 1 for each excerpt naming a river, an
/// intruder trial the first excerpt that names none, a JSON simulation 10 on river tokens. A
/// request showing a word of `fail_on` gets HTTP 400 instead (`garbage`: an unparseable answer).
/// Every request is kept.
struct Judge {
    fail_on: Vec<&'static str>,
    garbage: bool,
    asked: Mutex<Vec<String>>,
}

impl Judge {
    fn new(fail_on: &[&'static str], garbage: bool) -> Arc<Self> {
        Arc::new(Self {
            fail_on: fail_on.to_vec(),
            garbage,
            asked: Mutex::new(Vec::new()),
        })
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    fn answer(req: &ChatRequest) -> String {
        let last = &req.messages.last().unwrap().content;
        if let Ok(doc) = serde_json::from_str::<serde_json::Value>(last) {
            let acts: Vec<serde_json::Value> = doc["activations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let token = e["token"].as_str().unwrap();
                    let river = RIVERS.contains(&token.trim());
                    serde_json::json!({"token": token, "activation": if river { 10 } else { 0 }})
                })
                .collect();
            return serde_json::json!({"activations": acts}).to_string();
        }
        let river = |e: &String| RIVERS.iter().any(|r| e.contains(r));
        let shown = excerpts(req);
        if req.messages[0].content.contains(INTRUDER_MARKER) {
            let odd = shown.iter().position(|e| !river(e)).unwrap_or(0);
            return format!("{INTRUDER_MARKER} {}", odd + 1);
        }
        let labels: Vec<&str> = shown
            .iter()
            .map(|e| if river(e) { "1" } else { "0" })
            .collect();
        format!("[{}]", labels.join(","))
    }
}

impl Client for Judge {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        // The last message tells the requests of one scorer apart.
        let last = &req.messages.last().unwrap().content;
        self.asked.lock().unwrap().push(last.clone());
        if self.fail_on.iter().any(|w| last.contains(w)) {
            if self.garbage {
                return Ok(ChatResponse {
                    text: "I cannot tell.".into(),
                    ..ChatResponse::default()
                });
            }
            return Err(autointerp_client::Error::Http {
                status: 400,
                body: "bad request".into(),
            });
        }
        Ok(ChatResponse {
            text: Self::answer(&req),
            ..ChatResponse::default()
        })
    }
}

/// The result as a rerun sees it: written to its score file and read back.
fn through_file(result: &ScorerResult) -> ScoreDetails {
    let dir = tempfile::tempdir().unwrap();
    let path = result.write_score_file(dir.path()).unwrap();
    let back = read_score_file(&path, &result.score.scorer).unwrap();
    assert_eq!(back.n_failed(), result.n_failed());
    back
}

/// Scores with a judge failing on `fail_on`, retries with a healthy judge and with the failing
/// one; checks what each asked and kept. Returns the first result's failed count.
fn check_retry<S: Scorer>(
    scorer: impl Fn(Arc<Judge>) -> S,
    fail_on: &[&'static str],
    garbage: bool,
    kept: impl Fn(&ScoreDetails, &ScoreDetails),
) -> usize {
    let (record, explanation) = (record(), explanation());
    let faulty = Judge::new(fail_on, garbage);
    let first = block_on(scorer(Arc::clone(&faulty)).score(&record, &explanation)).unwrap();
    let n_failed = first.n_failed();
    assert!(n_failed > 0, "the judge failed nothing");
    assert!(!first.failures.is_empty());
    let previous = through_file(&first);
    // The requests that failed: those showing a word the judge fails on.
    let failed_requests: Vec<String> = faulty
        .asked()
        .into_iter()
        .filter(|r| fail_on.iter().any(|w| r.contains(w)))
        .collect();
    assert!(failed_requests.len() < faulty.asked().len());

    // A judge still failing: the same requests, the same failed items, the rest kept.
    let still = Judge::new(fail_on, garbage);
    let again = block_on(scorer(Arc::clone(&still)).retry_failed(&record, &explanation, &previous))
        .unwrap();
    assert_eq!(still.asked(), failed_requests);
    assert_eq!(again.n_failed(), n_failed);
    assert_eq!(again.details, first.details);

    // A healthy judge: only the failed requests, and the result of a healthy judge from the
    // start, the earlier answers kept verbatim.
    let healthy = Judge::new(&[], false);
    let retried =
        block_on(scorer(Arc::clone(&healthy)).retry_failed(&record, &explanation, &previous))
            .unwrap();
    assert_eq!(healthy.asked(), failed_requests);
    assert_eq!(retried.n_failed(), 0);
    assert!(retried.failures.is_empty());
    kept(&previous, &retried.details);
    let fresh = block_on(scorer(Judge::new(&[], false)).score(&record, &explanation)).unwrap();
    assert_eq!(retried.details, fresh.details);
    assert_eq!(retried.score.value, fresh.score.value);
    n_failed
}

/// Every classifier outcome that succeeded before is unchanged.
fn classifier_kept(before: &ScoreDetails, after: &ScoreDetails) {
    let (
        ScoreDetails::Classifier { outcomes: a, .. },
        ScoreDetails::Classifier { outcomes: b, .. },
    ) = (before, after)
    else {
        panic!("classifier details expected");
    };
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(b) {
        if !a.failed() {
            assert_eq!(a, b);
        }
    }
}

#[test]
fn detection_asks_again_only_the_failed_batches() {
    // "Nile" is in one batch of five: five failed examples.
    let n = check_retry(
        |j| DetectionScorer::new(j, ClassifierConfig::default()),
        &["Nile"],
        false,
        classifier_kept,
    );
    assert_eq!(n, 5);
    // An unparseable answer is a failed item too.
    let n = check_retry(
        |j| DetectionScorer::new(j, ClassifierConfig::default()),
        &["Nile"],
        true,
        classifier_kept,
    );
    assert_eq!(n, 5);
    // One excerpt per request: only the Nile excerpt is asked again.
    let one = ClassifierConfig {
        n_examples_shown: 1,
        ..ClassifierConfig::default()
    };
    let n = check_retry(
        |j| DetectionScorer::new(j, one.clone()),
        &["Nile"],
        false,
        classifier_kept,
    );
    assert_eq!(n, 1);
}

#[test]
fn fuzzing_asks_again_only_the_failed_batches() {
    let n = check_retry(
        |j| FuzzingScorer::new(j, FuzzConfig::default()),
        &["Nile"],
        false,
        classifier_kept,
    );
    assert!((1..=5).contains(&n), "{n}");
}

#[test]
fn intruder_runs_again_only_the_failed_trials() {
    let n = check_retry(
        |j| IntruderScorer::new(j, IntruderConfig::default()),
        &["loan"],
        false,
        |before, after| {
            let (ScoreDetails::Intruder { outcomes: a }, ScoreDetails::Intruder { outcomes: b }) =
                (before, after)
            else {
                panic!("intruder details expected");
            };
            for (a, b) in a.iter().zip(b) {
                if a.correct.is_some() {
                    assert_eq!(a, b);
                }
            }
        },
    );
    assert_eq!(n, 1, "the one trial whose intruder is the loan");
}

#[test]
fn simulation_asks_again_only_the_failed_sequences() {
    let json = SimulationConfig {
        mode: SimulationMode::Json,
        ..SimulationConfig::default()
    };
    let n = check_retry(
        |j| SimulationScorer::new(j, json.clone()),
        &["Nile", "pears"],
        false,
        |before, after| {
            let (ScoreDetails::Simulation { groups: a }, ScoreDetails::Simulation { groups: b }) =
                (before, after)
            else {
                panic!("simulation details expected");
            };
            assert_eq!(a[0].failed_sequences.len(), 2);
            // Every sequence simulated before keeps its prediction.
            for s in &a[0].scored_sequence_simulations {
                assert!(b[0].scored_sequence_simulations.contains(s));
            }
        },
    );
    assert_eq!(n, 2);
}

#[test]
fn earlier_results_shown_otherwise_are_scored_anew() {
    let (record, explanation) = (record(), explanation());
    let faulty = Judge::new(&["Nile"], false);
    let first = block_on(
        DetectionScorer::new(&faulty, ClassifierConfig::default()).score(&record, &explanation),
    )
    .unwrap();
    let previous = through_file(&first);
    // Another seed shows the examples in another order: nothing can be reused.
    let other = ClassifierConfig {
        seed: 7,
        ..ClassifierConfig::default()
    };
    let healthy = Judge::new(&[], false);
    let result = block_on(DetectionScorer::new(&healthy, other).retry_failed(
        &record,
        &explanation,
        &previous,
    ))
    .unwrap();
    assert_eq!(healthy.asked().len(), 3, "all 12 examples, in batches of 5");
    assert_eq!(result.n_failed(), 0);
    // Another batch size shows the same examples in the same order: the answered ones are
    // kept, and the five failed ones are asked again in batches of four.
    let four = ClassifierConfig {
        n_examples_shown: 4,
        ..ClassifierConfig::default()
    };
    let healthy = Judge::new(&[], false);
    let result = block_on(DetectionScorer::new(&healthy, four).retry_failed(
        &record,
        &explanation,
        &previous,
    ))
    .unwrap();
    assert!(healthy.asked().len() < 3);
    assert_eq!(result.n_failed(), 0);
    classifier_kept(&previous, &result.details);
    // Details of another scorer are not reusable either.
    let intruder = ScoreDetails::Intruder { outcomes: vec![] };
    let healthy = Judge::new(&[], false);
    block_on(
        DetectionScorer::new(&healthy, ClassifierConfig::default()).retry_failed(
            &record,
            &explanation,
            &intruder,
        ),
    )
    .unwrap();
    assert_eq!(healthy.asked().len(), 3);
}

/// A scorer that only implements `score`, counting its calls.
struct Counting(Mutex<usize>);

impl Scorer for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    async fn score(&self, record: &LatentRecord, _: &Explanation) -> Result<ScorerResult> {
        *self.0.lock().unwrap() += 1;
        Ok(ScorerResult {
            score: autointerp_core::Score {
                latent: record.id,
                scorer: "counting".into(),
                value: 1.0,
                n_failed: 0,
            },
            details: ScoreDetails::Embedding { outcomes: vec![] },
            failures: vec![],
            usage: Usage::default(),
        })
    }
}

#[test]
fn by_default_a_retry_scores_everything_and_works_boxed() {
    let counting = Counting(Mutex::new(0));
    let scorer: &dyn DynScorer = &counting;
    let (record, explanation) = (record(), explanation());
    let previous = ScoreDetails::Embedding { outcomes: vec![] };
    let result = block_on(scorer.retry_failed_boxed(&record, &explanation, &previous)).unwrap();
    assert_eq!(result.score.scorer, "counting");
    assert_eq!(*counting.0.lock().unwrap(), 1);
}

#[test]
fn score_files_of_every_kind_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (record, explanation) = (record(), explanation());
    let judge = Judge::new(&["Nile"], true);
    let results = [
        block_on(
            DetectionScorer::new(&judge, ClassifierConfig::default()).score(&record, &explanation),
        ),
        block_on(IntruderScorer::new(&judge, IntruderConfig::default()).score(&record)),
        block_on(
            SimulationScorer::new(
                &judge,
                SimulationConfig {
                    mode: SimulationMode::Json,
                    ..SimulationConfig::default()
                },
            )
            .score(&record, &explanation),
        ),
    ];
    for result in results {
        let result = result.unwrap();
        let path = result.write_score_file(dir.path()).unwrap();
        let back = read_score_file(&path, &result.score.scorer).unwrap();
        assert_eq!(back, result.details);
        assert_eq!(back.n_failed(), result.n_failed());
    }
    assert!(matches!(
        read_score_file(&dir.path().join("nope.txt"), "detection"),
        Err(Error::Io { .. })
    ));
}
