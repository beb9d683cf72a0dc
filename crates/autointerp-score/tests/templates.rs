//! The scorers' prompt templates as files: written out and read back they give the same
//! prompts; a folder with another structure (0-based numbering, other highlight markers, other
//! answer and document markers) changes the prompts, and perfect answers in that structure are
//! read right; and a simulated document may hold the document markers themselves.

use std::path::Path;
use std::sync::Arc;

use autointerp_client::{ChatRequest, ChatResponse, Client, TokenLogprobs};
use autointerp_core::{Example, Explanation, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_explain::prompts::{PromptKind, PromptSet};
use autointerp_explain::{split_highlighted_with, Markers};
use autointerp_score::*;
use futures::executor::block_on;

const RIVERS: [&str; 6] = ["Thames", "Rhine", "Nile", "Danube", "Seine", "Volga"];

fn is_river(text: &str) -> bool {
    RIVERS.contains(&text.trim())
}

/// Space-led words; `active` (if any) is the one token that fires.
fn example(words: &[&str], active: Option<usize>, quantile: Option<u8>) -> Example {
    let str_tokens: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                (*w).to_string()
            } else {
                format!(" {w}")
            }
        })
        .collect();
    let activations: Vec<f32> = (0..str_tokens.len())
        .map(|i| if Some(i) == active { 4.0 } else { 0.0 })
        .collect();
    Example {
        tokens: (0..str_tokens.len() as u32).collect(),
        normalized: activations
            .iter()
            .map(|&a| if a > 0.0 { 10 } else { 0 })
            .collect(),
        str_tokens,
        activations,
        quantile,
        distance: None,
    }
}

/// A latent that fires on river names: six test examples in three quantiles, six silent ones.
fn rivers() -> LatentRecord {
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(4), 1),
        train: vec![],
        test: RIVERS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                example(
                    &["We", "sailed", "down", "the", r, "today"],
                    Some(4),
                    Some(1 + (i / 2) as u8),
                )
            })
            .collect(),
        non_activating: [
            "The bank raised its rates again",
            "She bought three apples and pears",
            "Our team meets at noon today",
            "The parser was written last week",
            "He read the letter twice slowly",
            "A loan was approved this morning",
        ]
        .iter()
        .map(|t| example(&t.split(' ').collect::<Vec<_>>(), None, None))
        .collect(),
        stats: LatentStats::default(),
        logits: None,
    }
}

fn explanation(record: &LatentRecord) -> Explanation {
    Explanation {
        latent: record.id,
        text: "Names of rivers.".into(),
    }
}

#[test]
fn written_out_and_read_back_the_templates_give_identical_prompts() {
    let dir = tempfile::tempdir().unwrap();
    PromptSet::write_defaults(dir.path()).unwrap();
    let p = PromptSet::from_dir(dir.path()).unwrap();
    let r = rivers();
    let e = "Names of rivers [EXPLANATION]: <<x>>";
    let cfg = ClassifierConfig::default();
    for batch in detection_batches(&r, &cfg).unwrap() {
        assert_eq!(
            detection_prompt_with(&p, e, &batch).unwrap(),
            detection_prompt(e, &batch)
        );
        let one = batch.items[0].text.as_deref().unwrap();
        assert_eq!(
            detection_prompt_one_with(&p, e, one).unwrap(),
            detection_prompt_one(e, one)
        );
    }
    for mode in [FuzzMode::Default, FuzzMode::Active] {
        let cfg = FuzzConfig {
            mode,
            ..FuzzConfig::default()
        };
        for batch in fuzz_batches(&r, &cfg).unwrap() {
            assert_eq!(
                fuzz_prompt_with(&p, e, &batch).unwrap(),
                fuzz_prompt(e, &batch)
            );
            let one = batch.items[0].text.as_deref().unwrap();
            assert_eq!(
                fuzz_prompt_one_with(&p, e, one).unwrap(),
                fuzz_prompt_one(e, one)
            );
        }
    }
    for trial in intruder_trials(&r, &IntruderConfig::default()).unwrap() {
        for cot in [false, true] {
            assert_eq!(
                intruder_prompt_with(&p, &trial, cot).unwrap(),
                intruder_prompt(&trial, cot)
            );
        }
    }
    for ex in r.test.iter().chain(&r.non_activating) {
        let tokens = &ex.str_tokens;
        assert_eq!(
            simulation_prompt_with(&p, e, tokens).unwrap(),
            simulation_prompt(e, tokens)
        );
        assert_eq!(
            json_simulation_prompt_with(&p, e, tokens).unwrap(),
            json_simulation_prompt(e, tokens)
        );
    }
    assert_eq!(surprisal_prefix_with(&p, e).unwrap(), surprisal_prefix(e));
}

// ---------------------------------------------------------------------------------------------
// A folder with another structure

/// The built-in folder with 0-based numbering, `[[`/`]]` highlights, `Example k:` excerpt
/// labels, a `[RESPONSE]:` intruder marker and `BEGIN DOCUMENT`/`END DOCUMENT` lines.
fn other_structure(dir: &Path) -> Arc<PromptSet> {
    PromptSet::write_defaults(dir).unwrap();
    let edit = |kind: PromptKind, edits: &[(&str, &str)]| {
        let path = dir.join(kind.file_name());
        let mut source = std::fs::read_to_string(&path).unwrap();
        for (from, to) in edits {
            assert!(
                source.contains(from),
                "{from:?} not in {}",
                kind.file_name()
            );
            source = source.replace(from, to);
        }
        std::fs::write(&path, source).unwrap();
    };
    let zero = (
        "{% set numbering_base = 1 %}",
        "{% set numbering_base = 0 %}",
    );
    let label = ("Excerpt {{", "Example {{");
    // Markers in the worked examples as well as in the settings.
    let (open, close) = (("<<", "[["), (">>", "]]"));
    edit(PromptKind::Detection, &[zero, label]);
    edit(PromptKind::Fuzzing, &[zero, label, open, close]);
    edit(
        PromptKind::Intruder,
        &[
            zero,
            label,
            open,
            close,
            ("[INTRUDER]:", "[RESPONSE]:"),
            ("{{ answer_marker }} 3", "{{ answer_marker }} 2"),
            ("{{ answer_marker }} 1", "{{ answer_marker }} 0"),
        ],
    );
    edit(
        PromptKind::Simulation,
        &[
            ("\"<start>\"", "\"BEGIN DOCUMENT\""),
            ("\"<end>\"", "\"END DOCUMENT\""),
        ],
    );
    Arc::new(PromptSet::from_dir(dir).unwrap())
}

/// A client answering from a function of the prompt.
struct Scripted(fn(&ChatRequest) -> ChatResponse);

impl Client for Scripted {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        Ok((self.0)(&req))
    }
}

fn text(answer: String) -> ChatResponse {
    ChatResponse {
        text: answer,
        ..ChatResponse::default()
    }
}

/// The `Example k: text` lines of the last message.
fn excerpts(req: &ChatRequest) -> Vec<(usize, String)> {
    let last = &req.messages.last().unwrap().content;
    last.lines()
        .filter_map(|l| {
            let (k, text) = l.strip_prefix("Example ")?.split_once(": ")?;
            Some((k.parse().ok()?, text.to_string()))
        })
        .collect()
}

/// The highlighted runs of an excerpt shown with `[[`/`]]`.
fn marked(excerpt: &str) -> Vec<String> {
    split_highlighted_with(excerpt, &Markers::new("[[", "]]"))
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(t, _)| t)
        .collect()
}

/// Detection: 1 for each excerpt naming a river, answered line by line with the prompt's
/// numbers.
fn detector(req: &ChatRequest) -> ChatResponse {
    let lines: Vec<String> = excerpts(req)
        .iter()
        .map(|(k, t)| format!("Example {k}: {}", u8::from(t.split(' ').any(is_river))))
        .collect();
    assert!(lines[0].starts_with("Example 0: "), "{lines:?}");
    text(lines.join("\n"))
}

/// Detection of the built-in prompt (`Excerpt k:` lines from 1), answered as if numbered from 0.
fn renumbered_from_zero(req: &ChatRequest) -> ChatResponse {
    let last = &req.messages.last().unwrap().content;
    let lines: Vec<String> = last
        .lines()
        .filter_map(|l| {
            let (k, t) = l.strip_prefix("Excerpt ")?.split_once(": ")?;
            let k: usize = k.parse().ok()?;
            Some(format!(
                "Excerpt {}: {}",
                k - 1,
                u8::from(t.split(' ').any(is_river))
            ))
        })
        .collect();
    text(lines.join("\n"))
}

/// Fuzzing: 1 for each excerpt whose marked tokens are all rivers.
fn fuzzer(req: &ChatRequest) -> ChatResponse {
    let lines: Vec<String> = excerpts(req)
        .iter()
        .map(|(k, t)| {
            assert!(!t.contains("<<") && !t.contains(">>"), "{t}");
            let m = marked(t);
            let right = !m.is_empty() && m.iter().all(|r| is_river(r));
            format!("Example {k}: {}", u8::from(right))
        })
        .collect();
    text(lines.join("\n"))
}

/// Intruder: the excerpt whose marked tokens are not rivers, by its number as shown.
fn intruder_finder(req: &ChatRequest) -> ChatResponse {
    let system = &req.messages[0].content;
    assert!(system.contains("starts with [RESPONSE]:"), "{system}");
    let shown = excerpts(req);
    let odd = shown
        .iter()
        .find(|(_, t)| !marked(t).iter().all(|r| is_river(r)))
        .map_or(99, |(k, _)| *k);
    text(format!("Most excerpts mark rivers.\n[RESPONSE]: {odd}"))
}

/// Simulation through prompt logprobs over a prompt tokenised one character per token: after
/// each tab, all the mass on 10 for a river's line and on 0 for any other.
fn simulator(req: &ChatRequest) -> ChatResponse {
    let text: String = req
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let chars: Vec<char> = text.chars().collect();
    let mut positions = vec![None];
    for i in 1..chars.len() {
        let top = if chars[i - 1] == '\t' {
            let start = chars[..i - 1]
                .iter()
                .rposition(|&c| c == '\n')
                .map_or(0, |p| p + 1);
            let token: String = chars[start..i - 1].iter().collect();
            let value = if is_river(&token) { "10" } else { "0" };
            vec![(value.to_string(), 0.0)]
        } else {
            vec![]
        };
        positions.push(Some(TokenLogprobs {
            token: chars[i].to_string(),
            logprob: -1.0,
            top,
        }));
    }
    ChatResponse {
        prompt_logprobs: Some(positions),
        ..ChatResponse::default()
    }
}

fn score(
    kind: ScorerKind,
    client: fn(&ChatRequest) -> ChatResponse,
    prompts: &Arc<PromptSet>,
    record: &LatentRecord,
) -> ScorerResult {
    let deps = ScorerDeps {
        chat: Some(Arc::new(Scripted(client))),
        prompts: Some(Arc::clone(prompts)),
        ..ScorerDeps::default()
    };
    let scorer = kind.build(&ScorerOptions::default(), &deps).unwrap();
    block_on(scorer.score_boxed(record, &explanation(record))).unwrap()
}

#[test]
fn another_structure_changes_the_prompts_and_how_answers_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = other_structure(dir.path());
    let r = rivers();
    for (kind, client) in [
        (
            ScorerKind::Detection,
            detector as fn(&ChatRequest) -> ChatResponse,
        ),
        (ScorerKind::Fuzz, fuzzer),
        (ScorerKind::Intruder, intruder_finder),
        (ScorerKind::Simulation, simulator),
    ] {
        let result = score(kind, client, &prompts, &r);
        assert_eq!(result.failures, Vec::<String>::new(), "{kind:?}");
        assert!(
            (result.score.value - 1.0).abs() < 1e-9,
            "{kind:?}: {}",
            result.score.value
        );
    }

    // The same 0-based answers do not fit the built-in prompts, numbered from 1.
    let answer = "Example 0: 1\nExample 1: 0";
    assert!(parse_labels(answer, 2).is_err());
    assert_eq!(parse_labels_with(answer, 2, 0).unwrap(), vec![true, false]);
    // Numbered from 0 anyway, answers to the built-in prompts are all unreadable.
    let result = score(
        ScorerKind::Detection,
        renumbered_from_zero,
        &PromptSet::embedded(),
        &r,
    );
    assert_eq!(result.n_failed(), 12);

    // The prompts themselves changed.
    let batch = &detection_batches(&r, &ClassifierConfig::default()).unwrap()[0];
    let last = detection_prompt_with(&prompts, "x", batch)
        .unwrap()
        .pop()
        .unwrap()
        .content;
    assert!(
        last.contains("\nExample 0: ") && !last.contains("Excerpt 1:"),
        "{last}"
    );
    let trial = &intruder_trials(&r, &IntruderConfig::default()).unwrap()[0];
    let m = intruder_prompt_with(&prompts, trial, false).unwrap();
    assert!(m[0].content.contains("marked between [[ and ]]"));
    assert!(m.last().unwrap().content.contains("[["));
    assert!(!m.iter().any(|m| m.content.contains("<<")));
    let m = simulation_prompt_with(&prompts, "x", &["a"]).unwrap();
    assert_eq!(
        m.last().unwrap().content,
        "Activations:\nBEGIN DOCUMENT\na\tunknown\nEND DOCUMENT\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Document markers inside the document

#[test]
fn a_document_may_hold_the_document_markers() {
    let mut r = rivers();
    // Tokens that spell the markers of the built-in prompt and of the other structure.
    r.test[0] = example(
        &[
            "<start>",
            "<end>",
            "Thames",
            "<start>",
            "BEGIN DOCUMENT",
            "END DOCUMENT",
        ],
        Some(2),
        Some(1),
    );
    r.non_activating[0] = example(&["a", "<start>", "b"], None, None);
    let dir = tempfile::tempdir().unwrap();
    for prompts in [PromptSet::embedded(), other_structure(dir.path())] {
        let result = score(ScorerKind::Simulation, simulator, &prompts, &r);
        assert_eq!(result.failures, Vec::<String>::new());
        assert_eq!(result.n_failed(), 0);
        assert!(
            (result.score.value - 1.0).abs() < 1e-9,
            "{}",
            result.score.value
        );
        let ScoreDetails::Simulation { groups } = &result.details else {
            panic!()
        };
        let first = &groups[0].scored_sequence_simulations[0].simulation;
        assert_eq!(
            first.expected_activations,
            vec![0.0, 0.0, 10.0, 0.0, 0.0, 0.0]
        );
    }
    // The tokens are shown broken, so the prompt has one document start after the examples.
    let m = simulation_prompt("x", &r.test[0].str_tokens);
    let last = &m.last().unwrap().content;
    assert_eq!(last.matches("<start>").count(), 1, "{last}");
    assert!(last.contains("‹start›\tunknown\n ‹end›\tunknown"), "{last}");
}
