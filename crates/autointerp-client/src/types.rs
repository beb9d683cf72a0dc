use autointerp_core::Message;
use serde::{Deserialize, Serialize};

/// One chat-completion request, independent of the backend that answers it.
///
/// Unset options are left to the server's defaults.
///
/// ```
/// use autointerp_client::ChatRequest;
/// use autointerp_core::Message;
///
/// let req = ChatRequest::new(vec![Message::user("Say hi")])
///     .with_max_tokens(16)
///     .with_temperature(0.0)
///     .with_logprobs(5)
///     .with_extra("top_k", 20);
/// assert_eq!(req.extra["top_k"], 20);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus-sampling mass.
    pub top_p: Option<f32>,
    /// Strings that end generation.
    pub stop: Vec<String>,
    /// Sampling seed, for servers that honour it.
    pub seed: Option<u64>,
    /// Return the log-probability of each generated token and of its `k` most likely
    /// alternatives (`Some(k)`; OpenAI allows `k` ≤ 20).
    pub logprobs: Option<u8>,
    /// Return the log-probability of each prompt token and of its `k` most likely alternatives
    /// (vLLM's `prompt_logprobs`; most other servers ignore or reject it).
    pub prompt_logprobs: Option<u8>,
    /// Extra body parameters passed through as they are, e.g. vLLM's `top_k` or
    /// `chat_template_kwargs`, or OpenRouter's `provider`. They are written last, so a key here
    /// overrides the field the typed options above would have written, and the client's own
    /// [`crate::HttpSettings::extra_body`] (settings for every request; these are for one).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChatRequest {
    /// A request for the given conversation with every option left to the server.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Sets the most tokens to generate.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the sampling temperature.
    #[must_use]
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the nucleus-sampling mass.
    #[must_use]
    pub fn with_top_p(mut self, top_p: f32) -> Self {
        self.top_p = Some(top_p);
        self
    }

    /// Adds a stop string.
    #[must_use]
    pub fn with_stop(mut self, stop: impl Into<String>) -> Self {
        self.stop.push(stop.into());
        self
    }

    /// Sets the sampling seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Asks for the log-probabilities of generated tokens and of their `top_k` best alternatives.
    #[must_use]
    pub fn with_logprobs(mut self, top_k: u8) -> Self {
        self.logprobs = Some(top_k);
        self
    }

    /// Asks for the log-probabilities of prompt tokens and of their `top_k` best alternatives.
    #[must_use]
    pub fn with_prompt_logprobs(mut self, top_k: u8) -> Self {
        self.prompt_logprobs = Some(top_k);
        self
    }

    /// Adds an extra body parameter, passed through as it is.
    #[must_use]
    pub fn with_extra(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// The log-probability of one token, and of the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprobs {
    /// The token, as text.
    pub token: String,
    /// Its natural-log probability; `-inf` where the server sent none.
    pub logprob: f32,
    /// The most likely tokens at this position with their log-probabilities, best first. It may
    /// or may not contain `token` itself, as the server reported.
    pub top: Vec<(String, f32)>,
}

/// Token counts, and what they cost where prices are known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Cost in the currency of the configured prices (usually US dollars), or as the server
    /// reported it (OpenRouter's `usage.cost`); `None` when neither is known.
    pub cost: Option<f64>,
}

/// One answer to a [`ChatRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The generated text (empty when the server sent no content).
    pub text: String,
    /// Per generated token, when [`ChatRequest::logprobs`] was set and the server returned them.
    pub logprobs: Option<Vec<TokenLogprobs>>,
    /// Per prompt token, when [`ChatRequest::prompt_logprobs`] was set and the server returned
    /// them. Positions without a value (the first token, which nothing predicts) are `None`.
    pub prompt_logprobs: Option<Vec<Option<TokenLogprobs>>>,
    /// Token counts and cost.
    pub usage: Usage,
    /// Why generation stopped, as the server said it: `stop`, `length`, `content_filter`, ….
    pub finish_reason: Option<String>,
}
