use anyhow::{bail, Context, Result};
use autointerp_client::{ChatRequest, Client, OpenAiClient};
use autointerp_core::Message;

/// `autointerp chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// `local:PATH` (HF folder, `.gguf` file or Hub id, run in-process), `openai:BASE_URL/MODEL`
    /// (any OpenAI-compatible server: vLLM, SGLang, llama.cpp, Ollama), `openai:MODEL`
    /// (api.openai.com, key in OPENAI_API_KEY) or `openrouter:MODEL` (key in OPENROUTER_API_KEY).
    #[arg(long)]
    model: String,
    /// The question.
    #[arg(long)]
    prompt: String,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Environment variable holding the API key of an `openai:BASE_URL/MODEL` server.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Device and precision of a `local:` model.
    #[command(flatten)]
    device: crate::common::DeviceArgs,
}

/// Parses `--model` into a client.
pub fn client_for(spec: &str, api_key_env: Option<&str>) -> Result<OpenAiClient> {
    let (provider, rest) = spec
        .split_once(':')
        .with_context(|| format!("--model {spec:?}: expected `openai:BASE_URL/MODEL`, `openai:MODEL` or `openrouter:MODEL`"))?;
    let client = match provider {
        "openrouter" => OpenAiClient::openrouter(rest)?,
        "openai" if rest.starts_with("http://") || rest.starts_with("https://") => {
            let (base, model) = rest
                .rsplit_once('/')
                .filter(|(_, m)| !m.is_empty())
                .with_context(|| format!("--model {spec:?}: expected `openai:BASE_URL/MODEL`"))?;
            let client = OpenAiClient::new(base, model)?;
            match api_key_env {
                Some(var) => client.with_api_key_env(var)?,
                None => client,
            }
        }
        "openai" => OpenAiClient::openai(rest)?,
        "local" => bail!("--model {spec:?}: local models are answered by the in-process engine, not an HTTP client"),
        other => bail!("--model {spec:?}: unknown provider {other:?} (openai, openrouter)"),
    };
    Ok(client)
}

pub fn run(args: ChatArgs) -> Result<()> {
    let request = ChatRequest::new(vec![Message::user(args.prompt.clone())])
        .with_max_tokens(args.max_tokens)
        .with_temperature(args.temperature);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = match args.model.strip_prefix("local:") {
        Some(source) => local_chat(source, &args, request, &runtime)?,
        None => {
            let client = client_for(&args.model, args.api_key_env.as_deref())?;
            runtime
                .block_on(client.chat(request))
                .context("chat request failed")?
        }
    };
    println!("{}", answer.text);
    eprintln!(
        "[{} prompt + {} completion tokens]",
        answer.usage.prompt_tokens, answer.usage.completion_tokens
    );
    Ok(())
}

fn local_chat(
    source: &str,
    args: &ChatArgs,
    request: ChatRequest,
    runtime: &tokio::runtime::Runtime,
) -> Result<autointerp_client::ChatResponse> {
    use autointerp_engine::{EngineConfig, LocalEngine};
    let device = autointerp_model::parse_device(&args.device.device)?;
    let dtype: autointerp_model::DType = args.device.dtype.parse()?;
    let engine = LocalEngine::load(source, device, dtype, EngineConfig::default())
        .with_context(|| format!("loading {source:?} into the in-process engine"))?;
    runtime
        .block_on(engine.chat(request))
        .context("chat request failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse_into_clients() {
        let c = client_for("openai:http://127.0.0.1:8000/v1/Qwen2.5-7B", None).unwrap();
        assert_eq!(
            (c.base_url(), c.model()),
            ("http://127.0.0.1:8000/v1", "Qwen2.5-7B")
        );
        for bad in ["gpt-4o", "claude:x", "openai:http://host/"] {
            assert!(client_for(bad, None).is_err(), "{bad}");
        }
        let err =
            client_for("openai:http://h/v1/m", Some("AUTOINTERP_TEST_NO_SUCH_VAR")).unwrap_err();
        assert!(
            format!("{err:#}").contains("AUTOINTERP_TEST_NO_SUCH_VAR"),
            "{err:#}"
        );
    }
}
