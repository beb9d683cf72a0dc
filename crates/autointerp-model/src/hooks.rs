//! What a forward pass reads and changes: captured hook points, interventions, and whether
//! logits are wanted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use autointerp_core::HookPoint;
use tch::Tensor;

use crate::{Error, Result};

/// A function that replaces the tensor at a hook point. It gets the tensor the model computed
/// and returns the one the model continues with, of the same shape, dtype and device, or says
/// why it cannot (the forward pass then fails with [`Error::InterventionFailed`]).
pub type Intervention = Box<
    dyn Fn(&Tensor) -> std::result::Result<Tensor, Box<dyn std::error::Error + Send + Sync>> + Send,
>;

/// Which logits a forward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Logits {
    /// `[batch, seq, vocab]`.
    #[default]
    All,
    /// `[batch, 1, vocab]`: the last position only (what generation needs).
    Last,
    /// None: the forward stops after the deepest captured hook point.
    None,
}

/// The hook points a forward pass captures and the interventions it applies.
///
/// An empty set (the [`Default`]) costs nothing: each hook point is a map lookup that finds
/// nothing. Captured tensors are the ones the model continues with, i.e. after any
/// intervention at the same point.
///
/// ```
/// use autointerp_core::HookPoint;
/// use autointerp_model::{Hooks, Logits};
///
/// let hooks = Hooks::new()
///     .capture(HookPoint::Residual(3))
///     .capture(HookPoint::MlpHidden(3))
///     .intervene(HookPoint::Mlp(1), |t| t * 0.0) // ablate layer 1's MLP
///     .with_logits(Logits::None); // stop after layer 3
/// assert_eq!(hooks.deepest(), Some(HookPoint::Residual(3)));
/// ```
#[derive(Default)]
pub struct Hooks {
    captures: BTreeSet<HookPoint>,
    interventions: BTreeMap<HookPoint, Intervention>,
    logits: Logits,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("captures", &self.captures)
            .field(
                "interventions",
                &self.interventions.keys().collect::<Vec<_>>(),
            )
            .field("logits", &self.logits)
            .finish()
    }
}

impl Hooks {
    /// No captures, no interventions, all logits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also captures `point`.
    #[must_use]
    pub fn capture(mut self, point: HookPoint) -> Self {
        self.captures.insert(point);
        self
    }

    /// Also captures every point of `points`.
    #[must_use]
    pub fn capture_all(mut self, points: impl IntoIterator<Item = HookPoint>) -> Self {
        self.captures.extend(points);
        self
    }

    /// Replaces the tensor at `point` by `f(tensor)` (replacing any earlier intervention there).
    #[must_use]
    pub fn intervene(
        mut self,
        point: HookPoint,
        f: impl Fn(&Tensor) -> Tensor + Send + 'static,
    ) -> Self {
        self.interventions
            .insert(point, Box::new(move |x| Ok(f(x))));
        self
    }

    /// Like [`Hooks::intervene`], with a function that may fail, e.g. an
    /// `autointerp_sae::edit::Edit` (`|x| edit.apply(x)`); its error fails the forward pass,
    /// naming `point`.
    #[must_use]
    pub fn try_intervene<E>(
        mut self,
        point: HookPoint,
        f: impl Fn(&Tensor) -> std::result::Result<Tensor, E> + Send + 'static,
    ) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.interventions
            .insert(point, Box::new(move |x| f(x).map_err(Into::into)));
        self
    }

    /// The same interventions, capturing nothing.
    #[must_use]
    pub fn without_captures(mut self) -> Self {
        self.captures.clear();
        self
    }

    /// Which logits to compute ([`Logits::All`] by default).
    #[must_use]
    pub fn with_logits(mut self, logits: Logits) -> Self {
        self.logits = logits;
        self
    }

    /// The logits setting.
    pub fn logits(&self) -> Logits {
        self.logits
    }

    /// The captured hook points.
    pub fn captures(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.captures.iter().copied()
    }

    /// The hook points with an intervention.
    pub fn interventions(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.interventions.keys().copied()
    }

    /// The captured point the forward pass reaches last (by [`HookPoint::depth`]).
    pub fn deepest(&self) -> Option<HookPoint> {
        self.captures.iter().copied().max_by_key(HookPoint::depth)
    }

    /// Errors if a hook point names a layer the model lacks.
    pub(crate) fn check_layers(&self, n_layers: usize) -> Result<()> {
        for hook in self.captures.iter().chain(self.interventions.keys()) {
            if hook.layer().is_some_and(|l| l >= n_layers) {
                return Err(Error::HookLayer {
                    hook: *hook,
                    n_layers,
                });
            }
        }
        Ok(())
    }

    /// Runs the intervention at `point`, if any, and records the result if `point` is captured.
    pub(crate) fn apply(
        &self,
        point: HookPoint,
        x: Tensor,
        out: &mut BTreeMap<HookPoint, Tensor>,
    ) -> Result<Tensor> {
        let x = match self.interventions.get(&point) {
            None => x,
            Some(f) => {
                let y = f(&x).map_err(|source| Error::InterventionFailed {
                    hook: point,
                    source,
                })?;
                if y.size() != x.size() || y.kind() != x.kind() || y.device() != x.device() {
                    let describe =
                        |t: &Tensor| format!("{:?} {:?} on {:?}", t.size(), t.kind(), t.device());
                    return Err(Error::Intervention {
                        hook: point,
                        expected: describe(&x),
                        found: describe(&y),
                    });
                }
                y
            }
        };
        if self.captures.contains(&point) {
            out.insert(point, x.shallow_clone());
        }
        Ok(x)
    }
}
