//! delphi's command lines, pasted, run as autointerp's (#15 item 5), and the library's options the
//! command line lacked (#15 item 8): `--non-activating-source`, `--neighbours-type`,
//! `--fuzz-type`, `--device`/`--dtype` on `explain` and `score`, `--hookpoint` and
//! `--hookpoints` everywhere.

mod cache_support;
mod run_support;

use std::path::Path;

use autointerp_core::LatentRecord;
use cache_support::{cache_args, cache_files, write_sae, D_MODEL};
use run_support::*;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The record of latent `i` in a results folder.
fn record(run_dir: &Path, i: usize) -> LatentRecord {
    serde_json::from_slice(
        &std::fs::read(run_dir.join("latents").join(format!("{}.json", latent(i)))).unwrap(),
    )
    .unwrap()
}

/// The words of an example.
fn words(e: &autointerp_core::Example) -> Vec<String> {
    e.str_tokens.iter().map(|t| t.trim().to_string()).collect()
}

#[test]
fn a_pasted_delphi_command_line_runs_with_the_settings_of_ours() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    write_cache(&results.join("delphi"), 8, &tok);
    write_cache(&results.join("ours"), 8, &tok);
    let server = Server::start(Faults::default());
    let (tok_s, results_s) = (tok.to_str().unwrap(), results.to_str().unwrap());

    // As delphi's README writes them: underscores, lists separated by spaces, digit groups,
    // booleans as separate words, delphi's names for our settings.
    let delphi = [
        "run",
        tok_s,
        "unused",
        "--name",
        "delphi",
        "--results_dir",
        results_s,
        "--hookpoints",
        HOOK,
        "--n_tokens",
        "10_000_000",
        "--cache_ctx_len",
        "16",
        "--batch_size",
        "2",
        "--n_splits",
        "1",
        "--dataset_repo",
        "unused.txt",
        "--dataset_split",
        "train[:1%]",
        "--dataset_column",
        "text",
        "--filter_bos",
        "--max_latents",
        "4",
        "--example_ctx_len",
        "8",
        "--min_examples",
        "8",
        "--n_non_activating",
        "4",
        "--non_activating_source",
        "random",
        "--neighbours_type",
        "co-occurrence",
        "--n_examples_train",
        "4",
        "--n_examples_test",
        "4",
        "--n_quantiles",
        "2",
        "--train_type",
        "top",
        "--test_type",
        "quantiles",
        "--ratio_top",
        "0.2",
        "--scorers",
        "fuzz",
        "detection",
        "--fuzz_type",
        "default",
        "--num_examples_per_scorer_prompt",
        "2",
        "--log_probs",
        "false",
        "--explainer_provider",
        "openai",
        "--explainer_model",
        "m",
        "--explainer_base_url",
        &server.url,
        "--explainer_model_max_len",
        "5_120",
        "--pipeline_num_proc",
        "2",
        "--seed",
        "22",
        "--verbose",
        "True",
        "--overwrite",
        "neighbours",
        "scores",
    ];
    assert_success(&autointerp(&delphi));
    let ours = [
        "run",
        tok_s,
        "unused",
        "--name",
        "ours",
        "--results-dir",
        results_s,
        "--hookpoint",
        HOOK,
        "--n-tokens",
        "10000000",
        "--ctx-len",
        "16",
        "--batch-size",
        "2",
        "--n-splits",
        "1",
        "--dataset",
        "unused.txt",
        "--dataset-split",
        "train[:1%]",
        "--filter-bos",
        "--max-latents",
        "4",
        "--example-ctx-len",
        "8",
        "--min-examples",
        "8",
        "--n-non-activating",
        "4",
        "--n-examples-train",
        "4",
        "--n-examples-test",
        "4",
        "--n-quantiles",
        "2",
        "--train-type",
        "top",
        "--scorers",
        "fuzz,detection",
        "--num-examples-per-scorer-prompt",
        "2",
        "--explainer-model",
        "m",
        "--explainer-base-url",
        &server.url,
        "--explainer-model-max-len",
        "5120",
        "--max-concurrency",
        "2",
        "--overwrite",
        "neighbours,scores",
    ];
    assert_success(&autointerp(&ours));

    let saved = |name: &str| {
        let mut cfg = read_json(&results.join(name).join("run_config.json"));
        cfg["name"] = Value::Null;
        cfg
    };
    let (from_delphi, from_ours) = (saved("delphi"), saved("ours"));
    assert_eq!(from_delphi, from_ours);
    assert_eq!(from_ours["n_tokens"], 10_000_000);
    assert_eq!(from_ours["filter_bos"], true);
    assert_eq!(
        from_ours["scorers"],
        serde_json::json!(["fuzz", "detection"])
    );
    assert_eq!(from_ours["explainer_model_max_len"], 5120);
    assert_eq!(from_ours["max_concurrency"], 2);
    for i in 0..4 {
        assert!(
            complete(&results.join("delphi"), i, &["fuzz", "detection"]),
            "latent {i}"
        );
    }

    // delphi's flags with no counterpart here are named, with what to use instead.
    let out = autointerp(&["run", tok_s, "unused", "--num_gpus", "2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out)
            .contains("--num_gpus: not supported; autointerp uses one device, see --device"),
        "{}",
        stderr(&out)
    );
    let out = autointerp(&["run", tok_s, "unused", "--load_in_8bit"]);
    assert!(stderr(&out).contains("--load_in_8bit: not supported"));
}

#[test]
fn cache_takes_delphi_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let sae = write_sae(&dir.path().join("sae"), "layers.0", D_MODEL, 64, 4);
    let data = dir.path().join("data.txt");
    std::fs::write(&data, text(400)).unwrap();
    let ours_dir = dir.path().join("ours");
    let args = cache_args(
        &model,
        &sae,
        data.to_str().unwrap(),
        &ours_dir,
        &[
            "--n-tokens",
            "64",
            "--ctx-len",
            "8",
            "--n-splits",
            "2",
            "--skip-first-token",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_success(&autointerp(&args));

    let delphi_dir = dir.path().join("delphi");
    let delphi = [
        "cache",
        "--model",
        model.to_str().unwrap(),
        "--sparse_model",
        sae.to_str().unwrap(),
        "--hookpoints",
        "layers.0",
        "layers.0",
        "--dataset_repo",
        data.to_str().unwrap(),
        "--dataset_row",
        "text",
        "--n_tokens",
        "6_4",
        "--cache_ctx_len=8",
        "--n_splits",
        "2",
        "--skip_first_token",
        "True",
        "--filter_bos",
        "false",
        "--out",
        delphi_dir.to_str().unwrap(),
    ];
    assert_success(&autointerp(&delphi));
    assert_eq!(cache_files(&ours_dir), cache_files(&delphi_dir));
}

/// A sparsify coder of 8 latents over 16 dimensions whose decoder rows make latent `i`'s nearest
/// neighbour `i ^ 2`, and whose encoder directions make it `i ^ 4`. In the fixture cache
/// neither neighbour ever fires in the same 8-token window as `i`.
fn write_paired_sae(dir: &Path) -> std::path::PathBuf {
    let sub = dir.join(HOOK);
    std::fs::create_dir_all(&sub).unwrap();
    let rows = |pair: fn(usize) -> usize| -> Tensor {
        let mut w = vec![0.0f32; 8 * 16];
        for i in 0..8 {
            // The pair's shared direction, and a small one of the latent's own.
            w[i * 16 + pair(i).min(i)] = 1.0;
            w[i * 16 + 8 + i] = 0.1;
        }
        Tensor::from_slice(&w).reshape([8, 16])
    };
    let opts = (Kind::Float, Device::Cpu);
    let tensors = [
        ("encoder.weight", rows(|i| i ^ 4)),
        ("encoder.bias", Tensor::zeros([8], opts)),
        ("W_dec", rows(|i| i ^ 2)),
        ("b_dec", Tensor::zeros([16], opts)),
    ];
    Tensor::write_safetensors(&tensors, sub.join("sae.safetensors")).unwrap();
    let cfg = serde_json::json!({"activation": "topk", "num_latents": 8, "k": 2, "d_in": 16});
    std::fs::write(sub.join("cfg.json"), cfg.to_string()).unwrap();
    dir.to_path_buf()
}

#[test]
fn non_activating_examples_come_from_the_source_and_neighbours_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let sae = write_paired_sae(&dir.path().join("sae"));
    let results = dir.path().join("results");
    let server = Server::start(Faults::default());
    let (tok_s, sae_s, results_s) = (
        tok.to_str().unwrap(),
        sae.to_str().unwrap(),
        results.to_str().unwrap(),
    );
    let run = |name: &str, extra: &[&str]| {
        write_cache(&results.join(name), 8, &tok);
        let mut args = vec![
            "run",
            tok_s,
            sae_s,
            "--results-dir",
            results_s,
            "--name",
            name,
            "--hookpoints",
            HOOK,
            "--explainer",
            "tokens",
            "--scorers",
            "detection",
            "--explainer-model",
            "m",
            "--explainer-base-url",
            &server.url,
        ];
        args.extend(RECORD_FLAGS);
        args.extend(extra);
        assert_success(&autointerp(&args));
        results.join(name)
    };
    // Which latent fired in each non-activating example of latent 0, by its word.
    let sources = |run_dir: &Path| -> Vec<Option<usize>> {
        let r = record(run_dir, 0);
        assert_eq!(r.non_activating.len(), 4);
        r.non_activating
            .iter()
            .map(|e| {
                let lit: Vec<String> = words(e)
                    .into_iter()
                    .zip(&e.activations)
                    .filter(|(_, a)| **a > 0.0)
                    .map(|(w, _)| w)
                    .collect();
                assert!(!words(e).contains(&WORDS[0].to_string()));
                lit.first()
                    .map(|w| WORDS.iter().position(|x| x == w).unwrap())
            })
            .collect()
    };

    let random = run("random", &[]);
    assert_eq!(sources(&random), [None; 4]);
    assert!(record(&random, 0)
        .non_activating
        .iter()
        .all(|e| e.distance.is_none()));

    let decoder = run(
        "decoder",
        &[
            "--non-activating-source",
            "neighbours",
            "--neighbours-type",
            "decoder_similarity",
        ],
    );
    assert_eq!(sources(&decoder), [Some(2); 4]);
    let encoder = run(
        "encoder",
        &[
            "--non_activating_source",
            "neighbours",
            "--neighbours_type",
            "encoder_similarity",
        ],
    );
    assert_eq!(sources(&encoder), [Some(4); 4]);
    let saved = read_json(&encoder.join("run_config.json"));
    assert_eq!(saved["non_activating_source"], "neighbours");
    assert_eq!(saved["neighbours_type"], "encoder_similarity");
    // No two latents fire on one token of the fixture: co-occurrence finds no neighbour, and
    // the examples fall back to random windows.
    let co = run("co", &["--non-activating-source", "neighbours"]);
    assert_eq!(sources(&co), [None; 4]);

    // delphi's FAISS: the silent windows whose text the embedder places nearest.
    let faiss = run(
        "faiss",
        &[
            "--non-activating-source",
            "faiss",
            "--embedding-model",
            "bag-of-words",
            "--embedding-base-url",
            &server.url,
        ],
    );
    let r = record(&faiss, 0);
    assert!(
        r.non_activating.iter().all(|e| e.distance.is_some()),
        "{:?}",
        r.non_activating
    );
    assert_eq!(
        read_json(&faiss.join("run_config.json"))["non_activating_source"],
        "embedding"
    );

    // Neighbours by weights need the coders, and neurons have none.
    write_cache(&results.join("neurons"), 8, &tok);
    let mut args = vec![
        "run",
        tok_s,
        "neurons",
        "--results-dir",
        results_s,
        "--name",
        "neurons",
        "--explainer",
        "tokens",
        "--scorers",
        "detection",
        "--explainer-model",
        "m",
        "--explainer-base-url",
        &server.url,
        "--non-activating-source",
        "neighbours",
        "--neighbours-type",
        "decoder_similarity",
    ];
    args.extend(RECORD_FLAGS);
    let out = autointerp(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("decoder_similarity"),
        "{}",
        stderr(&out)
    );
    let out = autointerp(&["run", tok_s, "--neighbours-type", "jaccard"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("jaccard"), "{}", stderr(&out));
}

/// The excerpts of a fuzzing prompt's last message, and the word its explanation names.
fn fuzz_excerpts(body: &Value) -> (String, Vec<String>) {
    let last = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    let word = last
        .lines()
        .find_map(|l| l.strip_prefix("Feature description:"))
        .unwrap()
        .trim()
        .trim_start_matches("the word")
        .trim()
        .to_string();
    let excerpts = last
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.starts_with("Excerpt "))
        })
        .map(|(_, t)| t.to_string())
        .collect();
    (word, excerpts)
}

#[test]
fn fuzz_type_active_highlights_activating_text_wrongly() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let results = dir.path().join("results");
    let (tok_s, results_s) = (tok.to_str().unwrap(), results.to_str().unwrap());
    for (name, fuzz_type) in [("default", None), ("active", Some("active"))] {
        write_cache(&results.join(name), 4, &tok);
        let server = Server::start(Faults::default());
        let mut args = run_args(tok_s, results_s, name, &server.url);
        args.extend(["--scorers", "fuzz"]);
        args.extend(RECORD_FLAGS);
        if let Some(t) = fuzz_type {
            args.extend(["--fuzz-type", t]);
        }
        assert_success(&autointerp(&args));
        let prompts: Vec<(String, Vec<String>)> = server
            .bodies()
            .iter()
            .filter(|(k, _)| k == "fuzz")
            .map(|(_, b)| fuzz_excerpts(b))
            .collect();
        assert!(!prompts.is_empty());
        // Each excerpt shows the latent's word or not: in `active`, every wrongly highlighted
        // excerpt is an activating one, so all show it.
        let all_on_topic = prompts.iter().all(|(word, excerpts)| {
            excerpts.iter().all(|e| {
                e.split_whitespace()
                    .any(|w| w.trim_matches(['<', '>']) == word)
            })
        });
        assert_eq!(all_on_topic, fuzz_type.is_some(), "{name}: {prompts:?}");
        for i in 0..4 {
            assert!(complete(&results.join(name), i, &["fuzz"]), "{name} {i}");
        }
        let saved = read_json(&results.join(name).join("run_config.json"));
        assert_eq!(saved["fuzz_type"], fuzz_type.unwrap_or("default"));
    }
}

#[test]
fn explain_and_score_take_the_device_and_hookpoint_flags() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    write_tokenizer(&tok);
    let run_dir = dir.path().join("run");
    write_cache(&run_dir, 4, &tok);
    let run_s = run_dir.to_str().unwrap();
    let mut args = vec![
        "explain",
        run_s,
        "--explainer",
        "tokens",
        "--hookpoint",
        HOOK,
        "--device",
        "cpu",
        "--dtype",
        "bf16",
    ];
    args.extend(RECORD_FLAGS);
    assert_success(&autointerp(&args));
    let saved = read_json(&run_dir.join("run_config.json"));
    assert_eq!(saved["dtype"], "bf16");
    assert_eq!(saved["hookpoints"], serde_json::json!([HOOK]));
    assert!(run_dir
        .join("explanations")
        .join(format!("{}.txt", latent(0)))
        .is_file());

    // The in-process models of explain and score run where --device says, in --dtype.
    let model = tiny_model(dir.path());
    let model_s = model.to_str().unwrap();
    let out = autointerp(&[
        "explain",
        run_s,
        "--explainer",
        "default",
        "--explainer-provider",
        "local",
        "--explainer-model",
        model_s,
        "--device",
        "cuda:99",
        "--overwrite",
        "explanations",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("cuda:99") && stderr(&out).contains("CUDA device"),
        "{}",
        stderr(&out)
    );
    let out = autointerp(&[
        "score",
        run_s,
        "--scorers",
        "surprisal",
        "--surprisal-model",
        model_s,
        "--hookpoints",
        HOOK,
        "--dtype",
        "f17",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("f17"), "{}", stderr(&out));
    let out = autointerp(&[
        "score",
        run_s,
        "--scorers",
        "surprisal",
        "--surprisal-model",
        model_s,
        "--device",
        "cuda:99",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("cuda:99"), "{}", stderr(&out));
}

#[test]
fn help_tells_how_center_examples_relates_to_delphi() {
    let out = autointerp(&["run", "--help"]);
    assert_success(&out);
    let help = String::from_utf8_lossy(&out.stdout);
    let at = help.find("--center-examples").unwrap();
    let text: String = help[at..].split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("delphi's `center_examples` is wired the other way round"),
        "{text}"
    );
    for flag in [
        "--hookpoints",
        "--non-activating-source",
        "--neighbours-type",
        "--fuzz-type",
        "--dataset-repo",
        "--cache-ctx-len",
        "--pipeline-num-proc",
        "--faiss-embedding-model",
    ] {
        assert!(help.contains(flag), "{flag} not in run --help");
    }
}
