//! Sparse-coder checkpoints from untrusted sources: every committed fixture (sparsify, SAE-Lens,
//! GemmaScope) with its `cfg.json` values replaced by odd ones or removed, or its weights file
//! with bytes changed, cut or added, loads into a coder that encodes, or gives an error; never a
//! panic, an abort, or an allocation the files do not justify.

use std::path::{Path, PathBuf};

use autointerp_sae::SparseCoder;
use proptest::prelude::*;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// Every fixture checkpoint folder: one holding `cfg.json` or `params.npz`.
fn checkpoints() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        entries.sort();
        if entries
            .iter()
            .any(|p| p.ends_with("cfg.json") || p.ends_with("params.npz"))
        {
            out.push(dir.to_path_buf());
        }
        for p in entries.iter().filter(|p| p.is_dir()) {
            walk(p, out);
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &mut out,
    );
    out
}

/// A copy of `checkpoint`'s files in a fresh folder of the same name.
fn copy(checkpoint: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(checkpoint.file_name().unwrap());
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(checkpoint).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    (tmp, dir)
}

/// Loads `dir` and, when that works, encodes one zero input: either may fail, neither may panic.
fn load_and_encode(dir: &Path) -> Result<(), TestCaseError> {
    if let Ok(coders) = SparseCoder::load_dir(dir, &[], Device::Cpu) {
        for (_, coder) in coders {
            let x = Tensor::zeros([1, coder.d_in() as i64], (Kind::Float, Device::Cpu));
            let _ = coder.encode(&x);
        }
    }
    Ok(())
}

fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(0.5)),
        Just(json!("")),
        Just(json!("topk")),
        Just(json!([])),
        Just(json!({})),
        Just(json!(true)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u16>().prop_map(|n| json!(n)),
    ]
}

#[test]
fn every_fixture_loads() {
    let all = checkpoints();
    assert!(all.len() >= 10, "{} fixture checkpoints", all.len());
    for dir in all {
        let coders = SparseCoder::load_dir(&dir, &[], Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(!coders.is_empty(), "{}", dir.display());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn odd_config_values_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), odd_value(), any::<bool>()), 1..4),
    ) {
        let all: Vec<PathBuf> = checkpoints()
            .into_iter()
            .filter(|d| d.join("cfg.json").is_file())
            .collect();
        let (_tmp, dir) = copy(&all[which.index(all.len())]);
        let cfg = dir.join("cfg.json");
        let Value::Object(mut map) = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap() else {
            unreachable!("fixture configs are objects");
        };
        for (key, value, remove) in edits {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[key.index(keys.len())];
            if remove {
                map.remove(key);
            } else {
                map.insert(key.clone(), value);
            }
        }
        std::fs::write(&cfg, Value::Object(map).to_string()).unwrap();
        load_and_encode(&dir)?;
    }

    #[test]
    fn damaged_weight_files_never_panic(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        extra in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let all = checkpoints();
        let (_tmp, dir) = copy(&all[which.index(all.len())]);
        let weights = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "safetensors" || e == "npz"))
            .expect("a weights file");
        let mut bytes = std::fs::read(&weights).unwrap();
        for (at, byte) in flips {
            // Mostly in the header, where sizes and offsets live.
            let len = bytes.len().min(if byte % 2 == 0 { 256 } else { usize::MAX });
            let i = at.index(len);
            bytes[i] ^= byte | 1;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        bytes.extend(extra);
        std::fs::write(&weights, bytes).unwrap();
        load_and_encode(&dir)?;
    }
}
