//! Run with: cargo run --release -p autointerp-score --example explain_score [-- <base_url> <model>]
//!
//! Explains two hand-built latents and scores the explanations with detection, fuzzing, intruder
//! and simulation (JSON mode), printing scores, failures and token usage.
//!
//! Without arguments the LLM is a scripted stand-in that knows river names and nothing else, so
//! the example runs offline: the river latent gets a good explanation and high scores, the
//! weekday latent's explanation fails to parse and is recorded as a failure. With arguments it
//! asks that OpenAI-compatible server instead, e.g.
//! `-- http://localhost:8000/v1 Qwen/Qwen2.5-7B-Instruct` (the key is read from `OPENAI_API_KEY`
//! when it is set).

use autointerp_client::{ChatRequest, ChatResponse, Client, OpenAiClient, Usage};
use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats};
use autointerp_explain::{split_highlighted, DefaultExplainer, ExplainOutcome, ExplainerConfig};
use autointerp_score::{
    ClassifierConfig, DetectionScorer, FuzzConfig, FuzzingScorer, IntruderConfig, IntruderScorer,
    Scorer, SimulationConfig, SimulationMode, SimulationScorer,
};

const RIVERS: [&str; 8] = [
    "Thames", "Rhine", "Nile", "Danube", "Seine", "Volga", "Amazon", "Ganges",
];

fn is_river(text: &str) -> bool {
    RIVERS.contains(&text.trim())
}

/// Space-led word tokens; the word at `active` fires.
fn example(text: &str, active: Option<usize>, quantile: Option<u8>) -> Example {
    let str_tokens: Vec<String> = text
        .split(' ')
        .enumerate()
        .map(|(i, w)| if i == 0 { w.into() } else { format!(" {w}") })
        .collect();
    let activations: Vec<f32> = (0..str_tokens.len())
        .map(|i| if Some(i) == active { 3.0 } else { 0.0 })
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

fn record(index: u32, words: &[&str], template: &str, at: usize) -> LatentRecord {
    let fill = |i: usize, w: &str| {
        example(
            &template.replace("{}", w),
            Some(at),
            Some(1 + (i % 2) as u8),
        )
    };
    let silent = [
        "The bank raised its rates again",
        "She bought three apples and pears",
        "Our team meets at noon today",
        "A loan was approved this morning",
    ];
    LatentRecord {
        id: LatentId::new(HookPoint::Residual(6), index),
        train: words[..4]
            .iter()
            .enumerate()
            .map(|(i, w)| fill(i, w))
            .collect(),
        test: words[4..]
            .iter()
            .enumerate()
            .map(|(i, w)| fill(i, w))
            .collect(),
        non_activating: silent.iter().map(|t| example(t, None, None)).collect(),
        stats: LatentStats::default(),
        logits: None,
    }
}

/// An offline stand-in for an LLM that recognises river names and nothing else.
struct RiverExpert;

impl Client for RiverExpert {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        let last = req
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let excerpts: Vec<&str> = last
            .lines()
            .filter_map(|l| {
                l.split_once(": ")
                    .filter(|(k, _)| k.starts_with("Excerpt "))
            })
            .map(|(_, t)| t)
            .collect();
        let marked_rivers = |e: &str| {
            let marked: Vec<String> = split_highlighted(e)
                .into_iter()
                .filter_map(|(t, on)| on.then_some(t))
                .collect();
            !marked.is_empty() && marked.iter().all(|t| is_river(t))
        };
        let text = if last.starts_with('{') {
            // JSON simulation.
            let doc: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            let acts: Vec<serde_json::Value> = doc["activations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let river = e["token"].as_str().is_some_and(is_river);
                    serde_json::json!({"token": e["token"], "activation": if river { 10 } else { 0 }})
                })
                .collect();
            serde_json::json!({"activations": acts}).to_string()
        } else if last.starts_with("Feature description:") {
            // Detection or fuzzing.
            let fuzzing = last.contains("<<");
            let labels: Vec<&str> = excerpts
                .iter()
                .map(|e| {
                    let yes = if fuzzing {
                        marked_rivers(e)
                    } else {
                        e.split(' ').any(is_river)
                    };
                    if yes {
                        "1"
                    } else {
                        "0"
                    }
                })
                .collect();
            format!("[{}]", labels.join(","))
        } else if req.messages[0].content.contains("[INTRUDER]") {
            match excerpts.iter().position(|e| !marked_rivers(e)) {
                Some(k) => format!("[INTRUDER]: {}", k + 1),
                None => "No idea.".into(),
            }
        } else if excerpts.iter().any(|e| e.contains("<< Thames>>")) {
            "Step 1: the marked words are rivers.\n[EXPLANATION]: Names of rivers.".into()
        } else {
            "I cannot tell what these have in common:".into()
        };
        // Roughly four characters a token.
        let prompt_chars: usize = req.messages.iter().map(|m| m.content.len()).sum();
        let usage = Usage {
            prompt_tokens: prompt_chars as u64 / 4,
            completion_tokens: text.len() as u64 / 4,
            cost: None,
        };
        Ok(ChatResponse {
            text,
            usage,
            ..ChatResponse::default()
        })
    }
}

async fn run<C: Client + Clone>(client: C, simulation: SimulationMode) -> anyhow::Result<()> {
    let records = [
        record(1, &RIVERS, "We sailed down the {} today", 4),
        record(
            2,
            &["Monday", "Tuesday", "Friday", "Sunday", "Monday", "Friday"],
            "See you next {} at ten",
            3,
        ),
    ];
    let explainer = DefaultExplainer::new(client.clone(), ExplainerConfig::default());
    let detection = DetectionScorer::new(client.clone(), ClassifierConfig::default());
    let fuzzing = FuzzingScorer::new(client.clone(), FuzzConfig::default());
    let intruder = IntruderScorer::new(client.clone(), IntruderConfig::default());
    let simulation = SimulationScorer::new(
        client,
        SimulationConfig {
            mode: simulation,
            ..SimulationConfig::default()
        },
    );
    for record in &records {
        let explanation = match explainer.explain(record).await? {
            ExplainOutcome::Explained {
                explanation, usage, ..
            } => {
                println!(
                    "{}: {:?} ({} tokens)",
                    record.id,
                    explanation.text,
                    usage.prompt_tokens + usage.completion_tokens
                );
                explanation
            }
            ExplainOutcome::Failed { reason, answer, .. } => {
                println!(
                    "{}: no explanation ({reason}); the answer was {answer:?}",
                    record.id
                );
                continue;
            }
        };
        let results = futures::try_join!(
            detection.score(record, &explanation),
            fuzzing.score(record, &explanation),
            Scorer::score(&intruder, record, &explanation),
            simulation.score(record, &explanation),
        )?;
        for r in [results.0, results.1, results.2, results.3] {
            println!(
                "  {:<10} {:.3}  failed {:>2}  tokens {}",
                r.score.scorer,
                r.score.value,
                r.n_failed(),
                r.usage.prompt_tokens + r.usage.completion_tokens
            );
            for why in r.failures.iter().take(2) {
                println!("    failure: {why}");
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => run(std::sync::Arc::new(RiverExpert), SimulationMode::Json).await,
        [base_url, model] => {
            let mut client = OpenAiClient::new(base_url, model)?;
            if std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.is_empty()) {
                client = client.with_api_key_env("OPENAI_API_KEY")?;
            }
            run(client, SimulationMode::Json).await
        }
        _ => anyhow::bail!("usage: explain_score [<base_url> <model>]"),
    }
}
