use anyhow::{Context, Result};
use autointerp_client::{ChatRequest, Client, ModelSpec};
use autointerp_core::Message;
use autointerp_run::overrides::number;

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
    #[arg(long, default_value_t = 256, value_parser = number::<u32>)]
    max_tokens: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0, value_parser = number::<f32>)]
    temperature: f32,
    /// Environment variable holding the API key of an `openai:BASE_URL/MODEL` server.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Device and precision of a `local:` model.
    #[command(flatten)]
    device: crate::common::DeviceArgs,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let request = ChatRequest::new(vec![Message::user(args.prompt.clone())])
        .with_max_tokens(args.max_tokens)
        .with_temperature(args.temperature);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spec: ModelSpec = args.model.parse().context("--model")?;
    let answer = match &spec {
        ModelSpec::Local { source } => local_chat(source, &args, request, &runtime)?,
        _ => {
            let client = spec
                .client(args.api_key_env.as_deref())
                .context("--model")?;
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
