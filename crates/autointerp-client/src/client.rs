use std::future::Future;
use std::sync::Arc;

use crate::{ChatRequest, ChatResponse, Result};

/// Something that answers chat requests: a remote OpenAI-compatible server ([`crate::OpenAiClient`])
/// or, later, a model running in this process.
///
/// Implementations handle their own retries, timeouts and rate limits, and are shared between
/// tasks (`&C` and `Arc<C>` are clients too).
pub trait Client: Send + Sync {
    /// Sends one chat request and waits for the whole answer.
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatResponse>> + Send;
}

impl<C: Client> Client for Arc<C> {
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatResponse>> + Send {
        (**self).chat(req)
    }
}

impl<C: Client> Client for &C {
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatResponse>> + Send {
        (**self).chat(req)
    }
}
