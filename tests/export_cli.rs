//! `autointerp export neuronpedia` and `autointerp export saebench` on a small results folder:
//! the files land where the command says, with the values of the folder, and a missing folder is
//! a one-line error naming it.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output};

use autointerp_core::{Explanation, HookPoint, LatentId};
use autointerp_explain::write_explanation;
use autointerp_score::{write_score_file, ExampleOutcome};
use serde_json::Value;

fn autointerp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autointerp"))
        .args(args)
        .output()
        .expect("the autointerp binary runs")
}

fn outcome(activating: bool, prediction: bool) -> ExampleOutcome {
    let mut o = ExampleOutcome {
        str_tokens: vec!["x".into()],
        activations: vec![if activating { 1.0 } else { 0.0 }],
        quantile: activating.then_some(1),
        distance: None,
        activating,
        prediction: None,
        probability: None,
        correct: None,
        text: Some("x".into()),
    };
    o.set_prediction(Some(prediction), None);
    o
}

/// `layers.6` latents 2 ("Rivers", detection 4 of 4 right) and 5 ("Weekdays", 2 of 4 right).
fn results(root: &Path) {
    std::fs::write(
        root.join("run_config.json"),
        r#"{"explainer_model": "Qwen/Qwen2.5-7B-Instruct"}"#,
    )
    .unwrap();
    std::fs::create_dir_all(root.join("latents")).unwrap();
    let scores = root.join("scores");
    let (t, f) = (true, false);
    for (i, text, predictions) in [(2, "Rivers", [t, t, f, f]), (5, "Weekdays", [t, f, t, f])] {
        let latent = LatentId::new(HookPoint::Residual(6), i);
        let explanation = Explanation {
            latent,
            text: text.into(),
        };
        write_explanation(&root.join("explanations"), &explanation).unwrap();
        let outcomes: Vec<ExampleOutcome> = [t, t, f, f]
            .iter()
            .zip(predictions)
            .map(|(&activating, p)| outcome(activating, p))
            .collect();
        write_score_file(&scores, "detection", &latent, &outcomes[..]).unwrap();
    }
}

#[test]
fn a_results_folder_exports_to_neuronpedia_and_saebench() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    std::fs::create_dir_all(&root).unwrap();
    results(&root);
    let path = root.to_str().unwrap();

    let out = autointerp(&[
        "export",
        "neuronpedia",
        path,
        "--model-id",
        "gemma-2-2b",
        "--source-template",
        "{layer}-res-16k",
    ]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("2 explanations and 2 scores of 2 latents"),
        "{said}"
    );
    let batch = root.join("neuronpedia/gemma-2-2b/6-res-16k/explanations/batch-0.jsonl.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&batch).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let described: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["index"].as_str().unwrap(),
                r["description"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(described, [("2", "Rivers"), ("5", "Weekdays")]);
    assert_eq!(rows[0]["explanationModelName"], "Qwen2.5-7B-Instruct");

    let out = autointerp(&["export", "saebench", path]);
    assert!(out.status.success(), "{out:?}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(root.join("saebench.json")).unwrap()).unwrap();
    let detection = &summary["eval_result_metrics"]["detection"];
    // Accuracies 1 and 1/2.
    assert_eq!(detection["autointerp_score"], 0.75);
    assert_eq!(detection["n_latents"], 2);
}

#[test]
fn a_missing_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run");
    let path = missing.to_str().unwrap();
    for args in [
        vec!["export", "saebench", path],
        vec![
            "export",
            "neuronpedia",
            path,
            "--model-id",
            "m",
            "--source-template",
            "{layer}",
        ],
    ] {
        let out = autointerp(&args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no-such-run") && err.lines().count() == 1,
            "{err}"
        );
        assert!(!missing.exists());
    }
}
