//! Run with: cargo run -p autointerp-run --example run_pipeline
//!
//! The run engine as a library: a whole explain-and-score run (with the random-explanation
//! control) in a few lines, against a scripted client instead of a server. The cache is
//! synthetic: latent `i` fires on the word `WORDS[i]`, and the client answers as a perfect LLM
//! would, so real explanations score 1.0 on detection and another latent's explanation (the
//! random control) 0.25.

use std::sync::Arc;

use anyhow::Result;
use autointerp_client::{ChatRequest, ChatResponse, Client};
use autointerp_core::split::{Location, Split, Tokens};
use autointerp_run::{Event, Run, RunConfig, ScorerKind};

const WORDS: [&str; 4] = ["river", "apple", "violin", "copper"];
const FILLERS: [&str; 4] = ["the", "a", "of", "and"];

/// Explains with the highlighted word; says which excerpts hold the explained word.
struct Scripted;

impl Client for Scripted {
    async fn chat(&self, req: ChatRequest) -> autointerp_client::Result<ChatResponse> {
        let prompt = &req.messages.last().expect("a prompt").content;
        let text = if let Some(rest) = prompt.strip_prefix("Feature description: the word ") {
            let word = rest.split_whitespace().next().unwrap_or_default();
            let labels: Vec<&str> = (prompt.lines().filter(|l| l.starts_with("Excerpt ")))
                .map(|l| {
                    if l.contains(&format!(" {word}")) {
                        "1"
                    } else {
                        "0"
                    }
                })
                .collect();
            format!("[{}]", labels.join(","))
        } else {
            let word = WORDS.iter().find(|w| prompt.contains(&format!("{w}>>")));
            format!("[EXPLANATION]: the word {}", word.unwrap_or(&"unknown"))
        };
        Ok(ChatResponse {
            text,
            ..ChatResponse::default()
        })
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_cache(dir.path())?;
    let config = RunConfig {
        scorers: vec![ScorerKind::Detection],
        random_control: true,
        example_ctx_len: 8,
        min_examples: 8,
        n_examples_train: 4,
        n_examples_test: 4,
        n_non_activating: 4,
        n_quantiles: 2,
        results_dir: dir.path().into(),
        name: "run".into(),
        ..RunConfig::default()
    };
    let progress = |e: Event<'_>| {
        if let Event::PhaseStarted { label, latents } = e {
            println!("{label}: {latents} latents");
        }
    };
    let run = Run::new(config)?
        .cache_dir(dir.path())
        .with_client(Arc::new(Scripted));
    let summary = run.execute(&progress).await?;
    println!(
        "{} latents done, {} failed",
        summary.main.done, summary.main.failed
    );
    let results = autointerp_report::load_results(summary.layout.root())?;
    let report = autointerp_report::summarize(&results, &Default::default());
    println!("{}", report.to_text());
    Ok(())
}

/// A word-level tokenizer and a cache of 4 latents over 16-token rows: latent `i` fires on
/// `WORDS[i]` in every fourth row, fillers elsewhere.
fn write_cache(root: &std::path::Path) -> Result<()> {
    let vocab: serde_json::Map<_, _> = (WORDS.iter().chain(&FILLERS).enumerate())
        .map(|(i, w)| (format!(" {w}"), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({"version": "1.0", "pre_tokenizer": {"type": "Whitespace"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": " the"}});
    std::fs::write(root.join("tokenizer.json"), tokenizer.to_string())?;
    let (rows, ctx_len) = (32, 16);
    let (mut ids, mut locations, mut activations) = (Vec::new(), Vec::new(), Vec::new());
    for row in 0..rows {
        for p in 0..ctx_len {
            let latent = (row % WORDS.len()) as u32;
            if p % 4 == 1 {
                ids.push(latent);
                locations.push(Location {
                    row: row as u32,
                    position: p as u32,
                    latent,
                });
                activations.push(1.0 + (row % 5) as f32);
            } else {
                ids.push((WORDS.len() + p % FILLERS.len()) as u32);
            }
        }
    }
    let hook = root.join("latents/layers.0");
    std::fs::create_dir_all(&hook)?;
    let tokens = Some(Tokens { rows, ctx_len, ids });
    Split {
        start: 0,
        end: 3,
        locations,
        activations,
        tokens,
    }
    .write_to_dir(&hook)?;
    let model = root.join("tokenizer.json");
    std::fs::write(
        hook.join("config.json"),
        serde_json::json!({"model_name": model}).to_string(),
    )?;
    Ok(())
}
