//! Scorer prompts (snapshots), batch construction, and the score-file layout.

use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats, Message};
use autointerp_explain::split_highlighted;
use autointerp_score::*;

/// Tokens ` t0`, ` t1`, … so that highlighted tokens can be counted in the rendered text.
fn example(acts: &[f32], quantile: Option<u8>, tag: &str) -> Example {
    let max = acts.iter().copied().fold(0.0, f32::max);
    Example {
        tokens: (0..acts.len() as u32).collect(),
        str_tokens: (0..acts.len()).map(|i| format!(" {tag}{i}")).collect(),
        activations: acts.to_vec(),
        normalized: acts
            .iter()
            .map(|a| {
                if max > 0.0 {
                    (10.0 * a / max).floor() as u8
                } else {
                    0
                }
            })
            .collect(),
        quantile,
        distance: None,
    }
}

fn record() -> LatentRecord {
    let test = vec![
        example(&[0.0, 4.0, 3.0, 0.0, 0.0, 0.0], Some(1), "a"),
        example(&[0.0, 0.0, 0.0, 5.0, 0.0, 0.5], Some(1), "b"),
        example(&[2.0, 0.0, 0.0, 0.0, 0.0, 0.0], Some(2), "c"),
        example(&[0.0, 0.0, 1.0, 1.0, 1.0, 0.0], Some(2), "d"),
        example(&[0.0, 0.0, 0.0, 0.0, 0.5, 0.0], Some(3), "e"),
        example(&[0.4, 0.0, 0.0, 0.0, 0.0, 0.0], Some(3), "f"),
    ];
    let mut non_activating: Vec<Example> = (0..4)
        .map(|i| example(&[0.0; 6], None, &format!("n{i}_")))
        .collect();
    non_activating[1].distance = Some(0.25);
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(6), 42),
        train: vec![],
        test,
        non_activating,
        stats: LatentStats {
            n_activations: 12,
            n_tokens: 1000,
            max_activation: 5.0,
        },
        logits: None,
    }
}

fn render(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| format!("===== {:?} =====\n{}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Number of tokens (` <tag><i>`) inside highlights of an excerpt.
fn highlighted_tokens(text: &str) -> usize {
    split_highlighted(text)
        .iter()
        .filter(|(_, on)| *on)
        .map(|(t, _)| t.matches(' ').count())
        .sum()
}

const EXPLANATION: &str = "Tokens t1 and t2 near the start; see [EXPLANATION]: <<not a marker>>.";

#[test]
fn detection_prompt_snapshot() {
    let batches = detection_batches(&record(), &ClassifierConfig::default()).unwrap();
    insta::assert_snapshot!(render(&detection_prompt(EXPLANATION, &batches[0])));
}

#[test]
fn one_excerpt_prompt_snapshots() {
    let cfg = ClassifierConfig {
        answer: AnswerMode::Logprob,
        ..ClassifierConfig::default()
    };
    let batches = detection_batches(&record(), &cfg).unwrap();
    assert!(batches.iter().all(|b| b.len() == 1));
    let excerpt = batches[0].items[0].text.clone().unwrap();
    insta::assert_snapshot!(
        "detection_one",
        render(&detection_prompt_one(EXPLANATION, &excerpt))
    );
    let fuzz = fuzz_batches(
        &record(),
        &FuzzConfig {
            classifier: cfg,
            ..FuzzConfig::default()
        },
    )
    .unwrap();
    let excerpt = fuzz[0].items[0].text.clone().unwrap();
    insta::assert_snapshot!("fuzz_one", render(&fuzz_prompt_one(EXPLANATION, &excerpt)));
}

#[test]
fn fuzz_prompt_snapshots() {
    let default = fuzz_batches(&record(), &FuzzConfig::default()).unwrap();
    insta::assert_snapshot!(
        "fuzz_default",
        render(&fuzz_prompt(EXPLANATION, &default[0]))
    );
    let active = fuzz_batches(
        &record(),
        &FuzzConfig {
            mode: FuzzMode::Active,
            wrong_count: WrongCount::MatchHighlighted,
            ..FuzzConfig::default()
        },
    )
    .unwrap();
    insta::assert_snapshot!("fuzz_active", render(&fuzz_prompt(EXPLANATION, &active[0])));
}

/// Trials of three excerpts: each quantile of [`record`] fills one.
fn three_per_trial() -> IntruderConfig {
    IntruderConfig {
        n_examples_shown: 3,
        ..IntruderConfig::default()
    }
}

#[test]
fn intruder_prompt_snapshots() {
    let trials = intruder_trials(&record(), &three_per_trial()).unwrap();
    insta::assert_snapshot!("intruder", render(&intruder_prompt(&trials[0], false)));
    insta::assert_snapshot!("intruder_cot", render(&intruder_prompt(&trials[1], true)));
}

#[test]
fn simulation_prompt_snapshots() {
    let r = record();
    insta::assert_snapshot!(
        "simulation_logprobs",
        render(&simulation_prompt(EXPLANATION, &r.test[0].str_tokens))
    );
    insta::assert_snapshot!(
        "simulation_json",
        render(&json_simulation_prompt(EXPLANATION, &r.test[0].str_tokens))
    );
}

#[test]
fn detection_batches_hold_every_example_once_in_a_seeded_order() {
    let r = record();
    let cfg = ClassifierConfig {
        n_examples_shown: 4,
        ..ClassifierConfig::default()
    };
    let batches = detection_batches(&r, &cfg).unwrap();
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    let texts = |b: &[Batch]| {
        b.iter()
            .flat_map(|b| b.items.iter().map(|o| o.text.clone().unwrap()))
            .collect::<Vec<_>>()
    };
    let mut shown = texts(&batches);
    let mut want: Vec<String> = r
        .test
        .iter()
        .chain(&r.non_activating)
        .map(Example::text)
        .collect();
    assert_eq!(
        shown,
        texts(&detection_batches(&r, &cfg).unwrap()),
        "same seed, same order"
    );
    assert_ne!(
        shown,
        texts(
            &detection_batches(
                &r,
                &ClassifierConfig {
                    seed: 1,
                    ..cfg.clone()
                }
            )
            .unwrap()
        )
    );
    shown.sort();
    want.sort();
    assert_eq!(shown, want);
    let n_activating = batches
        .iter()
        .flat_map(|b| &b.items)
        .filter(|o| o.activating)
        .count();
    assert_eq!(n_activating, 6);
    // No highlights in detection.
    assert!(batches.iter().flat_map(|b| &b.items).all(|o| !o
        .text
        .as_ref()
        .unwrap()
        .contains("<<")));
    let mut empty = r.clone();
    empty.test.clear();
    assert!(matches!(
        detection_batches(&empty, &cfg),
        Err(Error::NotEnoughExamples { .. })
    ));
    assert!(matches!(
        detection_batches(
            &r,
            &ClassifierConfig {
                n_examples_shown: 0,
                ..cfg
            }
        ),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn fuzzing_highlights_as_many_wrong_tokens_as_right_ones() {
    let r = record();
    // Nonzero activations per test example: a 2, b 2, c 1, d 3, e 1, f 1 → ceil(10/6) = 2
    // wrong tokens per non-activating example (delphi's count). Correct highlights: a: t1 t2
    // (2), b: t3 (1; 0.5 ≤ 0.3·5 is not above), c: 1, d: 3, e: 1, f: 1 → ceil(9/6) = 2 as well.
    let items: Vec<ExampleOutcome> = fuzz_batches(&r, &FuzzConfig::default())
        .unwrap()
        .into_iter()
        .flat_map(|b| b.items)
        .collect();
    assert_eq!(items.len(), 10);
    for o in &items {
        let text = o.text.as_deref().unwrap();
        if o.activating {
            let want = r
                .test
                .iter()
                .find(|e| e.str_tokens == o.str_tokens)
                .unwrap();
            assert_eq!(text, autointerp_explain::highlight(want, 0.3));
        } else {
            assert_eq!(highlighted_tokens(text), 2, "{text}");
        }
    }

    let active = FuzzConfig {
        mode: FuzzMode::Active,
        wrong_count: WrongCount::MatchHighlighted,
        ..FuzzConfig::default()
    };
    let items: Vec<ExampleOutcome> = fuzz_batches(&r, &active)
        .unwrap()
        .into_iter()
        .flat_map(|b| b.items)
        .collect();
    assert_eq!(items.len(), 12, "each test example twice");
    for o in items.iter().filter(|o| !o.activating) {
        let src = r
            .test
            .iter()
            .find(|e| e.str_tokens == o.str_tokens)
            .unwrap();
        let right = autointerp_explain::above_threshold(src, 0.3);
        let text = o.text.as_deref().unwrap();
        assert_eq!(
            highlighted_tokens(text),
            right.iter().filter(|b| **b).count(),
            "{text}"
        );
        // None of the wrongly highlighted tokens is a right one.
        for (seg, on) in split_highlighted(text) {
            if on {
                for (i, tok) in src.str_tokens.iter().enumerate() {
                    if seg.contains(tok.as_str()) {
                        assert!(!right[i], "{text}");
                    }
                }
            }
        }
        assert_eq!(o.quantile, src.quantile);
    }
    let again: Vec<ExampleOutcome> = fuzz_batches(&r, &active)
        .unwrap()
        .into_iter()
        .flat_map(|b| b.items)
        .collect();
    assert_eq!(items, again, "seeded");
}

#[test]
fn fuzzing_counts_wrong_tokens_as_delphi_does_by_default() {
    // Weak activations: 5 nonzero tokens per test example, 1 above the threshold (0.3 × 5).
    let mut r = record();
    r.test = (0..4)
        .map(|i| {
            example(
                &[0.2, 5.0, 0.1, 0.0, 0.3, 0.0, 0.2, 0.0],
                Some(1 + i / 2),
                &format!("w{i}_"),
            )
        })
        .collect();
    r.non_activating = (0..3)
        .map(|i| example(&[0.0; 8], None, &format!("n{i}_")))
        .collect();
    let wrong_counts = |cfg: FuzzConfig| -> Vec<usize> {
        fuzz_batches(&r, &cfg)
            .unwrap()
            .into_iter()
            .flat_map(|b| b.items)
            .filter(|o| !o.activating)
            .map(|o| highlighted_tokens(o.text.as_deref().unwrap()))
            .collect()
    };
    let cfg = |mode, wrong_count| FuzzConfig {
        mode,
        wrong_count,
        ..FuzzConfig::default()
    };
    assert_eq!(FuzzConfig::default().wrong_count, WrongCount::MeanNonzero);
    // delphi: ceil(mean nonzero activations per test example) = 5, in both modes (in `active`
    // among each example's 7 tokens not above the threshold).
    assert_eq!(
        wrong_counts(cfg(FuzzMode::Default, WrongCount::MeanNonzero)),
        vec![5; 3]
    );
    assert_eq!(
        wrong_counts(cfg(FuzzMode::Active, WrongCount::MeanNonzero)),
        vec![5; 4]
    );
    // As many as the correct excerpts show: 1.
    assert_eq!(
        wrong_counts(cfg(FuzzMode::Default, WrongCount::MatchHighlighted)),
        vec![1; 3]
    );
    assert_eq!(
        wrong_counts(cfg(FuzzMode::Active, WrongCount::MatchHighlighted)),
        vec![1; 4]
    );
    let parsed: FuzzConfig =
        serde_json::from_str(r#"{"mode": "active", "wrong_count": "match_highlighted"}"#).unwrap();
    assert_eq!(parsed, cfg(FuzzMode::Active, WrongCount::MatchHighlighted));
    assert!(serde_json::from_str::<FuzzConfig>(r#"{"wrong_count": "ceil"}"#).is_err());
}

/// #13: non-activating examples from a neighbouring latent keep its activations. Detection
/// still answers 0 for them; fuzzing and intruder highlight where the neighbour fires.
#[test]
fn neighbour_examples_are_silent_but_highlighted_where_the_neighbour_fires() {
    let mut r = record();
    for (i, e) in r.non_activating.iter_mut().enumerate() {
        e.activations = vec![0.0; 6];
        e.activations[i] = 2.0;
        e.activations[5] = 0.1;
    }
    let detection: Vec<ExampleOutcome> = detection_batches(&r, &ClassifierConfig::default())
        .unwrap()
        .into_iter()
        .flat_map(|b| b.items)
        .collect();
    let from_neighbours: Vec<&ExampleOutcome> = detection
        .iter()
        .filter(|o| o.activations.iter().any(|a| *a > 0.0))
        .filter(|o| {
            r.non_activating
                .iter()
                .any(|e| e.str_tokens == o.str_tokens)
        })
        .collect();
    assert_eq!(from_neighbours.len(), 4);
    assert!(from_neighbours.iter().all(|o| !o.activating));

    let own = |tokens: &[String]| {
        let e = r
            .non_activating
            .iter()
            .find(|e| e.str_tokens == tokens)
            .unwrap();
        autointerp_explain::highlight(e, 0.3)
    };
    for wrong_count in [WrongCount::MeanNonzero, WrongCount::MatchHighlighted] {
        let cfg = FuzzConfig {
            wrong_count,
            ..FuzzConfig::default()
        };
        let wrong: Vec<ExampleOutcome> = fuzz_batches(&r, &cfg)
            .unwrap()
            .into_iter()
            .flat_map(|b| b.items)
            .filter(|o| !o.activating)
            .collect();
        assert_eq!(wrong.len(), 4);
        for o in &wrong {
            let text = o.text.as_deref().unwrap();
            assert_eq!(text, own(&o.str_tokens));
            assert_eq!(highlighted_tokens(text), 1, "{text}");
        }
    }
    for t in intruder_trials(&r, &three_per_trial()).unwrap() {
        let i = t.intruder_index;
        assert_eq!(t.examples[i], own(&t.tokens[i]));
    }
}

#[test]
fn intruder_trials_mix_one_quantile_with_one_intruder() {
    let r = record();
    let trials = intruder_trials(&r, &three_per_trial()).unwrap();
    assert_eq!(trials.len(), 4, "one per non-activating example");
    assert_eq!(
        trials.iter().map(|t| t.chosen_quantile).collect::<Vec<_>>(),
        vec![1, 2, 3, 1]
    );
    for t in &trials {
        assert_eq!(
            t.examples.len(),
            3,
            "both examples of the quantile plus the intruder"
        );
        let intruder_tokens = &t.tokens[t.intruder_index];
        assert!(intruder_tokens[0].contains('n'), "{intruder_tokens:?}");
        assert!(highlighted_tokens(&t.examples[t.intruder_index]) >= 1);
        for (i, toks) in t.tokens.iter().enumerate() {
            if i != t.intruder_index {
                let e = r.test.iter().find(|e| &e.str_tokens == toks).unwrap();
                assert_eq!(e.quantile, Some(t.chosen_quantile));
            }
        }
    }
    assert_eq!(trials[1].intruder_distance, 0.25);
    assert_eq!(trials[0].intruder_distance, -1.0);
    // Written as delphi numbers quantiles, from 0 (#13), and read back as ours.
    let json = serde_json::to_value(&trials).unwrap();
    let written: Vec<i64> = (0..4)
        .map(|i| json[i]["chosen_quantile"].as_i64().unwrap())
        .collect();
    assert_eq!(written, vec![0, 1, 2, 0]);
    assert_eq!(
        serde_json::from_value::<Vec<IntruderTrial>>(json).unwrap(),
        trials
    );
    let mut none = trials[0].clone();
    none.chosen_quantile = 0;
    let json = serde_json::to_value(&none).unwrap();
    assert_eq!(json["chosen_quantile"], -1);
    assert_eq!(serde_json::from_value::<IntruderTrial>(json).unwrap(), none);

    let t = trials[0].clone();
    let answer = format!(
        "Most excerpts share t1.\n[INTRUDER]: {}",
        t.intruder_index + 1
    );
    let (outcome, err) = t.clone().resolve(&answer);
    assert!(err.is_none());
    assert_eq!(
        (outcome.prediction, outcome.correct),
        (Some(t.intruder_index), Some(true))
    );
    assert_eq!(outcome.interpretation, "Most excerpts share t1.");
    let (failed, err) = t.resolve("no idea");
    assert!(err.is_some() && failed.prediction.is_none() && failed.correct.is_none());
    let json = serde_json::to_value(&failed).unwrap();
    for key in [
        "interpretation",
        "sample",
        "prediction",
        "correct_index",
        "correct",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    for key in [
        "examples",
        "intruder_index",
        "chosen_quantile",
        "activations",
        "tokens",
        "intruder_distance",
    ] {
        assert!(json["sample"].get(key).is_some(), "{key}");
    }
}

#[test]
fn simulation_end_to_end_with_prompt_logprobs() {
    let r = record();
    let tokens = &r.test[0].str_tokens;
    let messages = simulation_prompt("t1", tokens);
    // A character-level "tokenizer" over the whole prompt, and logprobs that put all mass on
    // "7" wherever a tab was just written.
    let text: String = messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let top: Vec<Vec<(String, f32)>> = (0..chars.len())
        .map(|i| {
            if i > 0 && chars[i - 1] == "\t" {
                vec![("7".to_string(), 0.0)]
            } else {
                vec![]
            }
        })
        .collect();
    let predicted = simulate_from_prompt_logprobs(&chars, &top, tokens.len()).unwrap();
    assert_eq!(predicted, vec![7.0; tokens.len()]);

    let mut seqs = simulation_targets(&r);
    assert_eq!(seqs.len(), 10);
    assert_eq!(
        seqs[0].true_activations,
        vec![0.0, 10.0, 7.0, 0.0, 0.0, 0.0]
    );
    for s in &mut seqs {
        s.predicted = Some(s.true_activations.iter().map(|t| t * 0.5 + 1.0).collect());
    }
    seqs[9].predicted = None;
    let scored = score_simulation(&seqs);
    assert_eq!(scored[0].n_failed, 1);
    assert!((scored[0].ev_correlation_score.0.unwrap() - 1.0).abs() < 1e-9);
}

#[test]
fn score_file_layout_snapshot() {
    let r = record();
    let cfg = ClassifierConfig {
        n_examples_shown: 3,
        ..ClassifierConfig::default()
    };
    let batch = detection_batches(&r, &cfg).unwrap().remove(0);
    let logprobs: Vec<TokenLogprobs> = ["[", "1", ",", "0", ",", "1", "]"]
        .iter()
        .map(|t| TokenLogprobs {
            token: t.to_string(),
            logprob: 0.0,
            top: match *t {
                "1" => vec![("1".into(), 0.8f32.ln()), ("0".into(), 0.2f32.ln())],
                "0" => vec![("0".into(), 0.5f32.ln()), ("1".into(), 0.5f32.ln())],
                _ => vec![],
            },
        })
        .collect();
    let result = batch.resolve("[1,0,1]", Some(&logprobs));
    assert!(result.failure.is_none());
    insta::assert_json_snapshot!(result.outcomes);

    let dir = tempfile::tempdir().unwrap();
    let path = write_score_file(dir.path(), DETECTION, &r.id, &result.outcomes).unwrap();
    assert!(path.ends_with("detection/layers.6_latent42.txt"));
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(
        raw.starts_with(r#"[{"str_tokens":"#),
        "compact JSON like orjson: {raw}"
    );
    assert_eq!(read_classifier_file(&path).unwrap(), result.outcomes);
}

#[test]
fn surprisal_prefix_snapshot() {
    insta::assert_snapshot!("surprisal_prefix", surprisal_prefix(EXPLANATION));
}
