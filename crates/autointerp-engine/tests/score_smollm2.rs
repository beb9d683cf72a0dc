//! End to end with the real in-process engine: SmolLM2-135M-Instruct (fetched by
//! `scripts/fetch-assets.sh smollm2`) explains two latents and scores the explanations with
//! detection and fuzzing, as `autointerp demo` does.
//!
//! The latents are written by hand so that the right answer is known: one fires on words of war,
//! one on four-digit years. A 135M model cannot keep a `[1,0,…]` answer format, so the scorers
//! read one-token answers from logprobs ([`AnswerMode::Logprob`]): no answer may fail.

use std::sync::OnceLock;

use autointerp_core::assets::{fetch, Asset};
use autointerp_core::{Example, Explanation, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_engine::{EngineConfig, LocalEngine};
use autointerp_explain::{DefaultExplainer, ExplainerConfig, GenerationConfig};
use autointerp_model::DType;
use autointerp_score::{
    AnswerMode, ClassifierConfig, DetectionScorer, FuzzConfig, FuzzingScorer, ScoreDetails,
    ScorerResult,
};
use futures::executor::block_on;
use tch::Device;

fn engine() -> LocalEngine {
    static ENGINE: OnceLock<LocalEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let gguf = fetch(Asset::Smollm2).unwrap_or_else(|e| panic!("{e}"));
            LocalEngine::load(
                gguf.to_str().unwrap(),
                Device::Cpu,
                DType::F32,
                EngineConfig::default(),
            )
            .unwrap()
        })
        .clone()
}

/// An excerpt split into words (each but the first with its leading space), the latent firing
/// on the words `fires` accepts.
fn example(text: &str, fires: fn(&str) -> bool, quantile: Option<u8>) -> Example {
    let str_tokens: Vec<String> = text
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            }
        })
        .collect();
    let activations: Vec<f32> = str_tokens
        .iter()
        .map(|t| if fires(t.trim()) { 4.0 } else { 0.0 })
        .collect();
    Example {
        tokens: (0..str_tokens.len() as u32).collect(),
        normalized: activations.iter().map(|a| (a * 2.5) as u8).collect(),
        str_tokens,
        activations,
        quantile,
        distance: None,
    }
}

fn is_war(w: &str) -> bool {
    let w = w
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    matches!(
        w.as_str(),
        "war" | "wars" | "warfare" | "battle" | "battles"
    )
}

fn is_year(w: &str) -> bool {
    let w = w.trim_matches(|c: char| !c.is_alphanumeric());
    w.len() == 4 && w.starts_with(['1', '2']) && w.bytes().all(|b| b.is_ascii_digit())
}

const WAR: [&str; 14] = [
    "The war in the Pacific has cost this nation dearly",
    "We did not seek this war, but we will end it",
    "After the war our soldiers came home to their families",
    "No nation can win a war without the support of its people",
    "The battle for freedom is fought on many fronts",
    "Two world wars have taught us the price of weakness",
    "The cost of the war has been borne by every family",
    "We must never again be drawn into a war of choice",
    "Our troops fought every battle with courage",
    "The long war against tyranny is not over",
    "This war has shown the strength of our alliance",
    "Modern warfare demands new kinds of readiness",
    "The battles of the last year were hard won",
    "A war abroad must not make us forget our duties at home",
];

const YEARS: [&str; 14] = [
    "In 1945 the nation turned to the work of peace",
    "By 2020 every child should have a good school",
    "The budget for 1962 will be balanced",
    "Since 1933 the government has helped the unemployed",
    "The census of 1890 showed a nation on the move",
    "Our goal is clean air by 2030",
    "The treaty of 1898 changed our place in the world",
    "Production doubled between 1940 and 1944",
    "In 2009 the economy was losing jobs every month",
    "The law passed in 1964 protects the right to vote",
    "By 1920 women had won the right to vote",
    "Exports in 1999 reached a record high",
    "The plan of 1947 rebuilt Europe",
    "Since 1789 this office has been held by the people's choice",
];

const NEITHER: [&str; 6] = [
    "Our farmers grow more food than ever before",
    "Every child deserves a teacher who cares",
    "The Congress must act on the budget this spring",
    "Small businesses create most of the new jobs",
    "We will build roads and bridges across the country",
    "Health care should be affordable for every family",
];

fn record(index: u32, texts: &[&str], fires: fn(&str) -> bool) -> LatentRecord {
    let (train, test) = texts.split_at(8);
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(15), index),
        train: train.iter().map(|t| example(t, fires, Some(1))).collect(),
        test: test
            .iter()
            .enumerate()
            .map(|(i, t)| example(t, fires, Some(1 + (i % 2) as u8)))
            .collect(),
        non_activating: NEITHER.iter().map(|t| example(t, fires, None)).collect(),
        stats: LatentStats {
            n_activations: 20,
            n_tokens: 10_000,
            max_activation: 4.0,
        },
        logits: None,
    }
}

/// Every example answered, with a probability; returns the detection AUC.
fn check_complete(result: &ScorerResult) -> f64 {
    assert_eq!(result.n_failed(), 0, "{:?}", result.failures);
    let ScoreDetails::Classifier { outcomes, summary } = &result.details else {
        panic!("classifier details expected");
    };
    assert_eq!(outcomes.len(), 12);
    assert!(outcomes.iter().all(|o| o.probability.is_some()));
    assert!((0.0..=1.0).contains(&result.score.value));
    summary.auc.expect("probabilities give an AUC")
}

#[test]
fn smollm2_explains_and_scores_two_latents() {
    let engine = engine();
    let records = [record(0, &WAR, is_war), record(1, &YEARS, is_year)];

    // Explain both at once, as the pipeline does (the engine batches them).
    let explainer = DefaultExplainer::new(&engine, ExplainerConfig::default())
        .with_generation(GenerationConfig::default().with_max_tokens(64));
    let outcomes = block_on(futures::future::join_all(
        records.iter().map(|r| explainer.explain(r)),
    ));
    let explanations: Vec<Explanation> = outcomes
        .into_iter()
        .map(|o| {
            let o = o.unwrap();
            let e = o.explanation().cloned();
            e.unwrap_or_else(|| panic!("no explanation in {:?}", o.answer()))
        })
        .collect();
    for (e, r) in explanations.iter().zip(&records) {
        assert_eq!(e.latent, r.id);
        assert!(!e.text.trim().is_empty());
    }

    let cfg = ClassifierConfig {
        answer: AnswerMode::Logprob,
        ..ClassifierConfig::default()
    };
    let detection = DetectionScorer::new(&engine, cfg.clone());
    let fuzz = FuzzingScorer::new(
        &engine,
        FuzzConfig {
            classifier: cfg,
            ..FuzzConfig::default()
        },
    );
    // The model's own explanations: every answer read, whatever the quality.
    for (r, e) in records.iter().zip(&explanations) {
        check_complete(&block_on(detection.score(r, e)).unwrap());
        check_complete(&block_on(fuzz.score(r, e)).unwrap());
    }

    // What a 135M judge can do: every answer is read, but its judgement is close to chance.
    // Measured with this test's records, P(1) averages 0.79 on activating and 0.79 on
    // non-activating excerpts, and hand-written correct explanations do no better than the other
    // latent's. So the numbers are printed, not asserted; the demo pairs these scores with the
    // random-explanation control, and a real run uses a real explainer model.
    for (i, r) in records.iter().enumerate() {
        let right = [
            "Words about war and battles.",
            "Four-digit years, such as 1945 or 2020.",
        ];
        let auc = |text: &str| {
            let e = Explanation {
                latent: r.id,
                text: text.into(),
            };
            check_complete(&block_on(detection.score(r, &e)).unwrap())
        };
        eprintln!(
            "{}: detection AUC {:.3} with a correct explanation, {:.3} with the other latent's",
            r.id,
            auc(right[i]),
            auc(right[1 - i])
        );
    }
}
