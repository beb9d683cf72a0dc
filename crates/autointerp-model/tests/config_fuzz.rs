//! `config.json` from untrusted sources: every architecture's fixture config with random values
//! put in place of its own (huge, negative, fractional, null, strings, arrays, objects) or keys
//! removed gives a config or an error naming the file, never a panic.

use std::path::{Path, PathBuf};

use autointerp_model::Config;
use proptest::prelude::*;
use serde_json::{json, Value};

fn fixtures() -> Vec<(PathBuf, serde_json::Map<String, Value>)> {
    static ALL: std::sync::OnceLock<Vec<(PathBuf, serde_json::Map<String, Value>)>> =
        std::sync::OnceLock::new();
    ALL.get_or_init(read_fixtures).clone()
}

fn read_fixtures() -> Vec<(PathBuf, serde_json::Map<String, Value>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for arch in [
        "gpt2", "llama", "llama3", "qwen2", "gemma2", "gemma3", "gpt_neox",
    ] {
        for dir in [root.join(arch), root.join("hf5").join(arch)] {
            let path = dir.join("config.json");
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Ok(Value::Object(map)) = serde_json::from_str(&text) {
                    out.push((path, map));
                }
            }
        }
    }
    out
}

fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(0.5)),
        Just(json!("")),
        Just(json!("64")),
        Just(json!([])),
        Just(json!([1, 2, 3])),
        Just(json!({})),
        Just(json!(true)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u32>().prop_map(|n| json!(n)),
    ]
}

#[test]
fn every_fixture_config_parses() {
    let all = fixtures();
    assert!(all.len() >= 10, "{} fixture configs", all.len());
    for (path, map) in all {
        let text = Value::Object(map).to_string();
        Config::from_hf_json(&text, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Found by the fuzzer: GPT-2's converter multiplied `n_embd` before any check.
#[test]
fn huge_sizes_are_refused_by_name() {
    let all = fixtures();
    let (path, mut map) = all
        .iter()
        .find(|(p, _)| p.ends_with("gpt2/config.json"))
        .unwrap()
        .clone();
    map.insert("n_embd".into(), json!(u64::MAX / 2));
    let err = Config::from_hf_json(&Value::Object(map).to_string(), &path).unwrap_err();
    assert!(err.to_string().contains("n_embd"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn odd_values_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), odd_value(), any::<bool>()), 1..5),
    ) {
        let all = fixtures();
        let (path, mut map) = all[which.index(all.len())].clone();
        for (key, value, remove) in edits {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[key.index(keys.len())];
            if remove {
                map.remove(key);
            } else {
                map.insert(key.clone(), value);
            }
        }
        let text = Value::Object(map).to_string();
        if let Err(e) = Config::from_hf_json(&text, &path) {
            prop_assert!(e.to_string().contains("config.json"), "{e}");
        }
    }
}
