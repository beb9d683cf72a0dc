//! Run with: cargo run --release -p autointerp-engine --example client_local -- MODEL "prompt"
//!
//! Answers one chat request with a model running in this process (`LocalEngine`): MODEL is an
//! HF folder, a `.gguf` file or a Hugging Face Hub id. Prints the answer, its token usage, the
//! time it took and the top alternatives of the first generated tokens. `AUTOINTERP_DEVICE`
//! (`cpu`, `cuda`, `cuda:N`) and `AUTOINTERP_DTYPE` (`f32`, `bf16`, `f16`) choose where and how
//! it runs.
//!
//! ```text
//! MODEL=$(scripts/fetch-assets.sh smollm2 | sed -n 's/^SMOLLM2_GGUF=//p')
//! cargo run --release -p autointerp-engine --example client_local -- "$MODEL" "What is the capital of France?"
//! ```

use std::time::Instant;

use anyhow::{bail, Context, Result};
use autointerp_client::{ChatRequest, Client};
use autointerp_core::Message;
use autointerp_engine::{EngineConfig, LocalEngine};
use autointerp_model::{parse_device, DType};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, prompt] = args.as_slice() else {
        bail!("usage: client_local MODEL \"prompt\"");
    };
    let device =
        parse_device(&std::env::var("AUTOINTERP_DEVICE").unwrap_or_else(|_| "cpu".into()))?;
    let dtype: DType = std::env::var("AUTOINTERP_DTYPE")
        .unwrap_or_else(|_| "f32".into())
        .parse()?;

    let started = Instant::now();
    let source = model.clone();
    let engine = tokio::task::spawn_blocking(move || {
        LocalEngine::load(&source, device, dtype, EngineConfig::default())
    })
    .await?
    .with_context(|| format!("cannot load {model}"))?;
    eprintln!("loaded {model} on {device:?} in {:.1?}", started.elapsed());

    let req = ChatRequest::new(vec![Message::user(prompt.as_str())])
        .with_max_tokens(256)
        .with_temperature(0.0)
        .with_logprobs(3);
    let started = Instant::now();
    let answer = engine.chat(req).await.context("chat request failed")?;
    let elapsed = started.elapsed();

    println!("{}", answer.text);
    eprintln!(
        "\n{} prompt + {} generated tokens in {elapsed:.2?} ({:.1} tokens/s), finish: {}",
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
        answer.usage.completion_tokens as f64 / elapsed.as_secs_f64(),
        answer.finish_reason.as_deref().unwrap_or("?"),
    );
    for lp in answer.logprobs.iter().flatten().take(5) {
        let alternatives: Vec<String> = lp
            .top
            .iter()
            .map(|(t, l)| format!("{t:?} {:.3}", l.exp()))
            .collect();
        eprintln!(
            "{:>14?} {:.3}  [{}]",
            lp.token,
            lp.logprob.exp(),
            alternatives.join(", ")
        );
    }
    Ok(())
}
