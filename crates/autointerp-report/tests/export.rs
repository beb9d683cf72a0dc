//! The Neuronpedia export and the SAEBench-style summary on a results folder small enough to
//! check by hand: exact rows and fields, an explanation with quotes and non-ASCII text, skipped
//! latents counted, and errors that name the path at fault.

use std::io::Read as _;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use autointerp_core::{Explanation, HookPoint, LatentId};
use autointerp_explain::write_explanation;
use autointerp_report::{
    export_neuronpedia, saebench_summary, Bootstrap, Error, NeuronpediaOptions,
    NEURONPEDIA_DEFAULT_AUTHOR_ID,
};
use autointerp_score::{write_score_file, EmbeddingOutcome, ExampleOutcome};
use serde_json::{json, Value};

/// Quotes, a backslash, a newline, accents, a non-BMP emoji and markup.
const TRICKY: &str = "Says \"hi\" \\ or 'bye' —\nnaïve café 🚀 <b>&amp;</b>";

fn res(i: u32) -> LatentId {
    LatentId::new(HookPoint::Residual(12), i)
}

fn mlp(i: u32) -> LatentId {
    LatentId::new(HookPoint::Mlp(3), i)
}

fn outcome(activating: bool, prediction: Option<bool>) -> ExampleOutcome {
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
    o.set_prediction(prediction, None);
    o
}

fn embedding(activating: bool, similarity: f32) -> EmbeddingOutcome {
    EmbeddingOutcome {
        text: "x".into(),
        activating,
        quantile: None,
        distance: None,
        similarity: Some(similarity),
    }
}

/// `layers.12`: latent 3 (tricky explanation; detection BA 5/6 acc 3/4, fuzz BA 1/2 acc 1/2),
/// 7 ("Numbers"; detection BA 1/2 acc 1/2, fuzz all failed, embedding AUC 1), 9 (failed
/// explanation), 11 (no explanation file; detection all failed). `layers.3.mlp`: latent 1
/// ("MLP outputs"; detection BA 1 acc 1). Control of detection: latent 3 acc 1/2, latent 7 acc 1.
fn build(root: &Path) -> Result<()> {
    std::fs::write(
        root.join("run_config.json"),
        r#"{"explainer_model": "meta-llama/Llama-3.1-8B-Instruct",
            "embedding_model": "dunzhang/stella_en_400M_v5"}"#,
    )?;
    let expl = root.join("explanations");
    std::fs::create_dir_all(&expl)?;
    for (latent, text) in [
        (res(3), TRICKY),
        (res(7), "Numbers"),
        (res(9), "Explanation could not be parsed."),
        (mlp(1), "MLP outputs"),
    ] {
        write_explanation(
            &expl,
            &Explanation {
                latent,
                text: text.into(),
            },
        )?;
    }
    std::fs::create_dir_all(root.join("latents"))?;
    let scores = root.join("scores");
    let (t, f) = (true, false);
    let detection: [(LatentId, Vec<ExampleOutcome>); 4] = [
        (
            res(3),
            vec![
                outcome(t, Some(t)),
                outcome(f, Some(f)),
                outcome(f, Some(t)),
                outcome(f, Some(f)),
                outcome(t, None),
            ],
        ),
        (
            res(7),
            vec![
                outcome(t, Some(t)),
                outcome(t, Some(f)),
                outcome(f, Some(f)),
                outcome(f, Some(t)),
            ],
        ),
        (res(11), vec![outcome(t, None), outcome(f, None)]),
        (mlp(1), vec![outcome(t, Some(t)), outcome(f, Some(f))]),
    ];
    for (id, outcomes) in &detection {
        write_score_file(&scores, "detection", id, &outcomes[..])?;
    }
    write_score_file(
        &scores,
        "fuzz",
        &res(3),
        &[outcome(t, Some(t)), outcome(f, Some(t))][..],
    )?;
    write_score_file(
        &scores,
        "fuzz",
        &res(7),
        &[outcome(t, None), outcome(f, None)][..],
    )?;
    write_score_file(
        &scores,
        "embedding",
        &res(7),
        &[embedding(t, 0.9), embedding(f, 0.1)][..],
    )?;
    let random = scores.join("random");
    write_score_file(
        &random,
        "detection",
        &res(3),
        &[outcome(t, Some(f)), outcome(f, Some(f))][..],
    )?;
    write_score_file(
        &random,
        "detection",
        &res(7),
        &[outcome(t, Some(t)), outcome(f, Some(f))][..],
    )?;
    Ok(())
}

fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut s)?;
        s
    } else {
        String::from_utf8(bytes)?
    };
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-12)
}

#[test]
fn neuronpedia_rows_fields_and_counts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    build(dir.path())?;
    let options = NeuronpediaOptions::new("gemma-2-2b", "{layer}-gemmascope-res-16k")
        .with_source("layers.3.mlp", "3-transcoder");
    let export = export_neuronpedia(dir.path(), &options)?;

    let out = dir.path().join("neuronpedia").join("gemma-2-2b");
    let res_dir = out.join("12-gemmascope-res-16k");
    let mlp_dir = out.join("3-transcoder");
    assert_eq!(export.out_dir, dir.path().join("neuronpedia"));
    assert_eq!(
        export.files,
        vec![
            res_dir.join("explanations/batch-0.jsonl.gz"),
            res_dir.join("explanation_scores/batch-0.jsonl.gz"),
            mlp_dir.join("explanations/batch-0.jsonl.gz"),
            mlp_dir.join("explanation_scores/batch-0.jsonl.gz"),
        ]
    );
    assert_eq!(export.n_latents, 5);
    assert_eq!(export.n_explanations, 3);
    // 9 (failed explanation) and 11 (no explanation file).
    assert_eq!(export.n_without_explanation, 2);
    // 7's fuzz: every example failed.
    assert_eq!(export.n_undefined_scores, 1);
    assert_eq!(export.n_scores, 5);
    assert_eq!(
        serde_json::to_value(&export.scores_by_type)?,
        json!({"eleuther_embedding": 1, "eleuther_fuzz": 1, "eleuther_recall": 3})
    );
    assert_eq!(
        serde_json::to_value(&export.sources)?,
        json!({"layers.12": "12-gemmascope-res-16k", "layers.3.mlp": "3-transcoder"})
    );
    assert_eq!(
        export.explanation_model_name.as_deref(),
        Some("Llama-3.1-8B-Instruct")
    );

    let rows = read_jsonl(&res_dir.join("explanations/batch-0.jsonl.gz"))?;
    assert_eq!(rows.len(), 2);
    let mut ids = Vec::new();
    for (row, (index, description)) in rows.iter().zip([("3", TRICKY), ("7", "Numbers")]) {
        let id = row["id"].as_str().context("id")?.to_string();
        ensure!(
            id.len() == 25
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "id {id}"
        );
        assert_eq!(
            row,
            &json!({
                "id": id,
                "modelId": "gemma-2-2b",
                "layer": "12-gemmascope-res-16k",
                "index": index,
                "description": description,
                "authorId": NEURONPEDIA_DEFAULT_AUTHOR_ID,
                "typeName": null,
                "explanationModelName": "Llama-3.1-8B-Instruct",
            })
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);

    let scores = read_jsonl(&res_dir.join("explanation_scores/batch-0.jsonl.gz"))?;
    let expected = [
        (
            &ids[0],
            "eleuther_recall",
            5.0 / 6.0,
            "Llama-3.1-8B-Instruct",
        ),
        (&ids[0], "eleuther_fuzz", 0.5, "Llama-3.1-8B-Instruct"),
        (&ids[1], "eleuther_recall", 0.5, "Llama-3.1-8B-Instruct"),
        (&ids[1], "eleuther_embedding", 1.0, "stella_en_400M_v5"),
    ];
    assert_eq!(scores.len(), expected.len());
    for (row, (explanation, kind, value, model)) in scores.iter().zip(expected) {
        let obj = row.as_object().context("object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "explanationId",
                "explanationScoreModelName",
                "explanationScoreTypeName",
                "id",
                "initiatedByUserId",
                "jsonDetails",
                "value"
            ]
        );
        assert_eq!(row["explanationId"], json!(explanation));
        assert_eq!(row["explanationScoreTypeName"], json!(kind));
        assert_eq!(row["explanationScoreModelName"], json!(model));
        assert_eq!(
            row["initiatedByUserId"],
            json!(NEURONPEDIA_DEFAULT_AUTHOR_ID)
        );
        assert_eq!(row["jsonDetails"], json!("[]"));
        ensure!(
            close(&row["value"], value),
            "{kind}: {} != {value}",
            row["value"]
        );
    }

    let rows = read_jsonl(&mlp_dir.join("explanations/batch-0.jsonl.gz"))?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["layer"], json!("3-transcoder"));
    assert_eq!(rows[0]["index"], json!("1"));
    assert_eq!(rows[0]["description"], json!("MLP outputs"));

    // The same export again: the same ids (a re-import inserts nothing new).
    export_neuronpedia(dir.path(), &options)?;
    let again = read_jsonl(&res_dir.join("explanations/batch-0.jsonl.gz"))?;
    assert_eq!(again[0]["id"], json!(ids[0]));
    Ok(())
}

#[test]
fn neuronpedia_options_shape_the_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    build(dir.path())?;
    let out = dir.path().join("np");
    let base = NeuronpediaOptions::new("gpt2-small", "{layer}-res-jb")
        .with_source("layers.3.mlp", "3-mlp")
        .with_out_dir(&out);
    export_neuronpedia(dir.path(), &base)?;
    let res_dir = out.join("gpt2-small/12-res-jb/explanations");
    assert!(res_dir.join("batch-0.jsonl.gz").is_file());

    // Plain JSON lines, one row a batch, other names: the stale gzipped batch is removed.
    let options = base
        .with_gzip(false)
        .with_batch_size(1)
        .with_scores(false)
        .with_type_name("np_max-act")
        .with_author_id("user123")
        .with_score_type("detection", "my_detection");
    let export = export_neuronpedia(dir.path(), &options)?;
    let mut names: Vec<String> = std::fs::read_dir(&res_dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    assert_eq!(names, ["batch-0.jsonl", "batch-1.jsonl"]);
    assert_eq!(export.n_scores, 0);
    let first = read_jsonl(&res_dir.join("batch-0.jsonl"))?;
    let second = read_jsonl(&res_dir.join("batch-1.jsonl"))?;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["description"], json!(TRICKY));
    assert_eq!(first[0]["typeName"], json!("np_max-act"));
    assert_eq!(first[0]["authorId"], json!("user123"));
    assert_eq!(second[0]["index"], json!("7"));

    // Scores back on, with the renamed type; the caller's model name is not used while the
    // run config names one.
    let options = options
        .with_scores(true)
        .with_explanation_model_name("ignored");
    let export = export_neuronpedia(dir.path(), &options)?;
    assert_eq!(export.scores_by_type.get("my_detection"), Some(&3));
    assert_eq!(
        export.explanation_model_name.as_deref(),
        Some("Llama-3.1-8B-Instruct")
    );

    // Without run_config.json the caller's name is used.
    std::fs::remove_file(dir.path().join("run_config.json"))?;
    let export = export_neuronpedia(dir.path(), &options)?;
    assert_eq!(export.explanation_model_name.as_deref(), Some("ignored"));
    Ok(())
}

#[test]
fn neuronpedia_errors_name_the_path() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("no-such-run");
    let options = NeuronpediaOptions::new("gemma-2-2b", "{layer}-res");
    let err = export_neuronpedia(&missing, &options).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
    assert!(err.to_string().contains("no-such-run"), "{err}");
    let err = saebench_summary(&missing, &Bootstrap::default()).unwrap_err();
    assert!(err.to_string().contains("no-such-run"), "{err}");

    // Only a failed explanation: nothing to export.
    let run = dir.path().join("failed-run");
    let expl = run.join("explanations");
    std::fs::create_dir_all(&expl)?;
    write_explanation(
        &expl,
        &Explanation {
            latent: res(1),
            text: "Explanation could not be parsed.".into(),
        },
    )?;
    let err = export_neuronpedia(&run, &options).unwrap_err();
    assert!(matches!(err, Error::NoExplanations { .. }), "{err}");
    assert!(
        err.to_string().contains(&expl.display().to_string()),
        "{err}"
    );
    let err = saebench_summary(&run, &Bootstrap::default()).unwrap_err();
    assert!(matches!(err, Error::NoExplanations { .. }), "{err}");
    assert!(!run.join("neuronpedia").exists());

    // Colliding sources, a typo in the template, a bad model id, a hook point without a layer.
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run)?;
    build(&run)?;
    // A template without `{layer}` names both hook points alike.
    let err = export_neuronpedia(&run, &NeuronpediaOptions::new("m", "res")).unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&run.display().to_string()), "{text}");
    assert!(text.contains("both be source `res`"), "{text}");
    let err = export_neuronpedia(&run, &NeuronpediaOptions::new("m", "{layr}-res")).unwrap_err();
    assert!(err.to_string().contains("{layr}"), "{err}");
    let err = export_neuronpedia(&run, &NeuronpediaOptions::new("a/b", "{layer}")).unwrap_err();
    assert!(err.to_string().contains("model-id"), "{err}");
    let err = export_neuronpedia(&run, &NeuronpediaOptions::new("m", "")).unwrap_err();
    assert!(err.to_string().contains("no source id"), "{err}");
    let embed = LatentId::new(HookPoint::Embed, 0);
    write_explanation(
        &run.join("explanations"),
        &Explanation {
            latent: embed,
            text: "Embedding".into(),
        },
    )?;
    let err = export_neuronpedia(&run, &options).unwrap_err();
    assert!(err.to_string().contains("`embed` has no layer"), "{err}");
    export_neuronpedia(&run, &options.clone().with_source("embed", "0-embed"))
        .context("an explicit source for embed")?;
    Ok(())
}

#[test]
fn saebench_summary_numbers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    build(dir.path())?;
    let summary = saebench_summary(dir.path(), &Bootstrap::default())?;
    let path = dir.path().join("saebench_summary.json");
    summary.write_json(&path)?;
    let v: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    assert_eq!(v, serde_json::to_value(&summary)?);

    assert_eq!(v["explainer_model"], json!("Llama-3.1-8B-Instruct"));
    assert_eq!(v["confidence"], json!(0.95));
    assert_eq!(v["n_resamples"], json!(1000));
    assert_eq!(v["n_latents"], json!(5));
    assert_eq!(v["n_explained"], json!(3));
    let metrics = v["eval_result_metrics"].as_object().context("metrics")?;
    assert_eq!(
        metrics.keys().collect::<Vec<_>>(),
        ["detection", "embedding", "fuzz"]
    );

    let d = &metrics["detection"];
    let mut keys: Vec<&str> = d
        .as_object()
        .context("d")?
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "autointerp_score",
            "autointerp_score_ci",
            "autointerp_std_dev",
            "balanced_accuracy",
            "metric",
            "n_failed_items",
            "n_failed_latents",
            "n_items",
            "n_latents",
            "n_missing_latents",
            "n_unreadable",
            "random_explanation_n_latents",
            "random_explanation_score",
            "random_explanation_std_dev",
        ]
    );
    assert_eq!(d["metric"], json!("accuracy"));
    // Plain accuracies 3/4, 1/2, 1 (latent 11 failed): mean 0.75, sample sd 0.25.
    ensure!(
        close(&d["autointerp_score"], 0.75),
        "{}",
        d["autointerp_score"]
    );
    ensure!(
        close(&d["autointerp_std_dev"], 0.25),
        "{}",
        d["autointerp_std_dev"]
    );
    let ci = &d["autointerp_score_ci"];
    ensure!(close(&ci["estimate"], 0.75), "{ci}");
    let (low, high) = (
        ci["low"].as_f64().context("low")?,
        ci["high"].as_f64().context("high")?,
    );
    ensure!(
        (0.5..0.75).contains(&low) && high > 0.75 && high <= 1.0,
        "{ci}"
    );
    ensure!(
        close(&d["balanced_accuracy"], (5.0 / 6.0 + 0.5 + 1.0) / 3.0),
        "{}",
        d["balanced_accuracy"]
    );
    assert_eq!(d["n_latents"], json!(3));
    assert_eq!(d["n_failed_latents"], json!(1));
    assert_eq!(d["n_unreadable"], json!(0));
    assert_eq!(d["n_missing_latents"], json!(0));
    assert_eq!(d["n_failed_items"], json!(3));
    assert_eq!(d["n_items"], json!(13));
    // Control accuracies 1/2 and 1.
    ensure!(close(&d["random_explanation_score"], 0.75), "{d}");
    ensure!(
        close(&d["random_explanation_std_dev"], 0.125f64.sqrt()),
        "{d}"
    );
    assert_eq!(d["random_explanation_n_latents"], json!(2));

    let fz = &metrics["fuzz"];
    ensure!(close(&fz["autointerp_score"], 0.5), "{fz}");
    assert_eq!(fz["autointerp_std_dev"], Value::Null);
    assert_eq!(fz["n_latents"], json!(1));
    assert_eq!(fz["n_failed_latents"], json!(1));
    // The MLP latent has an explanation but no fuzz file.
    assert_eq!(fz["n_missing_latents"], json!(1));
    assert_eq!(fz["random_explanation_score"], Value::Null);
    assert_eq!(fz["random_explanation_n_latents"], json!(0));

    let e = &metrics["embedding"];
    assert_eq!(e["metric"], json!("auc"));
    ensure!(close(&e["autointerp_score"], 1.0), "{e}");
    assert_eq!(e["balanced_accuracy"], Value::Null);
    assert_eq!(e["n_missing_latents"], json!(2));
    Ok(())
}
