//! `autointerp cache` datasets as users pass them (a local file, a Hub id served by a fake Hub)
//! and the bad inputs of the cache issue: each a clear error naming what is wrong.

mod cache_support;
mod run_support;

#[path = "../crates/autointerp-cache/tests/support/fake_hub.rs"]
mod fake_hub;

use std::path::Path;
use std::process::Output;

use cache_support::{cache_args, cache_files, write_sae, D_MODEL};
use fake_hub::FakeHub;
use run_support::{assert_success, command, tiny_model};

fn cache_fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autointerp-cache/tests/fixtures")
        .join(name)
}

/// Runs `autointerp cache` with the Hub settings pointed at `endpoint` and a private cache.
fn cache(args: &[String], endpoint: &str, hf_home: &Path) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    command(&args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", hf_home)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const FLAGS: [&str; 6] = ["--n-tokens", "64", "--ctx-len", "8", "--n-splits", "2"];

#[test]
fn a_hub_dataset_caches_like_its_local_copy() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let sae = write_sae(&dir.path().join("sae"), "layers.0", D_MODEL, 64, 4);
    let hub = FakeHub::start();
    let local = cache_fixture("docs.snappy.parquet");
    hub.add(
        "acme/speeches",
        "refs/convert/parquet",
        &[
            ("default/train/0000.parquet", std::fs::read(&local).unwrap()),
            ("default/test/0000.parquet", vec![]),
        ],
    );
    let hf_home = dir.path().join("hf");

    let from_file = dir.path().join("from-file");
    let args = cache_args(&model, &sae, local.to_str().unwrap(), &from_file, &FLAGS);
    assert_success(&cache(&args, &hub.url, &hf_home));
    let from_hub = dir.path().join("from-hub");
    let mut args = cache_args(&model, &sae, "acme/speeches", &from_hub, &FLAGS);
    args.extend(["--dataset-split".into(), "train".into()]);
    assert_success(&cache(&args, &hub.url, &hf_home));
    assert!(hf_home.join("hub/datasets--acme--speeches").is_dir());

    let (file_files, hub_files) = (cache_files(&from_file), cache_files(&from_hub));
    for ((name, a), (_, b)) in file_files.iter().zip(&hub_files) {
        if name == "config.json" {
            let cfg: serde_json::Value = serde_json::from_slice(b).unwrap();
            assert_eq!(cfg["dataset_repo"], "acme/speeches");
            assert_eq!(cfg["dataset_split"], "train");
        } else {
            assert!(
                a == b,
                "{name}: the Hub copy cached other tokens or latents"
            );
        }
    }

    let args = cache_args(&model, &sae, "acme/nope", &dir.path().join("x"), &FLAGS);
    let err = stderr(&cache(&args, &hub.url, &hf_home));
    assert!(
        err.contains("acme/nope")
            && err.contains(&format!("{}/api/datasets/acme/nope/revision/main", hub.url))
            && err.contains("HTTP 404"),
        "{err}"
    );
    let mut args = cache_args(&model, &sae, "acme/speeches", &dir.path().join("y"), &FLAGS);
    args.extend(["--dataset-split".into(), "validation".into()]);
    let err = stderr(&cache(&args, &hub.url, &hf_home));
    assert!(
        err.contains("no split `validation` (splits: test, train)"),
        "{err}"
    );
    // A slice as delphi's `dataset_split` writes it: here an empty one.
    let mut args = cache_args(&model, &sae, "acme/speeches", &dir.path().join("z"), &FLAGS);
    args.extend(["--dataset-split".into(), "train[2:2]".into()]);
    let err = stderr(&cache(&args, &hub.url, &hf_home));
    assert!(
        err.contains("acme/speeches") && err.contains("fewer than 8 tokens"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let sae = write_sae(&dir.path().join("sae"), "layers.0", D_MODEL, 64, 4);
    let out = dir.path().join("out");
    // Nothing listens on port 9: a test that reached for the Hub would fail at once.
    let run = |dataset: &str, sae: &Path| {
        cache(
            &cache_args(&model, sae, dataset, &out, &FLAGS),
            "http://127.0.0.1:9",
            &dir.path().join("hf"),
        )
    };

    let missing = dir.path().join("missing.jsonl");
    let err = stderr(&run(missing.to_str().unwrap(), &sae));
    assert!(
        err.contains("missing.jsonl") && err.contains("not found"),
        "{err}"
    );

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = stderr(&run(empty.to_str().unwrap(), &sae));
    assert!(
        err.contains("empty.txt") && err.contains("fewer than 8 tokens"),
        "{err}"
    );

    // The committed sparsify fixture reads 16-wide activations; the tiny llama's are 32 wide.
    let narrow =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../autointerp-sae/tests/fixtures/sparsify");
    let text = dir.path().join("text.txt");
    std::fs::write(&text, run_support::text(400)).unwrap();
    let err = stderr(&run(text.to_str().unwrap(), &narrow));
    assert!(
        err.contains("layers.0") && err.contains("16") && err.contains("32"),
        "{err}"
    );
    assert!(!out.join("latents/layers.0/config.json").exists());

    // A finished cache whose first split file is cut short: reading it names the file.
    assert_success(&run(text.to_str().unwrap(), &sae));
    let split = out.join("latents/layers.0/0_31.safetensors");
    let bytes = std::fs::read(&split).unwrap();
    std::fs::write(&split, &bytes[..bytes.len() / 2]).unwrap();
    let shown = command(&[
        "latents",
        "show",
        "--cache",
        out.to_str().unwrap(),
        "--hookpoint",
        "layers.0",
        "--latent",
        "3",
        "--model",
        model.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let err = stderr(&shown);
    assert!(err.contains("0_31.safetensors"), "{err}");
}

/// A `tokens [rows, ctx_len]` i64 safetensors file, written by hand (the format is a JSON header
/// behind its length).
fn write_pretokenized(path: &Path, rows: usize, ctx_len: usize) {
    let ids: Vec<i64> = (0..rows * ctx_len)
        .map(|i| 3 + (i * 7 % 90) as i64)
        .collect();
    let header = serde_json::json!({
        "tokens": {"dtype": "I64", "shape": [rows, ctx_len], "data_offsets": [0, ids.len() * 8]}
    })
    .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(ids.iter().flat_map(|i| i.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// A model folder without tokenizer files caches pre-tokenized ids; commands that decode ask for
/// a tokenizer by name and work once given one.
#[test]
fn a_model_without_tokenizer_caches_pretokenized_ids() {
    let dir = tempfile::tempdir().unwrap();
    let with_tok = tiny_model(dir.path());
    let bare = dir.path().join("bare-model");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(with_tok.join(f), bare.join(f)).unwrap();
    }
    let sae = write_sae(&dir.path().join("sae"), "layers.0", D_MODEL, 64, 4);
    let ids = dir.path().join("ids.safetensors");
    write_pretokenized(&ids, 8, 8);
    let out = dir.path().join("out");
    let hf = dir.path().join("hf");
    let args = cache_args(&bare, &sae, ids.to_str().unwrap(), &out, &FLAGS);
    assert_success(&cache(&args, "http://127.0.0.1:9", &hf));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("latents/layers.0/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["model_has_tokenizer"], false);
    let counts: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("latents/layers.0/firing_counts.json")).unwrap(),
    )
    .unwrap();
    let latent = counts["counts"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c.as_u64() > Some(0))
        .expect("some latent fires")
        .to_string();

    // A text dataset needs the tokenizer the model lacks: the error says so.
    let text = dir.path().join("text.txt");
    std::fs::write(&text, run_support::text(400)).unwrap();
    let args = cache_args(
        &bare,
        &sae,
        text.to_str().unwrap(),
        &dir.path().join("o2"),
        &FLAGS,
    );
    let err = stderr(&cache(&args, "http://127.0.0.1:9", &hf));
    assert!(
        err.contains("no tokenizer") && err.contains("pre-tokenized"),
        "{err}"
    );

    let show = |extra: &[&str]| {
        let mut a = vec![
            "latents",
            "show",
            "--cache",
            out.to_str().unwrap(),
            "--hookpoint",
            "layers.0",
            "--latent",
            &latent,
            "--example-ctx-len",
            "8",
        ];
        a.extend(extra);
        command(&a)
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .output()
            .unwrap()
    };
    let err = stderr(&show(&[]));
    assert!(
        err.contains("bare-model") && err.contains("--tokenizer"),
        "{err}"
    );
    let tok = with_tok.join("tokenizer.json");
    let shown = show(&["--tokenizer", tok.to_str().unwrap()]);
    assert_success(&shown);

    // The SAE's decoder rows were projected onto the vocabulary beside the splits, and `latents
    // show` lists the latent's promoted and suppressed tokens with their deltas, in order.
    let projection = autointerp_core::VocabProjection::read_from_dir(&out.join("latents/layers.0"))
        .unwrap()
        .expect("the cache wrote vocab_projection.json");
    let stdout = String::from_utf8_lossy(&shown.stdout);
    let entry = &projection.latents[latent.parse::<usize>().unwrap()];
    for (label, pairs) in [
        ("promotes:", &entry.promoted),
        ("suppresses:", &entry.suppressed),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in:\n{stdout}"));
        let mut rest = line;
        for &(token, delta) in pairs {
            let shown = format!("({delta:+.2})");
            let at = rest
                .find(&shown)
                .unwrap_or_else(|| panic!("token {token} {shown} missing or out of order: {line}"));
            rest = &rest[at + shown.len()..];
        }
        assert_eq!(pairs.len(), autointerp_cache::DEFAULT_VOCAB_K);
    }
}
