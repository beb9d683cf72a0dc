//! Per-token log-probabilities of a text under a language model: what the surprisal scorer asks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Result;

/// Something that tells how likely a (base) language model finds each token of a text after a
/// given prefix: the model running in this process, or a server that returns prompt logprobs.
///
/// Implementations tokenize `prefix` and `text` **separately** and feed the model the prefix's
/// tokens followed by the text's, so that the text is split into the same tokens whatever the
/// prefix (delphi's surprisal scorer does the same). They are shared between tasks (`&T` and
/// `Arc<T>` are token scorers too).
pub trait TokenScorer: Send + Sync {
    /// The natural-log probability of each token of `text`, given `prefix` and the tokens of
    /// `text` before it; one entry per token of `text`, in order.
    fn logprobs(&self, prefix: &str, text: &str) -> impl Future<Output = Result<Vec<f32>>> + Send;
}

impl<T: TokenScorer + ?Sized> TokenScorer for Arc<T> {
    fn logprobs(&self, prefix: &str, text: &str) -> impl Future<Output = Result<Vec<f32>>> + Send {
        (**self).logprobs(prefix, text)
    }
}

impl<T: TokenScorer + ?Sized> TokenScorer for &T {
    fn logprobs(&self, prefix: &str, text: &str) -> impl Future<Output = Result<Vec<f32>>> + Send {
        (**self).logprobs(prefix, text)
    }
}

/// What [`DynTokenScorer::logprobs_boxed`] returns.
pub type LogprobsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<f32>>> + Send + 'a>>;

/// [`TokenScorer`] in a dyn-compatible form: every token scorer is one, and
/// `dyn DynTokenScorer` is a [`TokenScorer`] again ([`SharedTokenScorer`]).
pub trait DynTokenScorer: Send + Sync {
    /// [`TokenScorer::logprobs`], boxed.
    fn logprobs_boxed<'a>(&'a self, prefix: &'a str, text: &'a str) -> LogprobsFuture<'a>;
}

impl<T: TokenScorer> DynTokenScorer for T {
    fn logprobs_boxed<'a>(&'a self, prefix: &'a str, text: &'a str) -> LogprobsFuture<'a> {
        Box::pin(self.logprobs(prefix, text))
    }
}

impl TokenScorer for dyn DynTokenScorer {
    async fn logprobs(&self, prefix: &str, text: &str) -> Result<Vec<f32>> {
        self.logprobs_boxed(prefix, text).await
    }
}

impl std::fmt::Debug for dyn DynTokenScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn DynTokenScorer")
    }
}

/// A token scorer chosen at run time.
pub type SharedTokenScorer = Arc<dyn DynTokenScorer>;
