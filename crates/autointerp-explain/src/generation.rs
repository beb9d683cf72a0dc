//! How an LLM is asked to answer: token budget, temperature, seed and extra request parameters.

use autointerp_client::ChatRequest;
use autointerp_core::Message;
use serde::{Deserialize, Serialize};

/// Sampling options of the requests an explainer or scorer sends.
///
/// ```
/// use autointerp_core::Message;
/// use autointerp_explain::GenerationConfig;
///
/// let g = GenerationConfig::default().with_max_tokens(200).with_extra("top_k", 1);
/// let req = g.request(vec![Message::user("hi")]);
/// assert_eq!((req.max_tokens, req.temperature), (Some(200), Some(0.0)));
/// assert_eq!(req.extra["top_k"], 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Sampling seed, for servers that honour it.
    pub seed: Option<u64>,
    /// Extra body parameters passed through as they are (vLLM's `top_k` or
    /// `chat_template_kwargs`, OpenRouter's `provider`, …).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for GenerationConfig {
    /// 1000 tokens, greedy, no seed, no extra parameters.
    fn default() -> Self {
        Self {
            max_tokens: 1000,
            temperature: 0.0,
            seed: None,
            extra: serde_json::Map::new(),
        }
    }
}

impl GenerationConfig {
    /// Sets [`GenerationConfig::max_tokens`].
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets [`GenerationConfig::temperature`].
    #[must_use]
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// Sets [`GenerationConfig::seed`].
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Adds an extra body parameter.
    #[must_use]
    pub fn with_extra(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// A request for `messages` with these options.
    pub fn request(&self, messages: Vec<Message>) -> ChatRequest {
        let mut req = ChatRequest::new(messages)
            .with_max_tokens(self.max_tokens)
            .with_temperature(self.temperature);
        if let Some(seed) = self.seed {
            req = req.with_seed(seed);
        }
        for (key, value) in &self.extra {
            req = req.with_extra(key.clone(), value.clone());
        }
        req
    }
}
