//! The sentence embedder against transformers on the tiny random BERT of `tests/fixtures/bert`
//! (made by `tests/fixtures/make_bert_fixture.py`): token ids, mean/CLS pooling, normalisation,
//! truncation, batching, the `bert.` key prefix, and every way a folder can be wrong.

use std::path::{Path, PathBuf};

use autointerp_model::{Error, Pooling, SentenceEmbedder};
use serde::Deserialize;
use tch::{Device, Tensor};

const TOL: f32 = 1e-5;

#[derive(Deserialize)]
struct Expected {
    max_seq_length: usize,
    sentences: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    mean: Vec<Vec<f32>>,
    mean_raw: Vec<Vec<f32>>,
    cls_raw: Vec<Vec<f32>>,
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert")
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(dir: &Path) -> autointerp_model::Result<SentenceEmbedder> {
    SentenceEmbedder::load(dir.to_str().unwrap(), Device::Cpu)
}

/// Max |a - b| over all values; the shapes must agree.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row counts differ");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "row lengths differ");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// A copy of the fixture folder in a temporary folder (files and `1_Pooling/`).
fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Rewrites the JSON file at `path` with `edit`.
fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn tiny_bert_matches_transformers() {
    let exp = expected();
    let embedder = load(&fixture()).unwrap();
    assert_eq!(embedder.dim(), 32);
    assert_eq!(embedder.max_seq_length(), exp.max_seq_length);
    assert_eq!(embedder.pooling(), Pooling::MEAN);
    assert!(embedder.normalizes());
    // Tokenisation first, so that a mismatch there is reported as such: tokenizer.json's own
    // truncation (6) and fixed padding (24) are overridden, surrounding spaces stripped, the
    // longest sentence truncated at 16.
    for (text, ids) in exp.sentences.iter().zip(&exp.input_ids) {
        assert_eq!(&embedder.token_ids(text).unwrap(), ids, "{text:?}");
    }
    assert!(exp.input_ids.iter().any(|r| r.len() == exp.max_seq_length));

    let got = embedder.embed(&exp.sentences).unwrap();
    let d = max_diff(&got, &exp.mean);
    eprintln!("tiny BERT vs transformers: max |diff| {d:e}");
    assert!(d < TOL, "max |diff| {d:e}");
    for v in &got {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[test]
fn batching_does_not_change_the_vectors() {
    let exp = expected();
    let all = load(&fixture()).unwrap().embed(&exp.sentences).unwrap();
    for batch in [1, 2, 3] {
        let got = load(&fixture())
            .unwrap()
            .with_batch_size(batch)
            .embed(&exp.sentences)
            .unwrap();
        let d = max_diff(&got, &all);
        assert!(d < TOL, "batch {batch}: max |diff| {d:e}");
    }
    // Order is the caller's: reversed texts give reversed vectors.
    let reversed: Vec<String> = exp.sentences.iter().rev().cloned().collect();
    let mut got = load(&fixture()).unwrap().embed(&reversed).unwrap();
    got.reverse();
    assert!(max_diff(&got, &all) < TOL);
    assert!(load(&fixture()).unwrap().embed(&[]).unwrap().is_empty());
}

#[test]
fn without_modules_json_it_mean_pools_without_normalising() {
    let exp = expected();
    let dir = copy_fixture();
    std::fs::remove_file(dir.path().join("modules.json")).unwrap();
    // sentence_bert_config.json is then not read either (sentence-transformers builds a fresh
    // Transformer module): the limit is min(max_position_embeddings 32, model_max_length 512).
    let embedder = load(dir.path()).unwrap();
    assert_eq!(embedder.max_seq_length(), 32);
    assert!(!embedder.normalizes());
    assert_eq!(embedder.pooling(), Pooling::MEAN);
    // Only the sentences no longer than 16 tokens keep their expected values.
    let short: Vec<usize> = (0..exp.sentences.len())
        .filter(|&i| exp.input_ids[i].len() < exp.max_seq_length)
        .collect();
    let texts: Vec<String> = short.iter().map(|&i| exp.sentences[i].clone()).collect();
    let want: Vec<Vec<f32>> = short.iter().map(|&i| exp.mean_raw[i].clone()).collect();
    let d = max_diff(&embedder.embed(&texts).unwrap(), &want);
    assert!(d < TOL, "max |diff| {d:e}");
    let long = embedder.token_ids(exp.sentences.last().unwrap()).unwrap();
    assert!(long.len() > exp.max_seq_length);
}

#[test]
fn cls_pooling_without_normalize() {
    let exp = expected();
    let dir = copy_fixture();
    edit_json(&dir.path().join("modules.json"), |v| {
        v.as_array_mut().unwrap().truncate(2);
    });
    edit_json(&dir.path().join("1_Pooling/config.json"), |v| {
        v["pooling_mode_cls_token"] = true.into();
        v["pooling_mode_mean_tokens"] = false.into();
    });
    let embedder = load(dir.path()).unwrap();
    assert_eq!(embedder.pooling(), Pooling::CLS);
    assert!(!embedder.normalizes());
    let d = max_diff(&embedder.embed(&exp.sentences).unwrap(), &exp.cls_raw);
    assert!(d < TOL, "max |diff| {d:e}");

    // Two modes at once: the vectors are concatenated, CLS first.
    edit_json(&dir.path().join("1_Pooling/config.json"), |v| {
        v["pooling_mode_mean_tokens"] = true.into();
    });
    let both = load(dir.path()).unwrap().embed(&exp.sentences).unwrap();
    assert_eq!(both[0].len(), 64);
    let cls: Vec<Vec<f32>> = both.iter().map(|v| v[..32].to_vec()).collect();
    let mean: Vec<Vec<f32>> = both.iter().map(|v| v[32..].to_vec()).collect();
    assert!(max_diff(&cls, &exp.cls_raw) < TOL);
    assert!(max_diff(&mean, &exp.mean_raw) < TOL);
}

#[test]
fn bert_prefixed_keys_and_a_shorter_max_seq_length() {
    let exp = expected();
    let dir = copy_fixture();
    let path = dir.path().join("model.safetensors");
    let renamed: Vec<(String, Tensor)> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (format!("bert.{k}"), t))
        .collect();
    Tensor::write_safetensors(&renamed, &path).unwrap();
    let got = load(dir.path()).unwrap().embed(&exp.sentences).unwrap();
    let d = max_diff(&got, &exp.mean);
    assert!(d < TOL, "bert. prefix: max |diff| {d:e}");

    edit_json(&dir.path().join("sentence_bert_config.json"), |v| {
        v["max_seq_length"] = 4.into();
    });
    let embedder = load(dir.path()).unwrap();
    let ids = embedder.token_ids(&exp.sentences[0]).unwrap();
    assert_eq!(ids, [exp.input_ids[0][..3].to_vec(), vec![3]].concat());
    // A limit that leaves no room for text is refused, naming the file.
    edit_json(&dir.path().join("sentence_bert_config.json"), |v| {
        v["max_seq_length"] = 2.into();
    });
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("sentence_bert_config.json"), "{e}");
}

#[test]
fn a_missing_folder_is_an_error() {
    let e = SentenceEmbedder::load("/surely/not/a/folder", Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::ModelPath { .. }), "{e}");
    assert!(e.to_string().contains("/surely/not/a/folder"), "{e}");
}

#[test]
fn missing_files_are_named() {
    for file in [
        "tokenizer.json",
        "config.json",
        "model.safetensors",
        "1_Pooling/config.json",
    ] {
        let dir = copy_fixture();
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(e, Error::ModelPath { .. }), "{file}: {e}");
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert!(e.to_string().contains(name), "{file}: {e}");
    }
}

/// A change to a JSON file.
type Edit = fn(&mut serde_json::Value);

#[test]
fn unsupported_configs_are_named() {
    let cases: [(&str, Edit, &str); 5] = [
        (
            "config.json",
            |v| v["model_type"] = "roberta".into(),
            "unsupported model type \"roberta\"",
        ),
        (
            "config.json",
            |v| v["hidden_act"] = "quick_gelu".into(),
            "hidden_act \"quick_gelu\"",
        ),
        (
            "config.json",
            |v| v["position_embedding_type"] = "relative_key".into(),
            "position_embedding_type",
        ),
        (
            "1_Pooling/config.json",
            |v| v["pooling_mode_lasttoken"] = true.into(),
            "pooling_mode_lasttoken",
        ),
        (
            "modules.json",
            |v| {
                v.as_array_mut().unwrap().insert(
                    2,
                    serde_json::json!({"idx": 2, "name": "2", "path": "2_Dense",
                        "type": "sentence_transformers.models.Dense"}),
                )
            },
            "sentence_transformers.models.Dense",
        ),
    ];
    for (file, edit, needle) in cases {
        let dir = copy_fixture();
        edit_json(&dir.path().join(file), edit);
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(needle), "{file}: {e}");
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert!(e.contains(name), "{file}: {e}");
    }
    let dir = copy_fixture();
    edit_json(&dir.path().join("config.json"), |v| {
        v["model_type"] = "roberta".into();
    });
    assert!(matches!(
        load(dir.path()).unwrap_err(),
        Error::UnknownModelType { .. }
    ));
}

#[test]
fn wrong_shapes_and_stray_tensors_are_named() {
    // A config that disagrees with the weights.
    let dir = copy_fixture();
    edit_json(&dir.path().join("config.json"), |v| {
        v["intermediate_size"] = 48.into();
    });
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, Error::TensorShape { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("encoder.layer.0.intermediate.dense.weight"),
        "{e}"
    );

    // One layer fewer in the config than in the file: layer 1's tensors are unexpected.
    let dir = copy_fixture();
    edit_json(&dir.path().join("config.json"), |v| {
        v["num_hidden_layers"] = 1.into();
    });
    let e = load(dir.path()).unwrap_err();
    assert!(matches!(e, Error::UnexpectedTensors { .. }), "{e}");
    assert!(e.to_string().contains("encoder.layer.1."), "{e}");

    // A tokenizer whose ids run past the model's vocabulary.
    let dir = copy_fixture();
    edit_json(&dir.path().join("config.json"), |v| {
        v["vocab_size"] = 4.into();
    });
    let path = dir.path().join("model.safetensors");
    let cut: Vec<(String, Tensor)> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(k, t)| match k.as_str() {
            "embeddings.word_embeddings.weight" => (k, t.narrow(0, 0, 4)),
            _ => (k, t),
        })
        .collect();
    Tensor::write_safetensors(&cut, &path).unwrap();
    let e = load(dir.path())
        .unwrap()
        .embed(&["the cat".to_string()])
        .unwrap_err();
    assert!(matches!(e, Error::Input(_)), "{e}");
}
