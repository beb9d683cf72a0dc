//! Loading HF folders: sharded checkpoints, GPT-2 key prefixes, tokenizers, and files that are
//! wrong in each way a user can get them wrong, each an error naming the problem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autointerp_model::{DType, Error, Hooks, Input, Model};
use tch::{Device, Tensor};

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(arch)
}

fn read(path: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A copy of fixture `arch` (config.json only) in a temporary folder, with `tensors` written
/// as its model.safetensors.
fn folder_with(arch: &str, tensors: &[(String, Tensor)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture(arch).join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    Tensor::write_safetensors(tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    Model::from_hf_dir(dir, Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string()
}

/// Plain-case logits of a model against the fixture's expected ones.
fn logits_diff(model: &Model, arch: &str) -> f64 {
    let exp: HashMap<String, Tensor> = read(&fixture(arch).join("expected.safetensors"))
        .into_iter()
        .collect();
    let out = model
        .forward(&Input::new(&exp["plain.input_ids"]), &Hooks::new())
        .unwrap();
    (out.logits.unwrap() - &exp["plain.logits"])
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn missing_tensor_is_named_with_its_file() {
    let mut tensors = read(&fixture("llama").join("model.safetensors"));
    tensors.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight");
    let dir = folder_with("llama", &tensors);
    let msg = load_err(dir.path());
    assert!(
        msg.contains("\"model.layers.1.mlp.up_proj.weight\""),
        "{msg}"
    );
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn misshaped_tensor_gives_both_shapes() {
    let mut tensors = read(&fixture("llama").join("model.safetensors"));
    for (name, t) in &mut tensors {
        if name == "model.layers.0.self_attn.k_proj.weight" {
            *t = t.narrow(0, 0, 8);
        }
    }
    let dir = folder_with("llama", &tensors);
    let msg = load_err(dir.path());
    assert!(
        msg.contains("model.layers.0.self_attn.k_proj.weight"),
        "{msg}"
    );
    assert!(msg.contains("[8, 32]") && msg.contains("[16, 32]"), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn unexpected_tensor_is_an_error() {
    let mut tensors = read(&fixture("qwen2").join("model.safetensors"));
    tensors.push((
        "model.layers.0.mlp.extra.weight".into(),
        Tensor::zeros([2], (tch::Kind::Float, Device::Cpu)),
    ));
    let dir = folder_with("qwen2", &tensors);
    let msg = load_err(dir.path());
    assert!(
        msg.contains("unexpected") && msg.contains("model.layers.0.mlp.extra.weight"),
        "{msg}"
    );
}

#[test]
fn non_float_tensor_is_an_error() {
    let mut tensors = read(&fixture("llama").join("model.safetensors"));
    for (name, t) in &mut tensors {
        if name == "model.norm.weight" {
            *t = t.to_kind(tch::Kind::Int64);
        }
    }
    let dir = folder_with("llama", &tensors);
    let msg = load_err(dir.path());
    assert!(
        msg.contains("model.norm.weight") && msg.contains("I64"),
        "{msg}"
    );
}

#[test]
fn unknown_model_type_lists_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(fixture("llama").join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"llama\"", "\"mamba\""),
    )
    .unwrap();
    std::fs::copy(
        fixture("llama").join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = Model::from_hf_dir(dir.path(), Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, Error::UnknownModelType { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"mamba\"") && msg.contains("gemma3_text") && msg.contains("gpt2"),
        "{msg}"
    );
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn truncated_safetensors_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("gpt2").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(fixture("gpt2").join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() - 100],
    )
    .unwrap();
    let err = Model::from_hf_dir(dir.path(), Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, Error::Safetensors { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("not a valid safetensors"),
        "{msg}"
    );
    // Not even a header.
    std::fs::write(dir.path().join("model.safetensors"), b"abc").unwrap();
    assert!(load_err(dir.path()).contains("model.safetensors"));
}

#[test]
fn folder_without_weights_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("gpt2").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("model.safetensors.index.json"), "{msg}");
    let empty = tempfile::tempdir().unwrap();
    assert!(load_err(empty.path()).contains("config.json"));
}

#[test]
fn sharded_checkpoints_load() {
    let tensors = read(&fixture("gemma2").join("model.safetensors"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("gemma2").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        Tensor::write_safetensors(part, dir.path().join(file)).unwrap();
        for (name, _) in part {
            map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let model = Model::from_hf_dir(dir.path(), Device::Cpu, DType::F32).unwrap();
    assert!(logits_diff(&model, "gemma2") < 1e-4);
}

#[test]
fn gpt2_keys_load_with_or_without_the_transformer_prefix() {
    let tensors: Vec<(String, Tensor)> = read(&fixture("gpt2").join("model.safetensors"))
        .into_iter()
        .map(|(n, t)| (n.strip_prefix("transformer.").unwrap_or(&n).to_owned(), t))
        .collect();
    assert!(tensors.iter().any(|(n, _)| n == "wte.weight"));
    // The original gpt2 checkpoints also carry the causal-mask buffers.
    let mut with_buffers = tensors;
    with_buffers.push((
        "h.0.attn.bias".into(),
        Tensor::ones([1, 1, 16, 16], (tch::Kind::Float, Device::Cpu)),
    ));
    let dir = folder_with("gpt2", &with_buffers);
    let model = Model::from_hf_dir(dir.path(), Device::Cpu, DType::F32).unwrap();
    assert!(logits_diff(&model, "gpt2") < 1e-4);
}

#[test]
fn hf_folder_tokenizer_is_loaded_when_present() {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("llama").join(f), dir.path().join(f)).unwrap();
    }
    let vocab: HashMap<String, u32> = [
        ("<unk>", 0),
        ("</s>", 1),
        ("<s>", 2),
        ("hello", 3),
        ("world", 4),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok.save(dir.path().join("tokenizer.json"), false).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"eos_token": "</s>", "bos_token": {"content": "<s>"}, "chat_template": "{{ messages }}"}"#,
    )
    .unwrap();
    let (model, tok) = Model::load(dir.path().to_str().unwrap(), Device::Cpu, DType::F32).unwrap();
    let tok = tok.expect("tokenizer.json is there");
    assert_eq!(tok.encode("hello world", false).unwrap(), [3, 4]);
    assert_eq!(tok.eos_id(), Some(1));
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.chat_template(), Some("{{ messages }}"));
    assert_eq!(model.n_layers(), 2);
    // Without tokenizer.json the tokenizer is None.
    let (_, none) =
        Model::load(fixture("llama").to_str().unwrap(), Device::Cpu, DType::F32).unwrap();
    assert!(none.is_none());
}

#[test]
fn bad_paths_and_offline_hub_ids_say_what_to_do() {
    let err = Model::load("/no/such/model", Device::Cpu, DType::F32).unwrap_err();
    assert!(err.to_string().contains("no such file or folder"), "{err}");
    // An empty cache, offline: the error points to local paths.
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HOME", cache.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let err = Model::load("HuggingFaceTB/SmolLM2-135M", Device::Cpu, DType::F32).unwrap_err();
    std::env::remove_var("HF_HUB_OFFLINE");
    let msg = err.to_string();
    assert!(matches!(err, Error::Hub { .. }), "{err:?}");
    assert!(
        msg.contains("HuggingFaceTB/SmolLM2-135M") && msg.contains("local path"),
        "{msg}"
    );
}

#[test]
fn bf16_and_f16_load_and_agree_roughly() {
    for dtype in [DType::Bf16, DType::F16] {
        let model = Model::from_hf_dir(fixture("gemma3"), Device::Cpu, dtype).unwrap();
        assert_eq!(model.kind(), dtype.kind());
        let exp: HashMap<String, Tensor> = read(&fixture("gemma3").join("expected.safetensors"))
            .into_iter()
            .collect();
        let out = model
            .forward(
                &Input::new(&exp["left.input_ids"])
                    .with_attention_mask(&exp["left.attention_mask"]),
                &Hooks::new(),
            )
            .unwrap();
        let logits = out.logits.unwrap().to_kind(tch::Kind::Float);
        assert!(logits.isfinite().all().int64_value(&[]) == 1);
        let m = exp["left.attention_mask"].unsqueeze(-1);
        let diff = ((logits - &exp["left.logits"]).abs() * m)
            .max()
            .double_value(&[]);
        assert!(diff < 0.3, "{dtype:?}: {diff}");
    }
}

#[test]
fn multimodal_gemma3_checkpoints_load_their_language_model() {
    // Gemma3ForConditionalGeneration: model_type gemma3, the text config nested, weights under
    // model.language_model., a vision tower beside them.
    let text: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gemma3").join("config.json")).unwrap(),
    )
    .unwrap();
    let config = serde_json::json!({
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": { "hidden_size": 8 },
        "eos_token_id": [1, 106],
    });
    let mut tensors: Vec<(String, Tensor)> = read(&fixture("gemma3").join("model.safetensors"))
        .into_iter()
        .map(|(n, t)| (n.replacen("model.", "model.language_model.", 1), t))
        .collect();
    tensors.push((
        "model.vision_tower.vision_model.post_layernorm.weight".into(),
        Tensor::ones([8], (tch::Kind::Float, Device::Cpu)),
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors")).unwrap();
    let model = Model::from_hf_dir(dir.path(), Device::Cpu, DType::F32).unwrap();
    assert_eq!(model.config().eos_token_ids, [1, 106]);
    assert!(logits_diff(&model, "gemma3") < 1e-4);
}

#[test]
fn models_and_hooks_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<Model>();
    send::<autointerp_model::Hooks>();
    send::<autointerp_model::KvCache>();
    send::<autointerp_model::Tokenizer>();
}
