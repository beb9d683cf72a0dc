//! The explainers end to end against a scripted client: good answers become explanations, garbage
//! becomes recorded failures with the raw answer, failed requests are errors.

use std::sync::Mutex;

use autointerp_client::{ChatRequest, ChatResponse, Client, Usage};
use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats, Role};
use autointerp_explain::{
    ContrastiveConfig, ContrastiveExplainer, DefaultExplainer, Error, ExplainOutcome, Explainer,
    ExplainerConfig, GenerationConfig,
};
use futures::executor::block_on;

type Script = dyn Fn(&ChatRequest) -> autointerp_client::Result<ChatResponse> + Send + Sync;

/// A client that answers from a closure and keeps every request it was sent.
struct Scripted {
    answer: Box<Script>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(
        answer: impl Fn(&ChatRequest) -> autointerp_client::Result<ChatResponse> + Send + Sync + 'static,
    ) -> Self {
        Self {
            answer: Box::new(answer),
            requests: Mutex::new(Vec::new()),
        }
    }
}

impl Client for Scripted {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        let answer = (self.answer)(&req);
        self.requests.lock().unwrap().push(req);
        answer
    }
}

fn response(text: &str) -> ChatResponse {
    ChatResponse {
        text: text.to_string(),
        usage: Usage {
            prompt_tokens: 100,
            completion_tokens: 10,
            cost: Some(0.5),
        },
        finish_reason: Some("stop".into()),
        ..ChatResponse::default()
    }
}

fn example(words: &[&str], active: usize, quantile: Option<u8>) -> Example {
    let activations: Vec<f32> = (0..words.len())
        .map(|i| {
            if i == active && quantile.is_some() {
                3.0
            } else {
                0.0
            }
        })
        .collect();
    Example {
        tokens: (0..words.len() as u32).collect(),
        str_tokens: words.iter().map(|w| w.to_string()).collect(),
        normalized: activations
            .iter()
            .map(|&a| if a > 0.0 { 10 } else { 0 })
            .collect(),
        activations,
        quantile,
        distance: None,
    }
}

/// Latent 1 fires on river names; latent 2 on weekdays.
fn records() -> [LatentRecord; 2] {
    let silent = vec![example(&["The", " bank", " raised", " rates"], 0, None)];
    let rivers = LatentRecord {
        id: LatentId::new(HookPoint::Residual(3), 1),
        train: vec![
            example(&["We", " sailed", " the", " Thames"], 3, Some(1)),
            example(&["The", " Rhine", " is", " long"], 1, Some(2)),
        ],
        test: vec![],
        non_activating: silent.clone(),
        stats: LatentStats::default(),
        logits: None,
    };
    let weekdays = LatentRecord {
        id: LatentId::new(HookPoint::Residual(3), 2),
        train: vec![example(&["See", " you", " on", " Monday"], 3, Some(1))],
        test: vec![],
        non_activating: silent,
        stats: LatentStats::default(),
        logits: None,
    };
    [rivers, weekdays]
}

/// Answers well when the prompt's last message shows a river, with garbage otherwise.
fn river_expert(req: &ChatRequest) -> autointerp_client::Result<ChatResponse> {
    let last = &req.messages.last().unwrap().content;
    Ok(if last.contains("<< Thames>>") {
        response("Step 1: rivers.\n[EXPLANATION]: Names of rivers.")
    } else {
        response("```\n```")
    })
}

fn check_two_latents(outcomes: &[ExplainOutcome], records: &[LatentRecord; 2]) {
    match &outcomes[0] {
        ExplainOutcome::Explained {
            explanation,
            answer,
            usage,
        } => {
            assert_eq!(explanation.latent, records[0].id);
            assert_eq!(explanation.text, "Names of rivers.");
            assert!(answer.starts_with("Step 1"));
            assert_eq!(usage.prompt_tokens, 100);
        }
        other => panic!("expected an explanation, got {other:?}"),
    }
    match &outcomes[1] {
        ExplainOutcome::Failed {
            latent,
            reason,
            answer,
            usage,
        } => {
            assert_eq!(*latent, records[1].id);
            assert_eq!(answer, "```\n```");
            assert!(!reason.is_empty());
            assert_eq!(usage.cost, Some(0.5));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(outcomes[1].explanation().is_none() && outcomes[1].is_failed());
    assert_eq!(outcomes[1].latent(), records[1].id);
}

#[test]
fn default_explainer_end_to_end() {
    let records = records();
    let client = Scripted::new(river_expert);
    let explainer = DefaultExplainer::new(&client, ExplainerConfig::default()).with_generation(
        GenerationConfig::default()
            .with_max_tokens(300)
            .with_seed(7),
    );
    let outcomes: Vec<ExplainOutcome> = records
        .iter()
        .map(|r| block_on(explainer.explain(r)).unwrap())
        .collect();
    check_two_latents(&outcomes, &records);

    let requests = client.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].max_tokens, Some(300));
    assert_eq!(
        (requests[0].temperature, requests[0].seed),
        (Some(0.0), Some(7))
    );
    assert_eq!(requests[0].messages[0].role, Role::System);
    // The default prompt shows train examples only, never the silent ones.
    assert!(!requests[0]
        .messages
        .last()
        .unwrap()
        .content
        .contains("bank"));
}

#[test]
fn contrastive_explainer_end_to_end() {
    let records = records();
    let client = Scripted::new(river_expert);
    let explainer = ContrastiveExplainer::new(&client, ContrastiveConfig::default());
    // Through the trait, as a pipeline would.
    async fn run(e: &impl Explainer, r: &LatentRecord) -> ExplainOutcome {
        e.explain(r).await.unwrap()
    }
    assert_eq!(explainer.name(), "contrastive");
    let outcomes: Vec<ExplainOutcome> = records
        .iter()
        .map(|r| block_on(run(&explainer, r)))
        .collect();
    check_two_latents(&outcomes, &records);
    let requests = client.requests.lock().unwrap();
    let last = &requests[0].messages.last().unwrap().content;
    assert!(last.contains("Silent 1: The bank raised rates"), "{last}");
}

#[test]
fn outcomes_serialise_with_their_status() {
    let records = records();
    let client = Scripted::new(river_expert);
    let explainer = DefaultExplainer::new(client, ExplainerConfig::default());
    for r in &records {
        let outcome = block_on(explainer.explain(r)).unwrap();
        let json = serde_json::to_value(&outcome).unwrap();
        let status = if outcome.is_failed() {
            "failed"
        } else {
            "explained"
        };
        assert_eq!(json["status"], status);
        let back: ExplainOutcome = serde_json::from_value(json).unwrap();
        assert_eq!(back, outcome);
    }
}

#[test]
fn truncated_answers_say_so() {
    let records = records();
    let client = Scripted::new(|_| {
        Ok(ChatResponse {
            text: "Step 1. The marked tokens are:".into(),
            finish_reason: Some("length".into()),
            ..ChatResponse::default()
        })
    });
    let outcome =
        block_on(DefaultExplainer::new(client, ExplainerConfig::default()).explain(&records[0]))
            .unwrap();
    match outcome {
        ExplainOutcome::Failed { reason, .. } => assert!(reason.contains("max_tokens"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn failed_requests_and_empty_records_are_errors() {
    let records = records();
    let client = Scripted::new(|_| {
        Err(autointerp_client::Error::Http {
            status: 400,
            body: "context too long".into(),
        })
    });
    let explainer = DefaultExplainer::new(&client, ExplainerConfig::default());
    let err = block_on(explainer.explain(&records[0])).unwrap_err();
    assert!(matches!(err, Error::Client(_)), "{err}");
    assert!(err.to_string().contains("context too long"));

    let mut empty = records[0].clone();
    empty.train.clear();
    let err = block_on(explainer.explain(&empty)).unwrap_err();
    assert!(matches!(err, Error::NoTrainExamples { .. }), "{err}");
    assert_eq!(
        client.requests.lock().unwrap().len(),
        1,
        "no request for an empty record"
    );
    let contrastive = ContrastiveExplainer::new(&client, ContrastiveConfig::default());
    assert!(matches!(
        block_on(contrastive.explain(&empty)),
        Err(Error::NoTrainExamples { .. })
    ));
}

#[test]
fn prefill_starts_the_answer_with_the_marker() {
    // The model only completes the line after the marker, as a backend honouring
    // `continue_final_message` returns it.
    let client = Scripted::new(|req| {
        let last = req.messages.last().unwrap();
        assert_eq!(last.role, Role::Assistant);
        assert_eq!(last.content, autointerp_explain::EXPLANATION_MARKER);
        Ok(response(" Names of rivers."))
    });
    let records = records();
    let default = DefaultExplainer::new(&client, ExplainerConfig::default()).with_prefill(true);
    let outcome = block_on(default.explain(&records[0])).unwrap();
    assert_eq!(outcome.explanation().unwrap().text, "Names of rivers.");
    let contrastive =
        ContrastiveExplainer::new(&client, ContrastiveConfig::default()).with_prefill(true);
    let outcome = block_on(contrastive.explain(&records[1])).unwrap();
    assert_eq!(outcome.explanation().unwrap().text, "Names of rivers.");
    for req in client.requests.lock().unwrap().iter() {
        assert_eq!(req.extra["continue_final_message"], true);
        assert_eq!(req.extra["add_generation_prompt"], false);
        assert_eq!(req.stop, vec!["\n".to_string()]);
    }

    // Without it, the prompt ends with the user's turn and nothing is added.
    let plain = Scripted::new(|req| {
        assert_eq!(req.messages.last().unwrap().role, Role::User);
        assert!(req.extra.is_empty() && req.stop.is_empty());
        Ok(response("[EXPLANATION]: Names of rivers."))
    });
    let outcome =
        block_on(DefaultExplainer::new(&plain, ExplainerConfig::default()).explain(&records[0]))
            .unwrap();
    assert_eq!(outcome.explanation().unwrap().text, "Names of rivers.");
}
