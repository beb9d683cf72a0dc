//! `LocalEmbedder`: a sentence-transformers model in this process, as the one
//! [`Embedder`] of the embedding scorer and of embedding-based hard negatives.

use std::sync::Arc;
use std::thread;

use autointerp_model::SentenceEmbedder;
use tch::Device;
use tokio::sync::{mpsc, oneshot};

use autointerp_core::{EmbedFuture, Embedder};

use crate::{Error, Result};

/// Texts to embed and where their vectors go.
struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<autointerp_model::Result<Vec<Vec<f32>>>>,
}

fn embedder_error(problem: impl std::fmt::Display) -> Error {
    Error::Engine {
        problem: format!("sentence embedder: {problem}"),
    }
}

/// What every handle of one embedder shares.
#[derive(Debug)]
struct Info {
    dim: usize,
    max_seq_length: usize,
    device: Device,
}

/// A sentence-transformers model (all-MiniLM-L6-v2 and other BERT encoders; see
/// [`SentenceEmbedder`]) running in this process: the offline counterpart of
/// `autointerp_client::OpenAiEmbedder`.
///
/// The model lives on its own thread (libtorch tensors are not `Sync`, and an encoder
/// forward would block the async runtime); each [`Embedder::embed`] call sends its texts
/// over a bounded channel and awaits the vectors, so callers never block a runtime thread.
/// Calls run one at a time, each in batches of the embedder's batch size. The handle is
/// cheap to clone; the thread ends when the last handle is dropped.
///
/// ```no_run
/// use autointerp_core::Embedder;
/// use autointerp_engine::LocalEmbedder;
///
/// # async fn run() -> Result<(), autointerp_core::EmbedError> {
/// let embedder = LocalEmbedder::load("all-MiniLM-L6-v2", tch::Device::Cpu)?;
/// let vectors = embedder.embed(&["a river".to_string(), "a bank".to_string()]).await?;
/// assert_eq!(vectors[0].len(), embedder.dim());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LocalEmbedder {
    tx: mpsc::Sender<Job>,
    info: Arc<Info>,
}

impl LocalEmbedder {
    /// Loads a sentence-transformers folder (see [`SentenceEmbedder::load`]) onto `device`
    /// and starts its thread. Blocking: in async code, call it inside `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Engine`] naming the problem (a missing file, an unsupported model) if the
    /// model cannot be loaded or its thread cannot start.
    pub fn load(source: &str, device: Device) -> Result<Self> {
        Self::new(SentenceEmbedder::load(source, device).map_err(embedder_error)?)
    }

    /// Starts the thread of an embedder already loaded (e.g. with another batch size).
    ///
    /// # Errors
    /// [`Error::Engine`] if the thread cannot be started.
    pub fn new(embedder: SentenceEmbedder) -> Result<Self> {
        let info = Arc::new(Info {
            dim: embedder.dim(),
            max_seq_length: embedder.max_seq_length(),
            device: embedder.device(),
        });
        let (tx, mut rx) = mpsc::channel::<Job>(64);
        thread::Builder::new()
            .name("autointerp-sentence-embedder".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    // The caller may have gone away; its vectors are then dropped.
                    let _ = job.reply.send(embedder.embed(&job.texts));
                }
            })
            .map_err(|e| embedder_error(format!("cannot start its thread: {e}")))?;
        Ok(Self { tx, info })
    }

    /// The length of the vectors.
    pub fn dim(&self) -> usize {
        self.info.dim
    }

    /// The most tokens of a text; longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.info.max_seq_length
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.info.device
    }

    /// One vector per text, in the order of `texts`: [`Embedder::embed`] with a typed error
    /// (the trait boxes it).
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                texts: texts.to_vec(),
                reply,
            })
            .await
            .map_err(|_| embedder_error("its thread has stopped"))?;
        answer
            .await
            .map_err(|_| embedder_error("its thread stopped before answering"))?
            .map_err(embedder_error)
    }
}

impl Embedder for LocalEmbedder {
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move { Ok(Self::embed(self, texts).await?) })
    }
}
