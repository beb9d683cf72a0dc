use std::fmt;
use std::future::Future;
use std::pin::Pin;
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

impl<C: Client + ?Sized> Client for Arc<C> {
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatResponse>> + Send {
        (**self).chat(req)
    }
}

impl<C: Client + ?Sized> Client for &C {
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatResponse>> + Send {
        (**self).chat(req)
    }
}

/// What [`DynClient::chat_boxed`] returns.
pub type ChatFuture<'a> = Pin<Box<dyn Future<Output = Result<ChatResponse>> + Send + 'a>>;

/// [`Client`] in a dyn-compatible form, for code that picks its client at run time (a server or
/// a model in this process): every client is one, and `dyn DynClient` is a [`Client`] again, so
/// [`SharedClient`] goes wherever a client does.
pub trait DynClient: Send + Sync {
    /// [`Client::chat`], boxed.
    fn chat_boxed(&self, req: ChatRequest) -> ChatFuture<'_>;
}

impl<C: Client> DynClient for C {
    fn chat_boxed(&self, req: ChatRequest) -> ChatFuture<'_> {
        Box::pin(self.chat(req))
    }
}

impl Client for dyn DynClient {
    fn chat(&self, req: ChatRequest) -> impl Future<Output = Result<ChatResponse>> + Send {
        self.chat_boxed(req)
    }
}

/// So that explainers and scorers over a [`SharedClient`] can derive `Debug`.
impl fmt::Debug for dyn DynClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn DynClient")
    }
}

/// A client chosen at run time, shared by the explainer and every scorer.
pub type SharedClient = Arc<dyn DynClient>;
