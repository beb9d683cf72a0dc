//! The model crate's sentence embedder as an [`Embedder`] (feature `local`).

use std::sync::{Mutex, PoisonError};

use autointerp_model::SentenceEmbedder;
use tch::Device;

use crate::embedding::Embedder;
use crate::{Error, Result};

/// A sentence-transformers model (all-MiniLM-L6-v2 and other BERT encoders; see
/// [`SentenceEmbedder`]) in this process, as the [`Embedder`] of embedding-based
/// non-activating examples.
///
/// The model is not `Sync` (libtorch tensors), so calls from several threads take turns behind
/// a mutex; each call runs libtorch's own intra-op threads, and batches its texts (32 at a
/// time unless the embedder was built otherwise).
///
/// ```no_run
/// use autointerp_latents::{Embedder, LocalEmbedder};
///
/// # fn main() -> autointerp_latents::Result<()> {
/// let embedder = LocalEmbedder::load("all-MiniLM-L6-v2", tch::Device::Cpu)?;
/// let vectors = embedder.embed(&["a river".to_string(), "a bank".to_string()])?;
/// assert_eq!(vectors[0].len(), embedder.dim());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LocalEmbedder {
    inner: Mutex<SentenceEmbedder>,
    dim: usize,
}

impl LocalEmbedder {
    /// Loads a sentence-transformers folder onto `device` (see [`SentenceEmbedder::load`]).
    ///
    /// # Errors
    /// [`Error::Embedder`] naming the problem (a missing file, an unsupported model).
    pub fn load(source: &str, device: Device) -> Result<Self> {
        SentenceEmbedder::load(source, device)
            .map(Self::new)
            .map_err(|e| Error::Embedder(format!("cannot load the sentence embedder: {e}")))
    }

    /// Wraps an embedder already loaded (e.g. with another batch size).
    pub fn new(embedder: SentenceEmbedder) -> Self {
        Self {
            dim: embedder.dim(),
            inner: Mutex::new(embedder),
        }
    }

    /// The length of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

impl From<SentenceEmbedder> for LocalEmbedder {
    fn from(embedder: SentenceEmbedder) -> Self {
        Self::new(embedder)
    }
}

impl Embedder for LocalEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        // A panic inside libtorch would poison the lock; the model itself is still usable.
        let embedder = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        embedder
            .embed(texts)
            .map_err(|e| Error::Embedder(e.to_string()))
    }
}
