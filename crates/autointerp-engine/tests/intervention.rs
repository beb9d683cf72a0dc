//! Intervention scoring end to end on a planted latent: the tiny `llama` fixture of
//! autointerp-model, with a word-level tokenizer over its 96 ids (`w3` … `w95`) and a sparse
//! coder at its last layer whose latent 0's decoder row is the unembedding direction of one
//! word. Steering along it (strength calibrated to the target KL) makes the model say that
//! word; a scripted judge that looks for the explained word in each continuation then names
//! the steered one every time under the right explanation, and is at chance under a wrong one.

use std::path::PathBuf;
use std::str::FromStr;

use autointerp_client::{ChatRequest, ChatResponse, Client, Intervener};
use autointerp_core::{Explanation, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_engine::{Edit, EngineConfig, InterventionConfig, LocalEngine, LocalIntervener};
use autointerp_model::{DType, Model, Tokenizer};
use autointerp_sae::{Activation, SparseCoder, Weights};
use autointerp_score::{InterventionScorer, ScoreDetails};
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../autointerp-model/tests/fixtures/llama")
}

/// `<pad>` (0, also the unknown token), `</s>`, `<s>`, then `w3` … `w95`, split on spaces.
fn word_tokenizer() -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<pad>", "</s>", "<s>"].iter().enumerate() {
        vocab.insert((*t).into(), i.into());
    }
    for i in 3..96 {
        vocab.insert(format!("w{i}"), i.into());
    }
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<pad>"}
    });
    Tokenizer::from_tokenizer(tokenizers::Tokenizer::from_str(&json.to_string()).unwrap())
}

/// The word whose unembedding direction promotes it most clearly over every other word, and
/// that direction (unit norm).
fn planted(model: &Model) -> (i64, Tensor) {
    let weights: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture().join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let w_u = &weights["lm_head.weight"]; // [96, 32]
    let lens = model.direction_logits(w_u).unwrap(); // [96, 96]
    let (mut best, mut margin) = (3, f64::NEG_INFINITY);
    for t in 3..96 {
        let row = lens.get(t);
        let own = row.double_value(&[t]);
        let others = row.index_fill(0, &Tensor::from_slice(&[t]), f64::NEG_INFINITY);
        let m = own - others.max().double_value(&[]);
        if m > margin {
            (best, margin) = (t, m);
        }
    }
    assert!(margin > 0.0, "no word's direction promotes it");
    let d = w_u.get(best);
    (best, &d / d.norm())
}

/// Answers the continuation that says the explained word more often (1 on a tie).
struct WordCounter;

impl Client for WordCounter {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        let prompt = &req.messages.last().unwrap().content;
        let word = prompt
            .lines()
            .find_map(|l| l.strip_prefix("Feature: the word "))
            .unwrap()
            .trim()
            .to_owned();
        let count = |label: &str| {
            prompt
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .unwrap()
                .split_whitespace()
                .filter(|w| *w == word)
                .count()
        };
        let answer = if count("Continuation 2: ") > count("Continuation 1: ") {
            "2"
        } else {
            "1"
        };
        Ok(ChatResponse {
            text: answer.into(),
            ..ChatResponse::default()
        })
    }
}

#[tokio::test]
async fn a_planted_latent_scores_near_1_and_a_wrong_explanation_near_chance() {
    let model = Model::from_hf_dir(fixture(), Device::Cpu, DType::F32).unwrap();
    let (word, direction) = planted(&model);
    let hook = HookPoint::Residual(1);
    let opts = (Kind::Float, Device::Cpu);
    let w_dec = Tensor::randn([4, 32], opts) * 0.01;
    w_dec.get(0).copy_(&direction);
    let coder = SparseCoder::new(
        Weights {
            w_enc: Tensor::randn([32, 4], opts),
            b_enc: Tensor::zeros([4], opts),
            w_dec: Some(w_dec),
            b_dec: Tensor::zeros([32], opts),
            w_skip: None,
        },
        Activation::TopK { k: 1 },
    )
    .unwrap();
    let engine =
        LocalEngine::from_model(model, Some(word_tokenizer()), EngineConfig::default()).unwrap();
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("w{} w{} w{}", 10 + i, 40 + 2 * i, 70 + i))
        .collect();
    let config = InterventionConfig {
        prompts,
        max_new_tokens: 6,
        ..InterventionConfig::default()
    };
    let intervener =
        LocalIntervener::new(engine.clone(), [(hook, Edit::share(coder))], config).unwrap();
    let latent = LatentId::new(hook, 0);

    let first = intervener.intervene(latent).await.unwrap();
    assert!(first.converged, "{first:?}");
    assert!((first.kl - 1.0).abs() <= 0.1, "{first:?}");
    let said = |text: &str| {
        text.split_whitespace()
            .filter(|w| *w == format!("w{word}"))
            .count()
    };
    let steered: usize = first.pairs.iter().map(|p| said(&p.steered)).sum();
    let clean: usize = first.pairs.iter().map(|p| said(&p.clean)).sum();
    assert!(
        steered > clean,
        "steering along w{word} did not make it say w{word}: {first:?}"
    );
    // The token change names the planted word first.
    assert_eq!(
        first.promoted[0].0,
        format!("w{word}"),
        "{:?}",
        first.promoted
    );
    // Remembered: the second ask runs nothing.
    let batches = engine.stats().batches;
    let again = intervener.intervene(latent).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    assert_eq!(engine.stats().batches, batches);

    let record = LatentRecord {
        id: latent,
        train: vec![],
        test: vec![],
        non_activating: vec![],
        stats: LatentStats::default(),
        logits: None,
    };
    let scorer = InterventionScorer::new(WordCounter, &intervener, 7);
    let score = |text: String| {
        let scorer = &scorer;
        let record = &record;
        async move {
            scorer
                .score(record, &Explanation { latent, text })
                .await
                .unwrap()
        }
    };
    let right = score(format!("the word w{word}")).await;
    assert!(right.score.value >= 0.875, "{right:?}");
    // A word no continuation says: every trial is a tie, answered "1", right only where the
    // steered continuation happened to be shown first.
    let absent = (3..96)
        .find(|&t| {
            first
                .pairs
                .iter()
                .all(|p| said_word(&p.steered, t) == 0 && said_word(&p.clean, t) == 0)
        })
        .unwrap();
    let wrong = score(format!("the word w{absent}")).await;
    let ScoreDetails::Intervention { trials } = &wrong.details else {
        panic!("{:?}", wrong.details)
    };
    let shown_first = trials.iter().filter(|t| t.steered_first).count() as f64;
    assert_eq!(wrong.score.value, shown_first / trials.len() as f64);
    assert!((0.25..=0.75).contains(&wrong.score.value), "{wrong:?}");
}

fn said_word(text: &str, id: i64) -> usize {
    text.split_whitespace()
        .filter(|w| *w == format!("w{id}"))
        .count()
}

/// Explains from the prompt's token-change line: the first token listed.
struct FirstChanged;

impl Client for FirstChanged {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        let prompt = &req.messages.last().unwrap().content;
        let line = prompt
            .lines()
            .find_map(|l| l.strip_prefix("Tokens that became likelier when steering along it: "))
            .unwrap_or("nothing");
        let first = line.split(", ").next().unwrap().trim_matches('"');
        Ok(ChatResponse {
            text: format!("[EXPLANATION]: says {first}"),
            ..ChatResponse::default()
        })
    }
}

#[tokio::test]
async fn the_output_explainer_reads_the_token_change() {
    use autointerp_explain::{Explainer, OutputExplainer, OutputMode};
    let model = Model::from_hf_dir(fixture(), Device::Cpu, DType::F32).unwrap();
    let (word, direction) = planted(&model);
    let opts = (Kind::Float, Device::Cpu);
    let w_dec = Tensor::zeros([2, 32], opts);
    w_dec.get(1).copy_(&direction);
    let coder = SparseCoder::new(
        Weights {
            w_enc: Tensor::randn([32, 2], opts),
            b_enc: Tensor::zeros([2], opts),
            w_dec: Some(w_dec),
            b_dec: Tensor::zeros([32], opts),
            w_skip: None,
        },
        Activation::Relu,
    )
    .unwrap();
    let engine =
        LocalEngine::from_model(model, Some(word_tokenizer()), EngineConfig::default()).unwrap();
    let hook = HookPoint::Residual(1);
    let config = InterventionConfig {
        prompts: vec!["w10 w20".into(), "w30 w40 w50".into()],
        max_new_tokens: 2,
        ..InterventionConfig::default()
    };
    let intervener = LocalIntervener::new(engine, [(hook, Edit::share(coder))], config).unwrap();
    let record = LatentRecord {
        id: LatentId::new(hook, 1),
        train: vec![],
        test: vec![],
        non_activating: vec![],
        stats: LatentStats::default(),
        logits: None,
    };
    let explainer = OutputExplainer::new(FirstChanged, Some(&intervener), OutputMode::Output);
    let outcome = explainer.explain(&record).await.unwrap();
    assert_eq!(outcome.explanation().unwrap().text, format!("says w{word}"));
}
