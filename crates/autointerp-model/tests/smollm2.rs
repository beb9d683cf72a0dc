//! The real SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by `scripts/fetch-assets.sh smollm2`):
//! a complete model from one file, llama.cpp's q/k permutation undone.

use std::path::PathBuf;

use autointerp_core::HookPoint;
use autointerp_model::{DType, GenerateOptions, Hooks, Input, Logits, Model, Tokenizer};
use tch::{Device, Kind, Tensor};

/// Path of the SmolLM2 GGUF, fetched (once) by the project's script.
fn smollm2_path() -> PathBuf {
    autointerp_core::assets::fetch(autointerp_core::assets::Asset::Smollm2)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn prompt_ids(tok: &Tokenizer, text: &str) -> Tensor {
    let ids: Vec<i64> = tok
        .encode(text, true)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    Tensor::from_slice(&ids).unsqueeze(0)
}

/// The top-5 next tokens after `text`, decoded.
fn top_next(model: &Model, tok: &Tokenizer, text: &str) -> Vec<String> {
    let ids = prompt_ids(tok, text);
    let out = model
        .forward(&Input::new(&ids), &Hooks::new().with_logits(Logits::Last))
        .unwrap();
    let logits = out.logits.unwrap().to_kind(Kind::Float).flatten(0, -1);
    let (_, idx) = logits.topk(5, -1, true, true);
    Vec::<i64>::try_from(idx)
        .unwrap()
        .into_iter()
        .map(|i| tok.decode(&[i as u32], false).unwrap())
        .collect()
}

#[test]
fn smollm2_knows_the_capital_of_france() {
    let (model, tok) =
        Model::load(smollm2_path().to_str().unwrap(), Device::Cpu, DType::F32).unwrap();
    let tok = tok.expect("a GGUF file carries its tokenizer");
    assert_eq!(model.n_layers(), 30);
    assert_eq!(model.d_model(), 576);
    let top = top_next(&model, &tok, "The capital of France is");
    assert_eq!(top[0], " Paris", "top 5: {top:?}");

    // Hooks on the real model: shapes, and stopping in the middle.
    let ids = prompt_ids(&tok, "The capital of France is");
    let seq = ids.size()[1];
    let hooks = Hooks::new()
        .capture(HookPoint::Residual(14))
        .capture(HookPoint::MlpHidden(14))
        .with_logits(Logits::None);
    let out = model.forward(&Input::new(&ids), &hooks).unwrap();
    assert_eq!(
        out.get(HookPoint::Residual(14)).unwrap().size(),
        [1, seq, 576]
    );
    assert_eq!(
        out.get(HookPoint::MlpHidden(14)).unwrap().size(),
        [1, seq, 1536]
    );

    // Greedy continuation with the KV cache begins with " Paris" too.
    let generated = model
        .generate(&ids, None, &GenerateOptions::new(3))
        .unwrap();
    let new: Vec<u32> = Vec::<i64>::try_from(generated.narrow(1, seq, 3).flatten(0, -1))
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let text = tok.decode(&new, false).unwrap();
    assert!(text.starts_with(" Paris"), "{text:?}");
}

/// Reference values from transformers 4.57.6 loading the same file itself
/// (`AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32)`, eager, with
/// gguf 0.19.0: its own Q4_1 dequantisation and q/k un-permutation), for the ids of
/// "The capital of France is" with BOS: top-5 logits at positions 2 and 5.
#[test]
fn smollm2_matches_transformers_gguf_loader() {
    let model = Model::from_gguf(smollm2_path(), Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::from_slice(&[1i64, 504, 3575, 282, 4649, 314]).unsqueeze(0);
    let out = model.forward(&Input::new(&ids), &Hooks::new()).unwrap();
    let logits = out.logits.unwrap();
    let cases: [(i64, [i64; 5], [f64; 5]); 2] = [
        (
            2,
            [282, 79, 446, 2240, 6228],
            [26.9017, 25.2323, 24.5819, 24.1746, 23.931],
        ),
        (
            5,
            [7042, 3692, 2250, 260, 450],
            [15.414, 11.6474, 11.2503, 11.1336, 11.0742],
        ),
    ];
    for (pos, ids, values) in cases {
        let (v, i) = logits.get(0).get(pos).topk(5, -1, true, true);
        assert_eq!(Vec::<i64>::try_from(i).unwrap(), ids, "position {pos}");
        for (got, want) in Vec::<f64>::try_from(v).unwrap().into_iter().zip(values) {
            assert!((got - want).abs() < 1e-3, "position {pos}: {got} vs {want}");
        }
    }
}

#[test]
fn smollm2_runs_in_bf16() {
    let (model, tok) =
        Model::load(smollm2_path().to_str().unwrap(), Device::Cpu, DType::Bf16).unwrap();
    let tok = tok.unwrap();
    assert_eq!(model.kind(), Kind::BFloat16);
    let top = top_next(&model, &tok, "The capital of France is");
    assert_eq!(top[0], " Paris", "top 5: {top:?}");
}
