//! Named edits of the activations at a hook point, for steering and ablation: add a scaled
//! direction, clamp a latent to a value through its coder, ablate a latent.
//!
//! An [`Edit`] is a pure function of the activations (`[batch, seq, d]`, any dtype), applied at
//! every position it is given: the prompt's positions in a prefill and each new token's in a
//! decoding step, so the same edit steers a forward pass, a KV-cached generation and a batched
//! one alike. It is `Send + Sync`, so requests can carry it to an engine thread; install it with
//! the model's hook mechanism (`autointerp_model::Hooks::try_intervene`).
//!
//! Clamping goes through the coder rather than through its decoder row alone: the edit adds
//! `ŷ(a with aᵢ = value) − ŷ(a)`, the change in the coder's output when only latent `i` is
//! moved, which is `(value − aᵢ) · W_dec[i]` rescaled by the coder's input normalisation. The
//! coder's reconstruction error and its other latents stay in the activations, as in SAE-Lens's
//! and Neuronpedia's steering.
//!
//! ```
//! use std::sync::Arc;
//! use autointerp_sae::{edit::Edit, Activation, SparseCoder, Weights};
//! use tch::{Device, Kind, Tensor};
//! # fn main() -> autointerp_sae::Result<()> {
//! let opts = (Kind::Float, Device::Cpu);
//! let coder = SparseCoder::new(
//!     Weights {
//!         w_enc: Tensor::eye(4, opts),
//!         b_enc: Tensor::zeros([4], opts),
//!         w_dec: Some(Tensor::eye(4, opts)),
//!         b_dec: Tensor::zeros([4], opts),
//!         w_skip: None,
//!     },
//!     Activation::Relu,
//! )?;
//! let coder = Edit::share(coder);
//! let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([1, 1, 4]);
//! // Latent 2 reads and writes coordinate 2: clamping it to 7 sets that coordinate to 7.
//! let y = Edit::clamp(Arc::clone(&coder), 2, 7.0)?.apply(&x)?;
//! assert_eq!(Vec::<f32>::try_from(y.view([-1]))?, [1.0, -2.0, 7.0, 0.5]);
//! // Latent 1 does not fire (its pre-activation is −2): ablating it changes nothing.
//! let y = Edit::ablate(coder, 1)?.apply(&x)?;
//! assert_eq!(Vec::<f32>::try_from(y.view([-1]))?, [1.0, -2.0, 3.0, 0.5]);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use autointerp_core::HookPoint;
use tch::{Kind, Tensor};

use crate::{Error, Result, SparseCoder, SparseLatents};

/// A sparse coder shared between threads (tensors are `Send` but not `Sync`).
pub type SharedCoder = Arc<Mutex<SparseCoder>>;

/// One named change of the activations at a hook point.
#[derive(Clone)]
pub enum Edit {
    /// `x + scale · direction` at every position.
    Add {
        /// The direction, `[d]`.
        direction: Arc<[f32]>,
        /// Its multiplier.
        scale: f64,
    },
    /// Latent `latent` of `coder` set to `value` at every position, through the coder.
    Clamp {
        /// The coder reading (and writing) this hook point.
        coder: SharedCoder,
        /// The latent.
        latent: usize,
        /// Its new activation.
        value: f64,
    },
    /// Latent `latent` of `coder` set to 0 wherever it fires.
    Ablate {
        /// The coder reading (and writing) this hook point.
        coder: SharedCoder,
        /// The latent.
        latent: usize,
    },
}

impl fmt::Debug for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Edit({self})")
    }
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Add { direction, scale } => {
                write!(
                    f,
                    "add {scale} x a direction of norm {:.4}",
                    norm(direction)
                )
            }
            Self::Clamp { latent, value, .. } => write!(f, "clamp latent {latent} to {value}"),
            Self::Ablate { latent, .. } => write!(f, "ablate latent {latent}"),
        }
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

fn lock(coder: &SharedCoder) -> std::sync::MutexGuard<'_, SparseCoder> {
    // A poisoned lock means a panic elsewhere mid-encode; the coder's weights are unchanged.
    coder.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Edit {
    /// Wraps a coder for [`Edit::clamp`], [`Edit::ablate`] and [`Edit::steer`].
    pub fn share(coder: SparseCoder) -> SharedCoder {
        Arc::new(Mutex::new(coder))
    }

    /// Adds `scale · direction`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an empty direction or one with a non-finite value.
    pub fn add(direction: impl Into<Arc<[f32]>>, scale: f64) -> Result<Self> {
        let direction = direction.into();
        if direction.is_empty() || !direction.iter().all(|x| x.is_finite()) {
            return Err(Error::Unsupported(
                "steering direction: empty or not finite".into(),
            ));
        }
        if !scale.is_finite() {
            return Err(Error::Unsupported(format!("steering scale {scale}")));
        }
        Ok(Self::Add { direction, scale })
    }

    /// Adds `scale` times latent `latent`'s decoder row (its direction at the coder's output).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a latent beyond the coder's width or a coder without a
    /// decoder.
    pub fn steer(coder: &SharedCoder, latent: usize, scale: f64) -> Result<Self> {
        let row = {
            let coder = lock(coder);
            check_latent(&coder, latent)?;
            let w = coder.decoder_weight().ok_or_else(|| {
                Error::Unsupported(format!(
                    "steering along latent {latent}: the coder has no decoder"
                ))
            })?;
            let row = w
                .f_select(0, latent as i64)?
                .f_to_kind(Kind::Float)?
                .f_to_device(tch::Device::Cpu)?;
            Vec::<f32>::try_from(&row)?
        };
        Self::add(row, scale)
    }

    /// Sets latent `latent` of `coder` to `value` at every position.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a latent beyond the coder's width, a coder without a decoder,
    /// a transcoder (its latent is read at one hook point and written at another), or a
    /// non-finite value.
    pub fn clamp(coder: SharedCoder, latent: usize, value: f64) -> Result<Self> {
        check_clampable(&coder, latent)?;
        if !value.is_finite() {
            return Err(Error::Unsupported(format!("clamp value {value}")));
        }
        Ok(Self::Clamp {
            coder,
            latent,
            value,
        })
    }

    /// Sets latent `latent` of `coder` to 0 wherever it fires.
    ///
    /// # Errors
    /// As [`Edit::clamp`].
    pub fn ablate(coder: SharedCoder, latent: usize) -> Result<Self> {
        check_clampable(&coder, latent)?;
        Ok(Self::Ablate { coder, latent })
    }

    /// The width of the activations this edit applies to, when it knows it.
    pub fn dim(&self) -> usize {
        match self {
            Self::Add { direction, .. } => direction.len(),
            Self::Clamp { coder, .. } | Self::Ablate { coder, .. } => lock(coder).d_in(),
        }
    }

    /// The edited activations.
    ///
    /// # Shapes
    /// `x` `[..., d]` → the same shape, dtype and device.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when `d` is not the edit's width; [`Error::Torch`] if libtorch
    /// fails.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let shape = x.size();
        let d = *shape.last().unwrap_or(&0);
        if d != self.dim() as i64 {
            return Err(Error::Unsupported(format!(
                "{self}: made for activations of width {}, given width {d}",
                self.dim()
            )));
        }
        match self {
            Self::Add { .. } => self.prepare(x.device())?.apply(x),
            Self::Clamp {
                coder,
                latent,
                value,
            } => clamp(&lock(coder), x, *latent, Some(*value)),
            Self::Ablate { coder, latent } => clamp(&lock(coder), x, *latent, None),
        }
    }
}

/// Edits at hook points, applied together: what a steered request carries. Clones share
/// the edits, and two steerings are [`same`](Steering::same) only when one is a clone of the
/// other (an engine batches rows of the same steering together).
#[derive(Clone, Debug)]
pub struct Steering {
    edits: Arc<[(HookPoint, Edit)]>,
}

impl Steering {
    /// The edits `edits`, each at its hook point.
    pub fn new(edits: impl IntoIterator<Item = (HookPoint, Edit)>) -> Self {
        Self {
            edits: edits.into_iter().collect(),
        }
    }

    /// One edit at one hook point.
    pub fn one(hook: HookPoint, edit: Edit) -> Self {
        Self::new([(hook, edit)])
    }

    /// The edits.
    pub fn edits(&self) -> &[(HookPoint, Edit)] {
        &self.edits
    }

    /// Whether `other` is a clone of this steering.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.edits, &other.edits)
    }
}

/// Equal when one is a clone of the other ([`Steering::same`]): edits hold tensors' worth of
/// floats, and what matters to a batch is whether its rows are steered alike.
impl PartialEq for Steering {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl fmt::Display for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (hook, edit)) in self.edits.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{edit} at {hook}")?;
        }
        Ok(())
    }
}

impl Edit {
    /// The edit ready for activations on `device`: an added direction becomes a tensor there
    /// once, rather than at every forward step (an [`Edit`] holds no tensor, so that it is
    /// `Sync`; a [`PreparedEdit`] is only `Send`, as tensors are).
    ///
    /// # Errors
    /// [`Error::Torch`] if the direction cannot be moved to `device`.
    pub fn prepare(&self, device: tch::Device) -> Result<PreparedEdit> {
        let added = match self {
            Self::Add { direction, scale } => Some(
                Tensor::f_from_slice(direction)?
                    .f_to_device(device)?
                    .f_to_kind(Kind::Float)?
                    .f_mul_scalar(*scale)?,
            ),
            Self::Clamp { .. } | Self::Ablate { .. } => None,
        };
        Ok(PreparedEdit {
            edit: self.clone(),
            added,
        })
    }
}

/// An [`Edit`] with its tensors on a device ([`Edit::prepare`]).
#[derive(Debug)]
pub struct PreparedEdit {
    edit: Edit,
    /// `scale · direction` in f32, for [`Edit::Add`].
    added: Option<Tensor>,
}

impl PreparedEdit {
    /// [`Edit::apply`].
    ///
    /// # Errors
    /// As [`Edit::apply`].
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let Some(dir) = &self.added else {
            return self.edit.apply(x);
        };
        let _guard = tch::no_grad_guard();
        let d = *x.size().last().unwrap_or(&0);
        if d != self.edit.dim() as i64 {
            return Err(Error::Unsupported(format!(
                "{}: made for activations of width {}, given width {d}",
                self.edit,
                self.edit.dim()
            )));
        }
        let dir = if dir.device() == x.device() {
            dir.shallow_clone()
        } else {
            dir.f_to_device(x.device())?
        };
        // In f32, then back: a bf16 model gets the same rounding as a forward hook adding an
        // f32 vector to its activations and casting back.
        Ok(x.f_to_kind(Kind::Float)?.f_add(&dir)?.f_to_kind(x.kind())?)
    }
}

fn check_latent(coder: &SparseCoder, latent: usize) -> Result<()> {
    if latent >= coder.width() {
        return Err(Error::Unsupported(format!(
            "latent {latent} is beyond the coder's width of {}",
            coder.width()
        )));
    }
    Ok(())
}

fn check_clampable(coder: &SharedCoder, latent: usize) -> Result<()> {
    let coder = lock(coder);
    check_latent(&coder, latent)?;
    if !coder.has_decoder() || coder.decoder_weight().is_none() {
        return Err(Error::Unsupported(format!(
            "clamping latent {latent}: the coder has no decoder"
        )));
    }
    if coder.needs_norm_scaling_factor() {
        return Err(Error::Unsupported(format!(
            "clamping latent {latent}: the coder's input scaling factor is unknown, so its \
             activations are not in the units a clamp value means; fold it in first \
             (SparseCoder::fold_norm_scaling_factor)"
        )));
    }
    if coder.is_transcoder() || coder.d_out() != coder.d_in() {
        return Err(Error::Unsupported(format!(
            "clamping latent {latent} of a transcoder: it reads one hook point and writes \
             another; steer along its decoder row at the output hook instead (Edit::steer)"
        )));
    }
    Ok(())
}

/// `x + ŷ(aᵢ = value) − ŷ(a)`; `value: None` ablates (0).
fn clamp(coder: &SparseCoder, x: &Tensor, latent: usize, value: Option<f64>) -> Result<Tensor> {
    let shape = x.size();
    let flat = x.f_reshape([-1, *shape.last().expect("checked")])?;
    let flat = flat.f_to_kind(Kind::Float)?;
    let latents = coder.encode(&flat)?;
    let index = latent as i64;
    // aᵢ per token: the value of the slot holding latent i, 0 where it did not fire.
    let current = latents
        .indices
        .f_eq(index)?
        .f_to_kind(Kind::Float)?
        .f_mul(&latents.values.f_to_kind(Kind::Float)?)?
        .f_sum_dim_intlist([-1i64].as_slice(), true, Kind::Float)?;
    let target = match value {
        Some(v) => current.f_full_like(v)?,
        None => current.f_zeros_like()?,
    };
    // The decoder is affine in the latents (plus a skip term and the input normalisation, both
    // fixed by x), so the difference of two one-latent decodes is the latent's contribution.
    let one = |v: &Tensor| -> Result<Tensor> {
        let tokens = v.size()[0];
        let single = SparseLatents {
            indices: Tensor::f_full([tokens, 1], index, (Kind::Int64, flat.device()))?,
            values: v.shallow_clone(),
        };
        coder.decode(&single, Some(&flat))
    };
    let delta = one(&target)?.f_sub(&one(&current)?)?;
    let delta = delta.f_to_device(x.device())?.f_reshape(shape.as_slice())?;
    Ok(x.f_to_kind(Kind::Float)?
        .f_add(&delta)?
        .f_to_kind(x.kind())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, InputNorm, Weights};
    use tch::Device;

    fn coder(activation: Activation, norm: InputNorm) -> SharedCoder {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let (d, w) = (6, 10);
        let coder = SparseCoder::new(
            Weights {
                w_enc: Tensor::randn([d, w], opts),
                b_enc: Tensor::randn([w], opts) * 0.1,
                w_dec: Some(Tensor::randn([w, d], opts)),
                b_dec: Tensor::randn([d], opts) * 0.1,
                w_skip: None,
            },
            activation,
        )
        .unwrap()
        .with_input_norm(norm);
        Edit::share(coder)
    }

    fn dense(coder: &SharedCoder, x: &Tensor) -> Tensor {
        let c = lock(coder);
        c.encode(x).unwrap().to_dense(c.width()).unwrap()
    }

    #[test]
    fn clamping_sets_the_latent_and_leaves_the_error_term() {
        for (act, norm) in [
            (Activation::TopK { k: 3 }, InputNorm::None),
            (Activation::Relu, InputNorm::ConstantNormRescale),
            (Activation::Relu, InputNorm::LayerNorm),
        ] {
            let coder = coder(act, norm);
            let x = Tensor::randn([2, 5, 6], (Kind::Float, Device::Cpu));
            let flat = x.reshape([10, 6]);
            let a = dense(&coder, &flat);
            let latent = a
                .sum_dim_intlist([0i64].as_slice(), false, Kind::Float)
                .argmax(0, false)
                .int64_value(&[]);
            let y = Edit::clamp(Arc::clone(&coder), latent as usize, 2.5)
                .unwrap()
                .apply(&x)
                .unwrap();
            assert_eq!(y.size(), x.size());
            // What was added is the latent's decoded contribution, so reconstructing the
            // original latents with latent i at 2.5 gives ŷ + (y − x).
            let c = lock(&coder);
            let latents = c.encode(&flat).unwrap();
            let recon = c.decode(&latents, Some(&flat)).unwrap();
            let moved = a.copy();
            let _ = moved.narrow(1, latent, 1).fill_(2.5);
            let idx = Tensor::arange(10, (Kind::Int64, Device::Cpu))
                .unsqueeze(0)
                .repeat([10, 1]);
            let want = c
                .decode(
                    &SparseLatents {
                        indices: idx,
                        values: moved,
                    },
                    Some(&flat),
                )
                .unwrap();
            let diff = (&want - &recon - (&y - &x).reshape([10, 6]))
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-4, "{norm:?}: {diff}");
        }
    }

    #[test]
    fn ablating_a_silent_latent_and_adding_nothing_change_nothing() {
        let coder = coder(Activation::TopK { k: 2 }, InputNorm::None);
        let x = Tensor::randn([1, 4, 6], (Kind::Float, Device::Cpu));
        let a = dense(&coder, &x.reshape([4, 6]));
        let silent = (0..10)
            .find(|&i| a.select(1, i).abs().max().double_value(&[]) == 0.0)
            .expect("with k = 2 of 10, some latent is silent on 4 tokens");
        let y = Edit::ablate(Arc::clone(&coder), silent as usize)
            .unwrap()
            .apply(&x)
            .unwrap();
        assert!(y.equal(&x));
        let y = Edit::add(vec![1.0f32; 6], 0.0).unwrap().apply(&x).unwrap();
        assert!(y.equal(&x));
        let y = Edit::add(vec![1.0f32; 6], 2.0).unwrap().apply(&x).unwrap();
        assert!(y.allclose(&(&x + 2.0), 1e-6, 1e-6, false));
    }

    #[test]
    fn bad_edits_are_named_errors() {
        let coder = coder(Activation::Relu, InputNorm::None);
        let msg = |r: Result<Edit>| r.unwrap_err().to_string();
        assert!(msg(Edit::clamp(Arc::clone(&coder), 10, 1.0))
            .contains("beyond the coder's width of 10"));
        assert!(msg(Edit::clamp(Arc::clone(&coder), 1, f64::NAN)).contains("clamp value NaN"));
        assert!(msg(Edit::add(Vec::<f32>::new(), 1.0)).contains("empty"));
        assert!(msg(Edit::steer(&coder, 99, 1.0)).contains("beyond"));
        let wide = Tensor::zeros([1, 1, 7], (Kind::Float, Device::Cpu));
        let e = Edit::ablate(coder, 0).unwrap().apply(&wide).unwrap_err();
        assert!(e.to_string().contains("given width 7"), "{e}");
    }
}
