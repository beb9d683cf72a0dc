//! What the causal scorers ask for: the model's continuations of a few prompts with and
//! without a latent steered up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use autointerp_core::LatentId;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One prompt continued twice by the subject model: as it is, and with a latent steered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeredPair {
    /// The prompt.
    pub prompt: String,
    /// Its continuation without steering (the generated text only).
    pub clean: String,
    /// Its continuation with the latent's decoder direction added at every position.
    pub steered: String,
}

/// A latent's steering: how strongly, what it did to the next-token distribution, and the
/// continuations it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intervention {
    /// The multiplier of the latent's decoder direction.
    pub strength: f64,
    /// The KL divergence the strength was calibrated to (nats).
    pub target_kl: f64,
    /// The KL divergence reached: mean over the prompts of KL(clean ‖ steered) of the
    /// next-token distribution after the prompt.
    pub kl: f64,
    /// Whether `kl` is within the calibration's tolerance of `target_kl` (a latent whose
    /// direction barely moves the output may not reach it at the largest strength tried).
    pub converged: bool,
    /// One pair per prompt.
    pub pairs: Vec<SteeredPair>,
    /// The tokens whose next-token probability the steering raised most, averaged over the
    /// prompts, with that rise, largest first (Gur-Arieh et al.'s "token change").
    #[serde(default)]
    pub promoted: Vec<(String, f64)>,
}

/// Steers a subject model along a latent and continues prompts with and without it. Shared
/// between tasks; implementations remember a latent's intervention, so the random control and
/// several scorers of one latent pay for its generations once.
pub trait Intervener: Send + Sync {
    /// `latent`'s intervention.
    fn intervene(&self, latent: LatentId)
        -> impl Future<Output = Result<Arc<Intervention>>> + Send;
}

impl<T: Intervener + ?Sized> Intervener for Arc<T> {
    fn intervene(
        &self,
        latent: LatentId,
    ) -> impl Future<Output = Result<Arc<Intervention>>> + Send {
        (**self).intervene(latent)
    }
}

impl<T: Intervener + ?Sized> Intervener for &T {
    fn intervene(
        &self,
        latent: LatentId,
    ) -> impl Future<Output = Result<Arc<Intervention>>> + Send {
        (**self).intervene(latent)
    }
}

/// What [`DynIntervener::intervene_boxed`] returns.
pub type InterventionFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Arc<Intervention>>> + Send + 'a>>;

/// [`Intervener`] in a dyn-compatible form ([`SharedIntervener`]).
pub trait DynIntervener: Send + Sync {
    /// [`Intervener::intervene`], boxed.
    fn intervene_boxed(&self, latent: LatentId) -> InterventionFuture<'_>;
}

impl<T: Intervener> DynIntervener for T {
    fn intervene_boxed(&self, latent: LatentId) -> InterventionFuture<'_> {
        Box::pin(self.intervene(latent))
    }
}

impl Intervener for dyn DynIntervener {
    async fn intervene(&self, latent: LatentId) -> Result<Arc<Intervention>> {
        self.intervene_boxed(latent).await
    }
}

impl std::fmt::Debug for dyn DynIntervener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn DynIntervener")
    }
}

/// An intervener chosen at run time.
pub type SharedIntervener = Arc<dyn DynIntervener>;
