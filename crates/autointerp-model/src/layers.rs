//! The building blocks of the forward pass, each written to match its transformers 4.57
//! counterpart operation for operation (dtype casts included).

use tch::{Kind, Tensor};

use crate::config::{Activation, RopeConfig};
use crate::weights::Weights;
use crate::Result;

/// `y = x Wᵀ + b` with `W` in `nn.Linear` layout `[out, in]`, contiguous: libtorch's `linear`
/// hands the transpose to BLAS as a flag, so no copy is made per call.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl Linear {
    /// # Shapes
    /// `x`: `[..., in]` → `[..., out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

/// The three norms: LayerNorm (GPT-2, NeoX), Llama's RMSNorm (`w * norm(x).to(dtype)`) and
/// Gemma's (`(norm(x) * (1 + w)).to(dtype)`, all in `f32`).
#[derive(Debug)]
pub(crate) enum Norm {
    /// `weight` and `bias` in the model dtype.
    Layer {
        weight: Tensor,
        bias: Tensor,
        eps: f64,
    },
    /// `weight` in the model dtype.
    Rms { weight: Tensor, eps: f64 },
    /// `scale` = `1 + w`, kept in `f32`.
    Gemma { scale: Tensor, eps: f64 },
}

impl Norm {
    /// # Shapes
    /// `x`: `[..., dim]` → same.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Layer { weight, bias, eps } => {
                let dim = weight.size()[0];
                Ok(x.f_layer_norm([dim], Some(weight), Some(bias), *eps, true)?)
            }
            Norm::Rms { weight, eps } => {
                let kind = x.kind();
                let normed = rms(&x.f_to_kind(Kind::Float)?, *eps)?;
                Ok(weight.f_mul(&normed.f_to_kind(kind)?)?)
            }
            Norm::Gemma { scale, eps } => {
                let kind = x.kind();
                let normed = rms(&x.f_to_kind(Kind::Float)?, *eps)?;
                Ok(normed.f_mul(scale)?.f_to_kind(kind)?)
            }
        }
    }
}

impl Norm {
    /// Maps a residual-stream *direction* through the norm as the logit lens does: the
    /// per-channel gain (`w`, Gemma's `1 + w`), and for LayerNorm the mean subtraction, which
    /// is linear and so removes the same component from `x + d` as from `x`. The division by
    /// the norm of the whole activation is left out: it depends on the context `d` is added
    /// to, and being a positive factor it scales every token's logit alike. LayerNorm's bias
    /// adds the same to every context, so it is no part of a direction's effect.
    ///
    /// # Shapes
    /// `d`: `[..., dim]` → same, in `d`'s dtype.
    pub(crate) fn direction(&self, d: &Tensor) -> Result<Tensor> {
        let kind = d.kind();
        let (gain, centre) = match self {
            Norm::Layer { weight, .. } => (weight, true),
            Norm::Rms { weight, .. } => (weight, false),
            Norm::Gemma { scale, .. } => (scale, false),
        };
        let d = d.f_to_kind(Kind::Float)?;
        let d = if centre {
            d.f_sub(&d.f_mean_dim(-1, true, Kind::Float)?)?
        } else {
            d
        };
        Ok(d.f_mul(&gain.f_to_kind(Kind::Float)?)?.f_to_kind(kind)?)
    }
}

/// `{prefix}.weight` `[out, inp]` and, with `bias`, `{prefix}.bias` `[out]`.
pub(crate) fn linear(
    w: &mut Weights,
    prefix: &str,
    out: i64,
    inp: i64,
    bias: bool,
) -> Result<Linear> {
    Ok(Linear {
        weight: w.get(&format!("{prefix}.weight"), &[out, inp])?,
        bias: if bias {
            Some(w.get(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        },
    })
}

/// A LayerNorm from `{prefix}.weight` and `{prefix}.bias`.
pub(crate) fn layer_norm(w: &mut Weights, prefix: &str, dim: i64, eps: f64) -> Result<Norm> {
    Ok(Norm::Layer {
        weight: w.get(&format!("{prefix}.weight"), &[dim])?,
        bias: w.get(&format!("{prefix}.bias"), &[dim])?,
        eps,
    })
}

/// Llama's RMSNorm from the tensor `name` (Gemma's is in [`crate::arch`]).
pub(crate) fn rms_norm(w: &mut Weights, name: &str, dim: i64, eps: f64) -> Result<Norm> {
    Ok(Norm::Rms {
        weight: w.get(name, &[dim])?,
        eps,
    })
}

/// `x * rsqrt(mean(x²) + eps)` over the last dimension.
fn rms(x: &Tensor, eps: f64) -> Result<Tensor> {
    let var = x.f_square()?.f_mean_dim(-1, true, Kind::Float)?;
    Ok(x.f_mul(&var.f_add_scalar(eps)?.f_rsqrt()?)?)
}

/// Applies an activation.
///
/// # Shapes
/// `x`: any → same.
pub(crate) fn activate(act: Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::Silu => x.f_silu()?,
        Activation::GeluTanh => x.f_gelu("tanh")?,
        Activation::Gelu => x.f_gelu("none")?,
        Activation::Relu => x.f_relu()?,
    })
}

/// RoPE inverse frequencies on the model's device.
#[derive(Debug)]
pub(crate) struct Rope {
    /// `[rotary_dim / 2]`, `f32`.
    inv_freq: Tensor,
}

impl Rope {
    pub(crate) fn new(config: &RopeConfig, device: tch::Device) -> Result<Self> {
        let inv = config.inv_freq();
        Ok(Self {
            inv_freq: Tensor::from_slice(&inv).f_to_device(device)?,
        })
    }

    /// `cos` and `sin` of `position * inv_freq`, duplicated over both halves as HF does, in `kind`.
    ///
    /// # Shapes
    /// `positions`: `[batch, seq]` (int64) → two `[batch, 1, seq, rotary_dim]`.
    pub(crate) fn cos_sin(&self, positions: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
        let freqs = positions
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(-1)?
            .f_mul(&self.inv_freq)?;
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1)?.f_unsqueeze(1)?;
        Ok((emb.f_cos()?.f_to_kind(kind)?, emb.f_sin()?.f_to_kind(kind)?))
    }
}

/// `x * cos + rotate_half(x) * sin` on the first `cos.size(-1)` dimensions of each head; the
/// rest pass through (GPT-NeoX's partial rotary).
///
/// # Shapes
/// `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, rotary_dim]` → like `x`.
pub(crate) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let head_dim = x.size()[3];
    let rot = cos.size()[3];
    let (x_rot, x_pass) = if rot == head_dim {
        (x.shallow_clone(), None)
    } else {
        (
            x.f_narrow(-1, 0, rot)?,
            Some(x.f_narrow(-1, rot, head_dim - rot)?),
        )
    };
    let half = rot / 2;
    let x1 = x_rot.f_narrow(-1, 0, half)?;
    let x2 = x_rot.f_narrow(-1, half, half)?;
    let rotated = Tensor::f_cat(&[&x2.f_neg()?, &x1], -1)?;
    let out = x_rot.f_mul(cos)?.f_add(&rotated.f_mul(sin)?)?;
    Ok(match x_pass {
        None => out,
        Some(pass) => Tensor::f_cat(&[&out, &pass], -1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn partial_rope_leaves_the_tail_alone() {
        let rope = Rope::new(
            &RopeConfig {
                theta: 10_000.0,
                rotary_dim: 4,
                scaling: None,
            },
            Device::Cpu,
        )
        .unwrap();
        let pos = Tensor::from_slice(&[0i64, 1, 2]).reshape([1, 3]);
        let (cos, sin) = rope.cos_sin(&pos, Kind::Float).unwrap();
        assert_eq!(cos.size(), [1, 1, 3, 4]);
        let x = Tensor::randn([1, 2, 3, 8], (Kind::Float, Device::Cpu));
        let y = apply_rope(&x, &cos, &sin).unwrap();
        assert!(y.narrow(-1, 4, 4).equal(&x.narrow(-1, 4, 4)));
        // Position 0 is the identity.
        assert!(y
            .narrow(2, 0, 1)
            .allclose(&x.narrow(2, 0, 1), 1e-6, 1e-6, false));
        // Rotations keep the norm of each (i, i + 2) pair.
        let n = |t: &Tensor| {
            t.narrow(-1, 0, 4)
                .square()
                .sum(Kind::Float)
                .double_value(&[])
        };
        assert!((n(&x) - n(&y)).abs() < 1e-3);
    }
}
