//! The in-process engine on SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by
//! `scripts/fetch-assets.sh smollm2`) and on the tiny random `llama` fixture of
//! autointerp-model (greedy generation and logits from transformers).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use autointerp_client::{ChatRequest, Client, Error, TokenScorer};
use autointerp_core::Message;
use autointerp_engine::{
    ChatTemplate, EngineConfig, FinishReason, GenerateRequest, LocalEngine, RenderOptions,
};
use autointerp_model::{DType, Tokenizer};
use futures::future::join_all;
use tch::{Device, Kind, Tensor};

/// Path of the SmolLM2 GGUF, fetched (once) by the project's script.
fn smollm2_path() -> PathBuf {
    autointerp_core::assets::fetch(autointerp_core::assets::Asset::Smollm2)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One SmolLM2 engine shared by the tests (which run concurrently, so their requests share
/// batches too).
fn smollm2() -> LocalEngine {
    static ENGINE: OnceLock<LocalEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let config = EngineConfig::default().with_batch_wait(Duration::from_millis(20));
            LocalEngine::load(
                smollm2_path().to_str().unwrap(),
                Device::Cpu,
                DType::F32,
                config,
            )
            .unwrap()
        })
        .clone()
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../autointerp-model/tests/fixtures/llama")
}

fn fixture_engine(config: EngineConfig) -> LocalEngine {
    LocalEngine::load(
        fixture_dir().to_str().unwrap(),
        Device::Cpu,
        DType::F32,
        config,
    )
    .unwrap()
}

fn expected() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture_dir().join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn ids(t: &Tensor) -> Vec<u32> {
    Vec::<i64>::try_from(t.flatten(0, -1))
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

fn greedy(question: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest::new(vec![Message::user(question)])
        .with_max_tokens(max_tokens)
        .with_temperature(0.0)
}

#[tokio::test]
async fn smollm2_knows_the_capital_of_france() {
    let engine = smollm2();
    let answer = engine
        .chat(greedy("What is the capital of France?", 24))
        .await
        .unwrap();
    assert!(answer.text.contains("Paris"), "{:?}", answer.text);
    assert!(answer.usage.prompt_tokens > 10);
    assert!(answer.usage.completion_tokens > 0 && answer.usage.completion_tokens <= 24);
    assert!(matches!(
        answer.finish_reason.as_deref(),
        Some("stop" | "length")
    ));
    assert!(!answer.text.contains("<|im_end|>"));
}

/// Six prompts of different lengths: alone, one by one, and all in one left-padded batch.
#[tokio::test]
async fn batched_and_unbatched_greedy_decoding_agree() {
    let batched = smollm2();
    let questions = [
        "Name a colour.",
        "What is 2 + 2?",
        "Write one sentence about the sea.",
        "List three fruits, separated by commas, and nothing else.",
        "Hi!",
        "What is the largest planet of the solar system? Answer in a few words.",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| batched.chat_prompt(&greedy(q, 12)).unwrap())
        .collect();
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(lengths.iter().any(|&l| l != lengths[0]), "{lengths:?}");
    let request = |p: &Vec<u32>| GenerateRequest::new(p.clone(), 12);

    let alone = LocalEngine::load(
        smollm2_path().to_str().unwrap(),
        Device::Cpu,
        DType::F32,
        EngineConfig::default()
            .with_max_batch_size(1)
            .with_batch_wait(Duration::ZERO),
    )
    .unwrap();
    let mut one_by_one = Vec::new();
    for p in &prompts {
        one_by_one.push(alone.generate(request(p)).await.unwrap().tokens);
    }
    let together: Vec<Vec<u32>> = join_all(prompts.iter().map(|p| batched.generate(request(p))))
        .await
        .into_iter()
        .map(|g| g.unwrap().tokens)
        .collect();
    assert_eq!(together, one_by_one);
    assert_eq!(alone.stats().largest_batch, 1);
    assert!(batched.stats().largest_batch >= prompts.len());
}

/// Greedy decoding equals transformers' `generate` on the tiny llama, alone and in a batch
/// with a longer prompt (so that this row is left-padded).
#[tokio::test]
async fn greedy_generation_matches_transformers() {
    let exp = expected();
    let prompt = ids(&exp["generate.input_ids"]);
    let want = ids(&exp["generate.output_ids"]);
    let engine = fixture_engine(EngineConfig::default().with_batch_wait(Duration::from_millis(50)));
    assert!(engine.tokenizer().is_none());
    let req = GenerateRequest::new(prompt.clone(), 8).with_stop_token_ids([]);
    let alone = engine.generate(req.clone()).await.unwrap();
    assert_eq!(alone.tokens, want[prompt.len()..]);
    assert_eq!(alone.finish_reason, FinishReason::Length);
    assert_eq!(alone.prompt_tokens, prompt.len());

    let longer: Vec<u32> = (3..20).collect();
    let (a, b) = tokio::join!(
        engine.generate(req),
        engine.generate(GenerateRequest::new(longer, 8).with_stop_token_ids([]))
    );
    assert_eq!(a.unwrap().tokens, want[prompt.len()..]);
    assert_eq!(b.unwrap().tokens.len(), 8);

    // The reference continuation is 44, 81, 7, …: an end token stops the row there.
    let stopped = engine
        .generate(GenerateRequest::new(prompt, 8).with_stop_token_ids([7]))
        .await
        .unwrap();
    assert_eq!(stopped.tokens, [44, 81, 7]);
    assert_eq!(stopped.finish_reason, FinishReason::Stop);

    // Bad requests fail alone; the engine goes on.
    assert!(engine
        .generate(GenerateRequest::new(vec![], 2))
        .await
        .is_err());
    let err = engine
        .generate(GenerateRequest::new(vec![3, 500], 2))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("beyond the vocabulary"), "{err}");
    // The fixture's context is 128 positions: longer prompts fail, generation stops at it.
    assert!(engine
        .generate(GenerateRequest::new(vec![5; 129], 0))
        .await
        .is_err());
    let capped = engine
        .generate(GenerateRequest::new(vec![5; 120], 20).with_stop_token_ids([]))
        .await
        .unwrap();
    assert_eq!(
        (capped.tokens.len(), capped.finish_reason),
        (8, FinishReason::Length)
    );

    // Without a tokenizer there is no chat.
    let err = engine.chat(greedy("hi", 2)).await.unwrap_err();
    assert!(err.to_string().contains("no tokenizer"), "{err}");
}

/// With a 96-token vocabulary, top-96 alternatives are the whole distribution.
#[tokio::test]
async fn logprobs_are_normalised_and_match_the_logits() {
    let exp = expected();
    let engine = fixture_engine(EngineConfig::default());
    let prompt = ids(&exp["plain.input_ids"].get(0));
    let n = prompt.len();
    let out = engine
        .generate(
            GenerateRequest::new(prompt.clone(), 4)
                .with_stop_token_ids([])
                .with_logprobs(96)
                .with_prompt_logprobs(96),
        )
        .await
        .unwrap();
    let lps = out.logprobs.as_ref().unwrap();
    assert_eq!(lps.len(), 4);
    for (lp, &id) in lps.iter().zip(&out.tokens) {
        assert_eq!(lp.id, id);
        assert_eq!(lp.top.len(), 96);
        let total: f32 = lp.top.iter().map(|(_, l)| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        // Greedy: the chosen token is the likeliest.
        assert_eq!(lp.top[0], (id, lp.logprob));
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    // Prompt logprobs: transformers' logits at j - 1, log-softmaxed, at token j.
    let logits = exp["plain.logits"].get(0).log_softmax(-1, Kind::Float);
    let positions = out.prompt_logprobs.as_ref().unwrap();
    assert_eq!(positions.len(), n);
    assert!(positions[0].is_none());
    for j in 1..n {
        let p = positions[j].as_ref().unwrap();
        assert_eq!(p.id, prompt[j]);
        let want = logits.double_value(&[j as i64 - 1, i64::from(prompt[j])]) as f32;
        assert!(
            (p.logprob - want).abs() < 1e-4,
            "{j}: {} vs {want}",
            p.logprob
        );
        let total: f32 = p.top.iter().map(|(_, l)| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        assert!(p.top.iter().any(|&(t, l)| t == p.id && l == p.logprob));
    }

    // Fewer alternatives sum to at most 1; scoring agrees with prompt logprobs.
    let few = engine
        .generate(
            GenerateRequest::new(prompt.clone(), 2)
                .with_logprobs(5)
                .with_prompt_logprobs(3),
        )
        .await
        .unwrap();
    for lp in few.logprobs.unwrap() {
        assert_eq!(lp.top.len(), 5);
        assert!(lp.top.iter().map(|(_, l)| l.exp()).sum::<f32>() <= 1.0 + 1e-5);
    }
    assert!(few.prompt_logprobs.unwrap()[1..]
        .iter()
        .all(|p| p.as_ref().unwrap().top.len() == 3));
    let scored = engine.score_tokens(prompt.clone(), 4).await.unwrap();
    assert_eq!(scored.len(), n - 4);
    for (s, p) in scored.iter().zip(&positions[4..]) {
        assert!((s - p.as_ref().unwrap().logprob).abs() < 1e-5);
    }
    assert!(engine.score_tokens(prompt, 0).await.is_err());
}

#[tokio::test]
async fn seeded_sampling_is_reproducible_whatever_the_batch() {
    let engine = fixture_engine(EngineConfig::default().with_batch_wait(Duration::from_millis(30)));
    let prompt: Vec<u32> = (10..20).collect();
    let sample = |seed: u64| {
        GenerateRequest::new(prompt.clone(), 12)
            .with_stop_token_ids([])
            .with_sampling(1.0, 0.9)
            .with_seed(seed)
    };
    let alone = engine.generate(sample(7)).await.unwrap().tokens;
    // The same seed in a batch with other (sampled and greedy) rows of other lengths.
    let others = [
        sample(1),
        GenerateRequest::new((3..30).collect(), 12).with_stop_token_ids([]),
        sample(7),
        sample(2),
    ];
    let batch: Vec<Vec<u32>> = join_all(others.into_iter().map(|r| engine.generate(r)))
        .await
        .into_iter()
        .map(|g| g.unwrap().tokens)
        .collect();
    assert_eq!(batch[2], alone);
    assert_eq!(alone.len(), 12);
    // The four concurrent requests ran as one batch.
    let stats = engine.stats();
    assert_eq!(stats.largest_batch, 4, "{stats:?}");
    assert_eq!((stats.batches, stats.requests), (2, 5));
    assert_eq!(stats.generated_tokens, 5 * 12);
    // Other seeds draw other tokens (a 96-token random model is far from deterministic).
    assert!(batch[0] != alone || batch[3] != alone);
    // top_k = 1 is greedy whatever the seed.
    let mut top1 = sample(3);
    top1.top_k = Some(1);
    let greedy = GenerateRequest::new(prompt.clone(), 12).with_stop_token_ids([]);
    assert_eq!(
        engine.generate(top1).await.unwrap().tokens,
        engine.generate(greedy).await.unwrap().tokens
    );
}

#[tokio::test]
async fn seeded_chat_sampling_is_reproducible() {
    let engine = smollm2();
    let req = ChatRequest::new(vec![Message::user("Tell me a story.")])
        .with_max_tokens(10)
        .with_temperature(1.0)
        .with_seed(42);
    let (a, b) = tokio::join!(engine.chat(req.clone()), engine.chat(req));
    assert_eq!(a.unwrap().text, b.unwrap().text);
}

/// Generated and prompt logprobs in the client's format: one entry per token, the tokens'
/// pieces concatenating to the text.
#[tokio::test]
async fn chat_logprobs_have_the_right_shape() {
    let engine = smollm2();
    let req = greedy("What is the capital of France?", 8)
        .with_logprobs(5)
        .with_prompt_logprobs(3);
    let prompt = engine.chat_prompt(&req).unwrap();
    let answer = engine.chat(req).await.unwrap();
    let lps = answer.logprobs.unwrap();
    assert_eq!(lps.len() as u64, answer.usage.completion_tokens);
    for lp in &lps {
        assert_eq!(lp.top.len(), 5);
        assert!(lp.logprob <= 0.0);
        assert!(lp.top.iter().map(|(_, l)| l.exp()).sum::<f32>() <= 1.0 + 1e-4);
        assert_eq!(lp.top[0].1, lp.logprob, "greedy picks the likeliest");
    }
    let generated: String = lps.iter().map(|l| l.token.as_str()).collect();
    assert!(
        generated.starts_with(&answer.text),
        "{generated:?} vs {:?}",
        answer.text
    );

    let positions = answer.prompt_logprobs.unwrap();
    assert_eq!(positions.len(), prompt.len());
    assert_eq!(positions.len() as u64, answer.usage.prompt_tokens);
    assert!(positions[0].is_none());
    assert!(positions[1..].iter().all(|p| p
        .as_ref()
        .is_some_and(|p| p.top.len() == 3 && p.logprob <= 0.0)));
    let tokenizer = engine.tokenizer().unwrap();
    let first = tokenizer.decode(&prompt[..1], false).unwrap();
    let rest: String = positions[1..]
        .iter()
        .map(|p| p.as_ref().unwrap().token.as_str())
        .collect();
    assert_eq!(
        format!("{first}{rest}"),
        tokenizer.decode(&prompt, false).unwrap()
    );
}

/// What the simulation scorer sends: continue the final assistant message, read the prompt's
/// logprobs, generate (almost) nothing.
#[tokio::test]
async fn continue_final_message_scores_an_open_assistant_turn() {
    let engine = smollm2();
    let messages = vec![
        Message::user("Count to five."),
        Message::assistant("1, 2, 3,"),
    ];
    let req = ChatRequest::new(messages)
        .with_max_tokens(3)
        .with_temperature(0.0)
        .with_prompt_logprobs(5)
        .with_extra("add_generation_prompt", false)
        .with_extra("continue_final_message", true);
    let prompt = engine.chat_prompt(&req).unwrap();
    let text = engine.tokenizer().unwrap().decode(&prompt, false).unwrap();
    assert!(
        text.ends_with("<|im_start|>assistant\n1, 2, 3,"),
        "{text:?}"
    );
    let answer = engine.chat(req).await.unwrap();
    assert!(answer.usage.completion_tokens <= 3);
    assert_eq!(answer.prompt_logprobs.unwrap().len(), prompt.len());
    // The turn goes on where it was left: no end of turn, no new turn, just the next number.
    assert!(
        answer.text.trim_start().starts_with('4'),
        "{:?}",
        answer.text
    );
}

/// A stop string cuts the text where it first appears, and generation ends there.
#[tokio::test]
async fn stop_strings_end_generation() {
    let engine = smollm2();
    let question = "Count from 1 to 20, separated by commas.";
    let full = engine.chat(greedy(question, 40)).await.unwrap();
    let cut = full
        .text
        .find("7")
        .unwrap_or_else(|| panic!("no 7 in {:?}", full.text));
    let stopped = engine
        .chat(greedy(question, 40).with_stop("7"))
        .await
        .unwrap();
    assert_eq!(stopped.text, full.text[..cut]);
    assert_eq!(stopped.finish_reason.as_deref(), Some("stop"));
    assert!(stopped.usage.completion_tokens < full.usage.completion_tokens);
}

#[tokio::test]
async fn token_scorer_prefers_the_right_answer() {
    let engine = smollm2();
    let prefix = "The capital of France is";
    let paris = engine.logprobs(prefix, " Paris").await.unwrap();
    let berlin = engine.logprobs(prefix, " Berlin").await.unwrap();
    let tok = engine.tokenizer().unwrap();
    assert_eq!(paris.len(), tok.encode(" Paris", false).unwrap().len());
    assert!(paris
        .iter()
        .chain(&berlin)
        .all(|&l| l <= 0.0 && l.is_finite()));
    let total = |v: &[f32]| v.iter().sum::<f32>();
    assert!(total(&paris) > total(&berlin), "{paris:?} vs {berlin:?}");
    assert!(engine.logprobs(prefix, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_model_without_a_template_is_a_clear_error() {
    let engine = smollm2();
    let tokenizer = Tokenizer::from_tokenizer(engine.tokenizer().unwrap().inner().clone());
    let err = ChatTemplate::from_tokenizer(&tokenizer).unwrap_err();
    assert!(matches!(err, Error::ChatTemplate { .. }));
    assert!(err.to_string().contains("no chat template"), "{err}");
    // The model's own template renders SmolLM2's ChatML.
    let text = engine
        .chat_template()
        .unwrap()
        .render(&[Message::user("Hi")], &RenderOptions::default())
        .unwrap();
    assert!(
        text.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{text:?}"
    );
}
