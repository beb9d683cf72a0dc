//! The `autointerp` binary as a user runs it.
use std::process::Command;

fn autointerp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autointerp"))
        .args(args)
        .output()
        .expect("run autointerp")
}

#[test]
fn help_lists_the_commands() {
    let out = autointerp(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("chat"), "{text}");
}

#[test]
fn a_server_that_is_down_is_a_clear_error() {
    // Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    let out = autointerp(&[
        "chat",
        "--model",
        "openai:http://127.0.0.1:9/v1/m",
        "--prompt",
        "hi",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: chat request failed"), "{err}");
}

/// `autointerp activations` on a tiny llama fixture equals the transformers outputs committed
/// beside it.
#[test]
fn activations_match_the_fixture() {
    use tch::Tensor;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autointerp-model/tests/fixtures/llama");
    let expected: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixtures.join("expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let ids = &expected["plain.input_ids"];
    let rows: Vec<String> = (0..ids.size()[0])
        .map(|r| {
            let row = Vec::<i64>::try_from(ids.get(r)).unwrap();
            row.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("acts.safetensors");
    let out = autointerp(&[
        "activations",
        "--model",
        fixtures.to_str().unwrap(),
        "--hookpoints",
        "layers.1,model.layers.0.mlp",
        "--input-ids",
        &rows.join(";"),
        "--logits",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out_file)
        .unwrap()
        .into_iter()
        .collect();
    for (name, key) in [
        ("layers.1", "plain.layers.1"),
        ("layers.0.mlp", "plain.layers.0.mlp"),
        ("logits", "plain.logits"),
    ] {
        let diff = (&got[name] - &expected[key]).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: max difference {diff}");
    }

    // Unknown hook points list the valid ones; layers out of range give the layer count.
    let bad = autointerp(&[
        "activations",
        "--model",
        fixtures.to_str().unwrap(),
        "--hookpoints",
        "layers.x",
        "--input-ids",
        "1,2",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("layers.{i}.mlp.input"),
        "{err}"
    );
    let bad = autointerp(&[
        "activations",
        "--model",
        fixtures.to_str().unwrap(),
        "--hookpoints",
        "layers.99",
        "--input-ids",
        "1,2",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("layer"), "{err}");
}

/// `autointerp chat --model local:...` answers with the in-process engine.
#[test]
fn chat_with_a_local_model() {
    let gguf = autointerp_core::assets::fetch(autointerp_core::assets::Asset::Smollm2).unwrap();
    let gguf = gguf.to_str().unwrap();
    let out = autointerp(&[
        "chat",
        "--model",
        &format!("local:{gguf}"),
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
}
