//! The format-independent sparse coder: weights, activation, encode, decode and metrics.

use std::path::Path;

use autointerp_core::HookPoint;
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// How a sparse coder turns pre-activations `pre = x' W_enc + b_enc` into latents.
#[derive(Debug)]
#[non_exhaustive]
pub enum Activation {
    /// Keep the `k` largest pre-activations of each token, then ReLU (sparsify, SAE-Lens `topk`).
    TopK {
        /// Latents kept per token.
        k: usize,
    },
    /// sparsify's `groupmax`: ReLU, then the largest latent of each of `k` equal, contiguous
    /// groups of latents.
    GroupMax {
        /// Number of groups (and of latents per token).
        k: usize,
    },
    /// ReLU: every positive pre-activation (SAE-Lens `standard`).
    Relu,
    /// JumpReLU: `pre` where `pre > threshold` and `pre > 0`, else 0 (SAE-Lens `jumprelu`,
    /// GemmaScope).
    JumpRelu {
        /// Per-latent thresholds, `[width]`.
        threshold: Tensor,
    },
    /// Gated SAE (SAE-Lens `gated`): with `h = x' W_enc`, latent `i` is
    /// `[h_i + b_gate_i > 0] * relu(h_i * exp(r_mag_i) + b_mag_i)`. `b_enc` is unused.
    Gated {
        /// Gate bias, `[width]`.
        b_gate: Tensor,
        /// Log magnitude scale, `[width]`.
        r_mag: Tensor,
        /// Magnitude bias, `[width]`.
        b_mag: Tensor,
    },
}

impl Activation {
    /// A short name: `topk`, `groupmax`, `relu`, `jumprelu` or `gated`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TopK { .. } => "topk",
            Self::GroupMax { .. } => "groupmax",
            Self::Relu => "relu",
            Self::JumpRelu { .. } => "jumprelu",
            Self::Gated { .. } => "gated",
        }
    }
}

/// Per-token normalisation of the input that the coder undoes on its output (SAE-Lens
/// `normalize_activations`). SAE-Lens's `expected_average_only_in` is a constant factor and is
/// folded into the weights at load time instead (see [`SparseCoder::fold_norm_scaling_factor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InputNorm {
    /// The input is used as it is.
    #[default]
    None,
    /// `constant_norm_rescale`: `x * sqrt(d_in) / ‖x‖` per token; the output is divided by the
    /// same factor.
    ConstantNormRescale,
    /// `layer_norm`: `(x - mean) / (std + 1e-5)` per token (`std` unbiased, as `torch.std`); the
    /// output is multiplied by `std` and shifted by `mean`.
    LayerNorm,
}

/// The checkpoint format a coder was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// EleutherAI sparsify: `cfg.json` + `sae.safetensors`.
    Sparsify,
    /// SAE-Lens: `cfg.json` + `sae_weights.safetensors`.
    SaeLens,
    /// GemmaScope: `params.npz`.
    GemmaScope,
    /// MLP neurons, no weights.
    Neurons,
    /// Built in memory with [`SparseCoder::new`].
    InMemory,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sparsify => "sparsify",
            Self::SaeLens => "SAE-Lens",
            Self::GemmaScope => "GemmaScope",
            Self::Neurons => "neurons",
            Self::InMemory => "in-memory",
        })
    }
}

/// The nonzero latents of a batch of tokens, as fixed-width rows of (index, value) pairs.
///
/// TopK and group-max coders fill exactly `k` slots per token (a slot whose ReLU'd value is 0 is
/// inactive). Coders with a variable number of active latents (ReLU, JumpReLU, gated, neurons
/// without `k`) get as many slots as the busiest token of the batch needs, in increasing latent
/// order, and the rest of each row is padding: index 0, value 0. A value of 0 always means
/// "not active".
///
/// # Shapes
/// `indices` `[tokens, slots]` (int64), `values` `[tokens, slots]`.
#[derive(Debug)]
pub struct SparseLatents {
    /// Latent indices.
    pub indices: Tensor,
    /// Latent activations; 0 marks an inactive slot or padding.
    pub values: Tensor,
}

impl SparseLatents {
    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.indices.size()[0] as usize
    }

    /// Active latents per token.
    ///
    /// # Shapes
    /// → `[tokens]` int64.
    pub fn l0(&self) -> Tensor {
        self.values.gt(0.0).sum_dim_intlist(-1, false, Kind::Int64)
    }

    /// Mean number of active latents per token.
    pub fn mean_l0(&self) -> f64 {
        if self.tokens() == 0 {
            return 0.0;
        }
        self.values.gt(0.0).sum(Kind::Double).double_value(&[]) / self.tokens() as f64
    }

    /// Which latents fired (had a positive value) on at least one token.
    ///
    /// # Shapes
    /// → `[width]` bool.
    pub fn fired(&self, width: usize) -> Result<Tensor> {
        let active = self.indices.f_masked_select(&self.values.gt(0.0))?;
        Ok(active.f_bincount::<Tensor>(None, width as i64)?.gt(0))
    }

    /// The latents as a dense matrix. This materialises `[tokens, width]`: meant for tests and
    /// small widths, not for the caching path.
    ///
    /// # Shapes
    /// → `[tokens, width]`.
    pub fn to_dense(&self, width: usize) -> Result<Tensor> {
        let zeros = Tensor::zeros(
            [self.tokens() as i64, width as i64],
            (self.values.kind(), self.values.device()),
        );
        // scatter_add: padding slots (index 0, value 0) must not overwrite a real latent 0.
        Ok(zeros.f_scatter_add(-1, &self.indices, &self.values)?)
    }
}

/// Reconstruction and sparsity metrics of a coder on one batch.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// Fraction of variance unexplained: `Σ‖y − ŷ‖² / Σ‖y − mean(y)‖²`.
    pub fvu: f64,
    /// Mean number of active latents per token.
    pub mean_l0: f64,
    /// Fraction of latents that fired on no token of the batch.
    pub dead_fraction: f64,
}

/// The weights of a dictionary coder, in the orientation used for `x @ W`.
///
/// # Shapes
/// `w_enc` `[d_in, width]`, `b_enc` `[width]`, `w_dec` `[width, d_out]`, `b_dec` `[d_out]`,
/// `w_skip` `[d_out, d_in]` (applied as `x @ w_skip^T`, as sparsify and SAE-Lens store it).
#[derive(Debug)]
pub struct Weights {
    /// Encoder matrix.
    pub w_enc: Tensor,
    /// Encoder bias (unused by [`Activation::Gated`]; pass zeros).
    pub b_enc: Tensor,
    /// Decoder matrix; `None` for encoder-only checkpoints.
    pub w_dec: Option<Tensor>,
    /// Decoder bias.
    pub b_dec: Tensor,
    /// Linear skip connection of skip transcoders.
    pub w_skip: Option<Tensor>,
}

#[derive(Debug)]
pub(crate) struct Dictionary {
    /// `[d_in, width]`; may be a transposed view of a `[width, d_in]` file tensor.
    w_enc: Tensor,
    b_enc: Tensor,
    w_dec: Option<Tensor>,
    b_dec: Tensor,
    /// `[d_in, d_out]` view.
    w_skip: Option<Tensor>,
    activation: Activation,
    apply_b_dec_to_input: bool,
    input_norm: InputNorm,
    /// `expected_average_only_in` without a known factor: encoded as it is, with a warning.
    unfolded_norm_scaling: bool,
}

#[derive(Debug)]
enum Inner {
    Dictionary(Box<Dictionary>),
    /// The input is the latent vector itself.
    Neurons {
        d: usize,
        k: Option<usize>,
    },
}

/// A sparse autoencoder, transcoder, or the neurons of an MLP, as one encoder:
///
/// ```text
/// x' = norm(x) − (b_dec if apply_b_dec_to_input)
/// latents = act(x' W_enc + b_enc)                   (sparse: indices + values)
/// ŷ = denorm(latents W_dec + b_dec) (+ x W_skip^T)
/// ```
///
/// Load one with [`SparseCoder::load`] (any format, one folder or a repo of many),
/// [`load_sparsify`](SparseCoder::load_sparsify), [`load_saelens`](SparseCoder::load_saelens),
/// [`load_gemmascope`](SparseCoder::load_gemmascope), or build one with [`SparseCoder::new`] /
/// [`SparseCoder::neurons`].
#[derive(Debug)]
pub struct SparseCoder {
    inner: Inner,
    hook: Option<HookPoint>,
    format: Format,
    transcoder: bool,
}

/// `Kind::Float` on the CPU; file tensors of other kinds are converted on load.
pub(crate) fn float(t: Tensor, device: Device) -> Tensor {
    t.to_kind(Kind::Float).to_device(device)
}

/// A 2-D tensor's values, row-major, as f32 on the CPU.
///
/// # Shapes
/// `t` `[rows, cols]` → `rows * cols` values.
fn flat_rows(t: &Tensor) -> Result<Vec<f32>> {
    let flat = t
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?
        .f_view([-1])?;
    Ok(Vec::<f32>::try_from(&flat)?)
}

impl SparseCoder {
    /// Builds a coder from weights in memory. `b_dec` is subtracted from the input when the
    /// coder reconstructs its input (`d_out == d_in` and no skip connection); change that with
    /// [`with_apply_b_dec_to_input`](Self::with_apply_b_dec_to_input).
    pub fn new(weights: Weights, activation: Activation) -> Result<Self> {
        let dict = Dictionary::checked(weights, activation, Path::new("(in-memory weights)"))?;
        let reconstructs = dict.d_out() == dict.d_in() && dict.w_skip.is_none();
        Ok(Self::from_dictionary(dict, Format::InMemory).with_apply_b_dec_to_input(reconstructs))
    }

    pub(crate) fn from_dictionary(dict: Dictionary, format: Format) -> Self {
        Self {
            inner: Inner::Dictionary(Box::new(dict)),
            hook: None,
            format,
            transcoder: false,
        }
    }

    /// MLP neurons as latents (the OpenAI neuron-explainer baseline): the caller passes the MLP's
    /// hidden activations (`layers.{i}.mlp.hidden`) and they are the latents. With `k`, only the
    /// `k` largest activations of each token are kept; without, every positive one. Negative
    /// activations count as inactive (value 0). `decode` scatters the kept activations back.
    pub fn neurons(d_mlp: usize, k: Option<usize>) -> Result<Self> {
        if d_mlp == 0 || k.is_some_and(|k| k == 0 || k > d_mlp) {
            return Err(Error::Unsupported(format!(
                "neurons: need 1 <= k <= d_mlp, got k = {k:?}, d_mlp = {d_mlp}"
            )));
        }
        Ok(Self {
            inner: Inner::Neurons { d: d_mlp, k },
            hook: None,
            format: Format::Neurons,
            transcoder: false,
        })
    }

    /// Sets the hook point the coder reads.
    #[must_use]
    pub fn with_hook(mut self, hook: HookPoint) -> Self {
        self.hook = Some(hook);
        self
    }

    pub(crate) fn with_hook_opt(mut self, hook: Option<HookPoint>) -> Self {
        self.hook = hook;
        self
    }

    /// Marks the coder as a transcoder: its output is compared with a different target than its
    /// input (see [`metrics`](Self::metrics)).
    #[must_use]
    pub fn with_transcoder(mut self, transcoder: bool) -> Self {
        self.transcoder = transcoder;
        self
    }

    /// Whether `b_dec` is subtracted from the input before encoding. Ignored by neurons.
    #[must_use]
    pub fn with_apply_b_dec_to_input(mut self, apply: bool) -> Self {
        if let Inner::Dictionary(d) = &mut self.inner {
            d.apply_b_dec_to_input = apply && d.d_out() == d.d_in();
        }
        self
    }

    /// Per-token input normalisation. Ignored by neurons.
    #[must_use]
    pub fn with_input_norm(mut self, norm: InputNorm) -> Self {
        if let Inner::Dictionary(d) = &mut self.inner {
            d.input_norm = norm;
        }
        self
    }

    pub(crate) fn with_unfolded_norm_scaling(mut self) -> Self {
        if let Inner::Dictionary(d) = &mut self.inner {
            d.unfolded_norm_scaling = true;
        }
        self
    }

    /// Folds SAE-Lens's `expected_average_only_in` factor `s` into the weights, as SAE-Lens's
    /// `fold_activation_norm_scaling_factor` does: `W_enc *= s`, `W_dec /= s`, `b_dec /= s`.
    /// The folded coder on `x` equals the original on `s·x`, with its output divided by `s`.
    /// The loaders call this when they find the factor (`activation_scaler.json` beside the
    /// weights, or `norm_scaling_factor` in `cfg.json`); call it yourself with the factor from
    /// SAE-Lens's `pretrained_saes.yaml` otherwise.
    pub fn fold_norm_scaling_factor(&mut self, s: f64) -> Result<()> {
        let Inner::Dictionary(d) = &mut self.inner else {
            return Err(Error::Unsupported(
                "neurons have no weights to fold a factor into".into(),
            ));
        };
        let _guard = tch::no_grad_guard();
        d.w_enc = d.w_enc.f_mul_scalar(s)?;
        if let Some(w) = &d.w_dec {
            d.w_dec = Some(w.f_div_scalar(s)?);
        }
        d.b_dec = d.b_dec.f_div_scalar(s)?;
        d.unfolded_norm_scaling = false;
        Ok(())
    }

    /// Whether the checkpoint asked for `expected_average_only_in` normalisation but no factor
    /// was found: the coder then encodes its input unscaled (as SAE-Lens does, with a warning).
    pub fn needs_norm_scaling_factor(&self) -> bool {
        matches!(&self.inner, Inner::Dictionary(d) if d.unfolded_norm_scaling)
    }

    /// Moves the weights to `device`.
    #[must_use]
    pub fn to_device(mut self, device: Device) -> Self {
        if let Inner::Dictionary(d) = &mut self.inner {
            let mv = |t: &Tensor| t.to_device(device);
            d.w_enc = mv(&d.w_enc);
            d.b_enc = mv(&d.b_enc);
            d.w_dec = d.w_dec.as_ref().map(mv);
            d.b_dec = mv(&d.b_dec);
            d.w_skip = d.w_skip.as_ref().map(mv);
            d.activation = match std::mem::replace(&mut d.activation, Activation::Relu) {
                Activation::JumpRelu { threshold } => Activation::JumpRelu {
                    threshold: mv(&threshold),
                },
                Activation::Gated {
                    b_gate,
                    r_mag,
                    b_mag,
                } => Activation::Gated {
                    b_gate: mv(&b_gate),
                    r_mag: mv(&r_mag),
                    b_mag: mv(&b_mag),
                },
                other => other,
            };
        }
        self
    }

    /// The device the weights live on (the CPU for neurons).
    pub fn device(&self) -> Device {
        match &self.inner {
            Inner::Dictionary(d) => d.w_enc.device(),
            Inner::Neurons { .. } => Device::Cpu,
        }
    }

    /// Input dimension.
    pub fn d_in(&self) -> usize {
        match &self.inner {
            Inner::Dictionary(d) => d.d_in(),
            Inner::Neurons { d, .. } => *d,
        }
    }

    /// Output dimension of `decode` (`d_in` except for transcoders).
    pub fn d_out(&self) -> usize {
        match &self.inner {
            Inner::Dictionary(d) => d.d_out(),
            Inner::Neurons { d, .. } => *d,
        }
    }

    /// Number of latents.
    pub fn width(&self) -> usize {
        match &self.inner {
            Inner::Dictionary(d) => d.width(),
            Inner::Neurons { d, .. } => *d,
        }
    }

    /// Latents kept per token, for TopK and group-max coders and neurons with `k`.
    pub fn k(&self) -> Option<usize> {
        match &self.inner {
            Inner::Dictionary(d) => match d.activation {
                Activation::TopK { k } | Activation::GroupMax { k } => Some(k),
                _ => None,
            },
            Inner::Neurons { k, .. } => *k,
        }
    }

    /// The activation, `None` for neurons.
    pub fn activation(&self) -> Option<&Activation> {
        match &self.inner {
            Inner::Dictionary(d) => Some(&d.activation),
            Inner::Neurons { .. } => None,
        }
    }

    /// The per-token input normalisation.
    pub fn input_norm(&self) -> InputNorm {
        match &self.inner {
            Inner::Dictionary(d) => d.input_norm,
            Inner::Neurons { .. } => InputNorm::None,
        }
    }

    /// Whether `b_dec` is subtracted from the input before encoding.
    pub fn applies_b_dec_to_input(&self) -> bool {
        matches!(&self.inner, Inner::Dictionary(d) if d.apply_b_dec_to_input)
    }

    /// The hook point the coder reads, when the checkpoint says (for a transcoder, its input:
    /// e.g. `layers.6.mlp.input` for a sparsify transcoder stored under `layers.6.mlp`).
    pub fn hook(&self) -> Option<HookPoint> {
        self.hook
    }

    /// The checkpoint format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether this is a transcoder (it predicts another activation than its input).
    pub fn is_transcoder(&self) -> bool {
        self.transcoder
    }

    /// Each latent's encoder direction (a column of `W_enc`), as `width` rows of `d_in` values,
    /// row-major, on the CPU: what delphi's `encoder_similarity` neighbours compare.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for neurons, which have no weights.
    ///
    /// # Shapes
    /// returns `[width, d_in]`, flattened.
    pub fn encoder_rows(&self) -> Result<Vec<f32>> {
        match &self.inner {
            Inner::Dictionary(d) => flat_rows(&d.w_enc.tr()),
            Inner::Neurons { .. } => Err(Error::Unsupported(
                "MLP neurons have no encoder weights".into(),
            )),
        }
    }

    /// Each latent's decoder direction (a row of `W_dec`), as `width` rows of `d_out` values,
    /// row-major, on the CPU: what delphi's `decoder_similarity` neighbours compare.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for neurons and for checkpoints saved without a decoder.
    ///
    /// # Shapes
    /// returns `[width, d_out]`, flattened.
    pub fn decoder_rows(&self) -> Result<Vec<f32>> {
        match &self.inner {
            Inner::Dictionary(d) => match &d.w_dec {
                Some(w) => flat_rows(w),
                None => Err(Error::Unsupported(
                    "the checkpoint has no decoder weights (W_dec)".into(),
                )),
            },
            Inner::Neurons { .. } => Err(Error::Unsupported(
                "MLP neurons have no decoder weights".into(),
            )),
        }
    }

    /// Whether [`decode`](Self::decode) is available.
    pub fn has_decoder(&self) -> bool {
        match &self.inner {
            Inner::Dictionary(d) => d.w_dec.is_some(),
            Inner::Neurons { .. } => true,
        }
    }

    /// The decoder matrix: row `i` is latent `i`'s direction in the output space, as
    /// [`decode`](Self::decode) adds it (a folded norm scaling factor included); `None` for
    /// [`neurons`](Self::neurons) and encoder-only checkpoints. A transcoder's rows live at its
    /// output, not at [`hook`](Self::hook).
    ///
    /// # Shapes
    /// `[width, d_out]`.
    pub fn decoder_weight(&self) -> Option<&Tensor> {
        match &self.inner {
            Inner::Dictionary(d) => d.w_dec.as_ref(),
            Inner::Neurons { .. } => None,
        }
    }

    /// Checks that activations of dimension `d_model` read at `hook` (or at the coder's own hook
    /// point when `None`) fit this coder. Call once before streaming a model's activations in.
    pub fn check_input(&self, hook: Option<HookPoint>, d_model: usize) -> Result<()> {
        if d_model != self.d_in() {
            return Err(Error::InputDim {
                got: d_model as i64,
                expected: self.d_in() as i64,
                hook: hook.or(self.hook),
            });
        }
        Ok(())
    }

    fn check_x(&self, x: &Tensor) -> Result<()> {
        let shape = x.size();
        let d_in = self.d_in() as i64;
        match shape[..] {
            [_, d] if d == d_in => Ok(()),
            [_, d] => Err(Error::InputDim {
                got: d,
                expected: d_in,
                hook: self.hook,
            }),
            _ => Err(Error::InputShape {
                shape,
                d_in,
                hook: self.hook,
            }),
        }
    }

    /// Encodes activations into sparse latents. Only the pre-activation matmul is dense
    /// (`[tokens, width]`); latents are selected from it without building a dense latent matrix.
    ///
    /// # Shapes
    /// `x` `[tokens, d_in]` → indices and values `[tokens, slots]` (see [`SparseLatents`]).
    pub fn encode(&self, x: &Tensor) -> Result<SparseLatents> {
        let _guard = tch::no_grad_guard();
        self.check_x(x)?;
        match &self.inner {
            Inner::Dictionary(d) => d.encode(x),
            Inner::Neurons { k, .. } => {
                let x = x.to_kind(Kind::Float);
                match k {
                    Some(k) => {
                        let (values, indices) = x.f_topk(*k as i64, -1, true, true)?;
                        Ok(SparseLatents {
                            indices,
                            values: values.relu(),
                        })
                    }
                    None => compact(&x, &x.gt(0.0)),
                }
            }
        }
    }

    /// Reconstructs the input (or, for a transcoder, predicts the output) from latents. `x`, the
    /// input that was encoded, is needed by skip connections and per-token input normalisation;
    /// without it those coders return an error.
    ///
    /// # Shapes
    /// latents `[tokens, slots]`, `x` `[tokens, d_in]` → `[tokens, d_out]`.
    pub fn decode(&self, latents: &SparseLatents, x: Option<&Tensor>) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        if let Some(x) = x {
            self.check_x(x)?;
        }
        match &self.inner {
            Inner::Dictionary(d) => d.decode(latents, x, self.transcoder),
            Inner::Neurons { .. } => latents.to_dense(self.width()),
        }
    }

    /// Encodes and decodes.
    ///
    /// # Shapes
    /// `x` `[tokens, d_in]` → latents and `[tokens, d_out]`.
    pub fn forward(&self, x: &Tensor) -> Result<(SparseLatents, Tensor)> {
        let latents = self.encode(x)?;
        let out = self.decode(&latents, Some(x))?;
        Ok((latents, out))
    }

    /// Fraction of variance unexplained of the reconstruction of `target` from `x`:
    /// `Σ‖target − ŷ‖² / Σ‖target − mean(target)‖²` (means over tokens, as sparsify).
    ///
    /// # Shapes
    /// `x` `[tokens, d_in]`, `target` `[tokens, d_out]`.
    pub fn fvu(&self, x: &Tensor, target: &Tensor) -> Result<f64> {
        let (_, recon) = self.forward(x)?;
        fvu(&recon, target)
    }

    /// FVU, mean L0 and the fraction of dead latents on a batch. `target` defaults to `x`;
    /// transcoders need it (their output predicts another activation).
    ///
    /// # Shapes
    /// `x` `[tokens, d_in]`, `target` `[tokens, d_out]`.
    pub fn metrics(&self, x: &Tensor, target: Option<&Tensor>) -> Result<Metrics> {
        let _guard = tch::no_grad_guard();
        let target = match target {
            Some(t) => t,
            None if self.transcoder => {
                return Err(Error::Unsupported(
                    "metrics: a transcoder needs the target activations it predicts".into(),
                ))
            }
            None => x,
        };
        let (latents, recon) = self.forward(x)?;
        let fired = latents
            .fired(self.width())?
            .sum(Kind::Double)
            .double_value(&[]);
        Ok(Metrics {
            fvu: fvu(&recon, target)?,
            mean_l0: latents.mean_l0(),
            dead_fraction: 1.0 - fired / self.width() as f64,
        })
    }
}

/// `Σ‖target − recon‖² / Σ‖target − mean(target)‖²`.
fn fvu(recon: &Tensor, target: &Tensor) -> Result<f64> {
    if recon.size() != target.size() {
        return Err(Error::Unsupported(format!(
            "fvu: target of shape {:?} does not match the output's {:?}",
            target.size(),
            recon.size()
        )));
    }
    let target = target.to_device(recon.device()).to_kind(Kind::Float);
    let err = (&target - recon).square().sum(Kind::Double);
    let var = (&target - target.mean_dim(0, true, Kind::Float))
        .square()
        .sum(Kind::Double);
    Ok(err.double_value(&[]) / var.double_value(&[]).max(f64::MIN_POSITIVE))
}

/// Packs the entries of `values` where `mask` holds into padded rows, in increasing column order,
/// without a dense output: `nonzero` lists them, and each lands at slot `rank within its row`.
///
/// # Shapes
/// `values`, `mask` `[tokens, width]` → `[tokens, max active per token]` (at least 1).
fn compact(values: &Tensor, mask: &Tensor) -> Result<SparseLatents> {
    let (tokens, width) = (values.size()[0], values.size()[1]);
    let device = values.device();
    let nz = mask.f_nonzero()?; // [n, 2], row-major order
    let n = nz.size()[0];
    let rows = nz.select(1, 0);
    let cols = nz.select(1, 1);
    let counts = rows.f_bincount::<Tensor>(None, tokens)?;
    let slots = if n == 0 {
        1
    } else {
        counts.max().int64_value(&[]).max(1)
    };
    let starts = counts.cumsum(0, Kind::Int64) - &counts;
    let rank = Tensor::arange(n, (Kind::Int64, device)) - starts.f_index_select(0, &rows)?;
    let flat = &rows * slots + rank;
    let picked = values
        .reshape([-1])
        .f_index_select(0, &(&rows * width + &cols))?;
    let indices =
        Tensor::zeros([tokens * slots], (Kind::Int64, device)).f_scatter(0, &flat, &cols)?;
    let vals =
        Tensor::zeros([tokens * slots], (values.kind(), device)).f_scatter(0, &flat, &picked)?;
    Ok(SparseLatents {
        indices: indices.reshape([tokens, slots]),
        values: vals.reshape([tokens, slots]),
    })
}

impl Dictionary {
    /// Validates shapes against each other; `source` names the file in errors.
    pub(crate) fn checked(w: Weights, activation: Activation, source: &Path) -> Result<Self> {
        let err = |tensor: &str, got: Vec<i64>, want: String| Error::Weight {
            path: source.to_path_buf(),
            tensor: tensor.into(),
            problem: format!("shape {got:?}, expected {want}"),
        };
        let [d_in, width] = w.w_enc.size()[..] else {
            return Err(err("W_enc", w.w_enc.size(), "[d_in, width]".into()));
        };
        if w.b_enc.size() != [width] {
            return Err(err("b_enc", w.b_enc.size(), format!("[{width}]")));
        }
        let d_out = w.b_dec.size().first().copied().unwrap_or(0);
        if w.b_dec.dim() != 1 {
            return Err(err("b_dec", w.b_dec.size(), "[d_out]".into()));
        }
        if let Some(w_dec) = &w.w_dec {
            if w_dec.size() != [width, d_out] {
                return Err(err("W_dec", w_dec.size(), format!("[{width}, {d_out}]")));
            }
        }
        if let Some(s) = &w.w_skip {
            if s.size() != [d_out, d_in] {
                return Err(err("W_skip", s.size(), format!("[{d_out}, {d_in}]")));
            }
        }
        let bad_k = |k: usize| Error::Config {
            path: source.to_path_buf(),
            problem: format!("k = {k} must be between 1 and the {width} latents"),
        };
        match &activation {
            Activation::TopK { k } if *k == 0 || *k as i64 > width => return Err(bad_k(*k)),
            Activation::GroupMax { k } if *k == 0 || *k as i64 > width => return Err(bad_k(*k)),
            Activation::GroupMax { k } if width % *k as i64 != 0 => {
                return Err(Error::Config {
                    path: source.to_path_buf(),
                    problem: format!("groupmax needs k = {k} to divide the {width} latents"),
                })
            }
            Activation::JumpRelu { threshold } if threshold.size() != [width] => {
                return Err(err("threshold", threshold.size(), format!("[{width}]")))
            }
            Activation::Gated {
                b_gate,
                r_mag,
                b_mag,
            } => {
                for (name, t) in [("b_gate", b_gate), ("r_mag", r_mag), ("b_mag", b_mag)] {
                    if t.size() != [width] {
                        return Err(err(name, t.size(), format!("[{width}]")));
                    }
                }
            }
            _ => {}
        }
        Ok(Self {
            w_enc: w.w_enc,
            b_enc: w.b_enc,
            w_dec: w.w_dec,
            b_dec: w.b_dec,
            w_skip: w.w_skip.map(|s| s.tr()),
            activation,
            apply_b_dec_to_input: false,
            input_norm: InputNorm::None,
            unfolded_norm_scaling: false,
        })
    }

    fn d_in(&self) -> usize {
        self.w_enc.size()[0] as usize
    }

    fn width(&self) -> usize {
        self.w_enc.size()[1] as usize
    }

    fn d_out(&self) -> usize {
        self.b_dec.size()[0] as usize
    }

    fn encode(&self, x: &Tensor) -> Result<SparseLatents> {
        let x = x.to_device(self.w_enc.device()).to_kind(self.w_enc.kind());
        let x = match self.input_norm {
            InputNorm::None => x,
            InputNorm::ConstantNormRescale => {
                let norm = x.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?;
                &x * (self.d_in() as f64).sqrt() / norm
            }
            InputNorm::LayerNorm => {
                let centered = &x - x.mean_dim(-1, true, x.kind());
                let std = centered.f_std_dim([-1i64].as_slice(), true, true)?;
                centered / (std + 1e-5)
            }
        };
        let x = if self.apply_b_dec_to_input {
            x - &self.b_dec
        } else {
            x
        };
        // The one dense [tokens, width] tensor: the pre-activations, updated in place.
        let mut h = x.f_matmul(&self.w_enc)?;
        match &self.activation {
            Activation::TopK { k } => {
                let _ = h.f_add_(&self.b_enc)?;
                let (values, indices) = h.f_topk(*k as i64, -1, true, true)?;
                Ok(SparseLatents {
                    indices,
                    values: values.relu(),
                })
            }
            Activation::GroupMax { k } => {
                let _ = h.f_add_(&self.b_enc)?.f_relu_()?;
                let group = self.width() as i64 / *k as i64;
                let (values, local) = h
                    .f_unflatten(-1, [*k as i64, group])?
                    .f_max_dim(-1, false)?;
                let offsets = Tensor::arange_start_step(
                    0,
                    self.width() as i64,
                    group,
                    (Kind::Int64, h.device()),
                );
                Ok(SparseLatents {
                    indices: local + offsets,
                    values,
                })
            }
            Activation::Relu => {
                let _ = h.f_add_(&self.b_enc)?;
                compact(&h, &h.gt(0.0))
            }
            Activation::JumpRelu { threshold } => {
                let _ = h.f_add_(&self.b_enc)?;
                let threshold = threshold.clamp_min(0.0);
                compact(&h, &h.f_gt_tensor(&threshold)?)
            }
            Activation::Gated {
                b_gate,
                r_mag,
                b_mag,
            } => {
                let gate = h.f_add(b_gate)?.gt(0.0);
                let _ = h.f_mul_(&r_mag.exp())?.f_add_(b_mag)?;
                let mask = gate.f_logical_and(&h.gt(0.0))?;
                compact(&h, &mask)
            }
        }
    }

    fn decode(
        &self,
        latents: &SparseLatents,
        x: Option<&Tensor>,
        transcoder: bool,
    ) -> Result<Tensor> {
        let w_dec = self.w_dec.as_ref().ok_or_else(|| {
            Error::Unsupported("decode: this checkpoint has no decoder (W_dec)".into())
        })?;
        let need_x =
            |why: &str| Error::Unsupported(format!("decode: {why} needs the encoded input `x`"));
        let (tokens, slots) = (latents.indices.size()[0], latents.indices.size()[1]);
        let device = w_dec.device();
        let indices = latents.indices.to_device(device);
        let values = latents.values.to_device(device).to_kind(w_dec.kind());
        let rows = w_dec
            .f_index_select(0, &indices.reshape([-1]))?
            .reshape([tokens, slots, -1]);
        let mut out = values.unsqueeze(1).f_bmm(&rows)?.squeeze_dim(1) + &self.b_dec;
        let x = x.map(|x| x.to_device(device).to_kind(w_dec.kind()));
        // SAE-Lens's transcoders do not undo the input normalisation on their output.
        if !transcoder {
            match self.input_norm {
                InputNorm::None => {}
                InputNorm::ConstantNormRescale => {
                    let x = x.as_ref().ok_or_else(|| need_x("constant_norm_rescale"))?;
                    let norm = x.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?;
                    out = out * norm / (self.d_in() as f64).sqrt();
                }
                InputNorm::LayerNorm => {
                    let x = x.as_ref().ok_or_else(|| need_x("layer_norm"))?;
                    let mean = x.mean_dim(-1, true, x.kind());
                    let std = (x - &mean).f_std_dim([-1i64].as_slice(), true, true)?;
                    out = out * std + mean;
                }
            }
        }
        if let Some(skip) = &self.w_skip {
            let x = x.as_ref().ok_or_else(|| need_x("a skip connection"))?;
            out += x.f_matmul(skip)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(d_in: i64, width: i64, activation: Activation) -> SparseCoder {
        let opts = (Kind::Float, Device::Cpu);
        SparseCoder::new(
            Weights {
                w_enc: Tensor::randn([d_in, width], opts),
                b_enc: Tensor::randn([width], opts) * 0.1,
                w_dec: Some(Tensor::randn([width, d_in], opts)),
                b_dec: Tensor::randn([d_in], opts) * 0.1,
                w_skip: None,
            },
            activation,
        )
        .unwrap()
    }

    #[test]
    fn latent_rows_are_encoder_columns_and_decoder_rows() {
        let opts = (Kind::Float, Device::Cpu);
        // d_in 2, width 3.
        let w_enc = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([2, 3]);
        let w_dec = Tensor::from_slice(&[7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0]).reshape([3, 2]);
        let coder = SparseCoder::new(
            Weights {
                w_enc,
                b_enc: Tensor::zeros([3], opts),
                w_dec: Some(w_dec),
                b_dec: Tensor::zeros([2], opts),
                w_skip: None,
            },
            Activation::TopK { k: 1 },
        )
        .unwrap();
        assert_eq!(
            coder.encoder_rows().unwrap(),
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
        assert_eq!(
            coder.decoder_rows().unwrap(),
            [7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
        );
        let neurons = SparseCoder::neurons(4, None).unwrap();
        assert!(neurons.encoder_rows().is_err() && neurons.decoder_rows().is_err());
    }

    #[test]
    fn the_decoder_rows_are_what_decode_adds() {
        let mut sae = random(6, 10, Activation::TopK { k: 1 });
        sae.fold_norm_scaling_factor(2.0).unwrap();
        let latents = SparseLatents {
            indices: Tensor::from_slice(&[3i64]).reshape([1, 1]),
            values: Tensor::from_slice(&[1.0f32]).reshape([1, 1]),
        };
        let Inner::Dictionary(d) = &sae.inner else {
            unreachable!()
        };
        let direction = sae.decode(&latents, None).unwrap() - &d.b_dec;
        let row = sae.decoder_weight().unwrap().get(3);
        assert!(direction.squeeze().allclose(&row, 1e-6, 1e-6, false));
        assert!(SparseCoder::neurons(8, None)
            .unwrap()
            .decoder_weight()
            .is_none());
    }

    #[test]
    fn compact_packs_rows_in_column_order_with_padding() {
        let values = Tensor::from_slice(&[
            0.0f32, 2.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0,
        ])
        .reshape([3, 4]);
        let latents = compact(&values, &values.gt(0.0)).unwrap();
        assert_eq!(latents.indices.size(), [3, 2]);
        let idx: Vec<i64> = latents.indices.reshape([-1]).try_into().unwrap();
        let val: Vec<f32> = latents.values.reshape([-1]).try_into().unwrap();
        assert_eq!(idx, [1, 3, 0, 0, 0, 0]);
        assert_eq!(val, [2.0, 3.0, 0.0, 0.0, 5.0, 0.0]);
        assert!(latents.to_dense(4).unwrap().equal(&values));
        let l0: Vec<i64> = latents.l0().try_into().unwrap();
        assert_eq!(l0, [2, 0, 1]);

        let none = compact(&values, &values.gt(10.0)).unwrap();
        assert_eq!(none.indices.size(), [3, 1]);
        assert_eq!(none.mean_l0(), 0.0);
    }

    #[test]
    fn sparse_encode_equals_the_dense_definitions() {
        tch::manual_seed(1);
        let x = Tensor::randn([6, 8], (Kind::Float, Device::Cpu));
        let relu = random(8, 32, Activation::Relu);
        let Inner::Dictionary(d) = &relu.inner else {
            unreachable!()
        };
        let pre = (&x - &d.b_dec).matmul(&d.w_enc) + &d.b_enc;
        let dense = relu.encode(&x).unwrap().to_dense(32).unwrap();
        assert!(dense.allclose(&pre.relu(), 1e-5, 1e-5, false));

        let threshold = Tensor::rand([32], (Kind::Float, Device::Cpu));
        let jump = random(
            8,
            32,
            Activation::JumpRelu {
                threshold: threshold.shallow_clone(),
            },
        );
        let Inner::Dictionary(d) = &jump.inner else {
            unreachable!()
        };
        let pre = (&x - &d.b_dec).matmul(&d.w_enc) + &d.b_enc;
        let want = pre.relu() * pre.gt_tensor(&threshold).to_kind(Kind::Float);
        assert!(jump
            .encode(&x)
            .unwrap()
            .to_dense(32)
            .unwrap()
            .allclose(&want, 1e-5, 1e-5, false));

        // Decoding sparse latents equals the dense product.
        let latents = jump.encode(&x).unwrap();
        let recon = want.matmul(d.w_dec.as_ref().unwrap()) + &d.b_dec;
        assert!(jump
            .decode(&latents, None)
            .unwrap()
            .allclose(&recon, 1e-4, 1e-4, false));
    }

    #[test]
    fn metrics_count_l0_and_dead_latents() {
        tch::manual_seed(2);
        let sae = random(8, 64, Activation::TopK { k: 3 });
        let x = Tensor::randn([5, 8], (Kind::Float, Device::Cpu));
        let m = sae.metrics(&x, None).unwrap();
        assert!(m.mean_l0 <= 3.0 && m.mean_l0 > 0.0, "{m:?}");
        // At most 5 tokens x 3 latents fired out of 64.
        assert!(m.dead_fraction >= 1.0 - 15.0 / 64.0, "{m:?}");
        assert!(m.fvu.is_finite());
        assert_eq!(sae.fvu(&x, &x).unwrap(), m.fvu);
    }

    #[test]
    fn neurons_encode_their_input() {
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5, -1.0, -1.0]).reshape([2, 3]);
        let top1 = SparseCoder::neurons(3, Some(1)).unwrap();
        let l = top1.encode(&x).unwrap();
        let idx: Vec<i64> = l.indices.reshape([-1]).try_into().unwrap();
        assert_eq!(idx, [2, 0]);
        let all = SparseCoder::neurons(3, None).unwrap();
        let dense = all.decode(&all.encode(&x).unwrap(), None).unwrap();
        assert!(dense.equal(&x.relu()));
        assert!(SparseCoder::neurons(3, Some(4)).is_err());
    }

    #[test]
    fn input_checks_name_dims_and_hook() {
        let sae = random(8, 16, Activation::Relu).with_hook(HookPoint::Residual(6));
        let msg = sae.check_input(None, 2304).unwrap_err().to_string();
        assert!(
            msg.contains("2304") && msg.contains("d_in = 8") && msg.contains("layers.6"),
            "{msg}"
        );
        let msg = sae
            .encode(&Tensor::zeros([2, 3, 8], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("[2, 3, 8]") && msg.contains("[tokens, 8]"),
            "{msg}"
        );
        assert!(sae.check_input(Some(HookPoint::Residual(6)), 8).is_ok());
    }
}
