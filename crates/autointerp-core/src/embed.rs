//! The one sentence-embedder interface: the embedding scorer asks it for the explanation and the
//! examples, and the latents crate for embedding-based hard negatives.
//!
//! It is dyn-compatible (each call returns a boxed future), so a run can hold whichever embedder
//! the user chose (`Arc<dyn Embedder>`) and a crate that only needs vectors depends on this trait
//! alone, not on an HTTP client or on libtorch. Implementations: `OpenAiEmbedder`
//! (autointerp-client, any `/embeddings` server) and `LocalEmbedder` (autointerp-engine, a
//! sentence-transformers model in this process).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Why an embedder failed; implementations box their own error type, so callers can downcast.
pub type EmbedError = Box<dyn std::error::Error + Send + Sync>;

/// What [`Embedder::embed`] returns.
pub type EmbedFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Vec<f32>>, EmbedError>> + Send + 'a>>;

/// Turns texts into vectors; similar texts get vectors of high cosine similarity.
///
/// Implementations do their own batching, retries and limits, and are shared between tasks and
/// threads (hence `Send + Sync`; a model that must stay on one thread sits behind a channel).
/// The future needs no particular executor: callers without an async runtime may drive it with
/// `futures::executor::block_on`.
///
/// ```
/// use autointerp_core::{EmbedFuture, Embedder};
///
/// /// Counts letters: enough to tell "aaa" from "bbb".
/// struct Letters;
///
/// impl Embedder for Letters {
///     fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
///         Box::pin(async move {
///             Ok(texts
///                 .iter()
///                 .map(|t| vec![t.matches('a').count() as f32, t.matches('b').count() as f32])
///                 .collect())
///         })
///     }
/// }
/// ```
pub trait Embedder: Send + Sync {
    /// One vector per text, in the order of `texts`, all of the same length.
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a>;
}

impl<E: Embedder + ?Sized> Embedder for Arc<E> {
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        (**self).embed(texts)
    }
}

impl<E: Embedder + ?Sized> Embedder for Box<E> {
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        (**self).embed(texts)
    }
}

impl<E: Embedder + ?Sized> Embedder for &E {
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        (**self).embed(texts)
    }
}

/// So that scorers holding a boxed embedder can derive `Debug`; embedders need not implement it.
impl std::fmt::Debug for dyn Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Embedder")
    }
}
