//! Run with: cargo run --release -p autointerp-client --example client_chat -- BASE_URL MODEL "prompt"
//!
//! Sends one chat request to an OpenAI-compatible server and prints the answer, its token usage
//! and the top alternatives of the first generated tokens. Set `API_KEY_ENV` to the name of an
//! environment variable holding the key (e.g. `API_KEY_ENV=OPENROUTER_API_KEY`) for servers that
//! need one; local vLLM, SGLang, llama.cpp and Ollama servers usually do not.
//!
//! ```text
//! cargo run --release --example client_chat -- http://localhost:8000/v1 Qwen/Qwen2.5-0.5B-Instruct "Name a colour."
//! ```

use anyhow::{bail, Context, Result};
use autointerp_client::{ChatRequest, Client, OpenAiClient};
use autointerp_core::Message;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base_url, model, prompt] = args.as_slice() else {
        bail!("usage: client_chat BASE_URL MODEL \"prompt\"");
    };
    let mut client = OpenAiClient::new(base_url.as_str(), model.as_str())?;
    if let Ok(var) = std::env::var("API_KEY_ENV") {
        client = client.with_api_key_env(var)?;
    }
    let req = ChatRequest::new(vec![Message::user(prompt.as_str())])
        .with_max_tokens(256)
        .with_temperature(0.0)
        .with_logprobs(3);
    let answer = client.chat(req).await.context("chat request failed")?;

    println!("{}", answer.text);
    println!(
        "\n[{} prompt + {} completion tokens, finish reason {}]",
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
        answer.finish_reason.as_deref().unwrap_or("unknown")
    );
    for token in answer.logprobs.iter().flatten().take(5) {
        let top: Vec<String> = token
            .top
            .iter()
            .map(|(t, lp)| format!("{t:?} {lp:.2}"))
            .collect();
        println!(
            "{:?} {:.3}  top: {}",
            token.token,
            token.logprob,
            top.join(", ")
        );
    }
    Ok(())
}
