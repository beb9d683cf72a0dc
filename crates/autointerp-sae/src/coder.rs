use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// How a sparse coder turns pre-activations into latents.
#[derive(Debug)]
pub enum Activation {
    /// Keep the `k` largest pre-activations of each token (after ReLU).
    TopK {
        /// Latents kept per token.
        k: usize,
    },
    /// ReLU: every positive pre-activation.
    Relu,
}

/// The nonzero latents of a batch of tokens, as fixed-width rows of (index, value) pairs.
///
/// Rows of coders with a variable number of active latents (ReLU) are padded with value 0.
///
/// # Shapes
/// `indices` `[tokens, k]` (int64), `values` `[tokens, k]`.
#[derive(Debug)]
pub struct SparseLatents {
    /// Latent indices.
    pub indices: Tensor,
    /// Latent activations; 0 marks padding.
    pub values: Tensor,
}

/// A sparse autoencoder or transcoder: `latents = act(W_enc (x - b_dec?) + b_enc)`,
/// `x̂ = W_dec latents + b_dec (+ W_skip x)`.
#[derive(Debug)]
pub struct SparseCoder {
    /// `[d_in, width]`, laid out for `x @ w_enc`.
    w_enc: Tensor,
    /// `[width]`.
    b_enc: Tensor,
    /// `[width, d_out]`.
    w_dec: Tensor,
    /// `[d_out]`.
    b_dec: Tensor,
    /// `[d_in, d_out]`, for transcoders with a skip connection.
    w_skip: Option<Tensor>,
    /// SAEs subtract `b_dec` from their input; transcoders (whose output space differs) don't.
    subtract_b_dec: bool,
    activation: Activation,
}

/// The fields of sparsify's `cfg.json` this crate reads (unknown fields are ignored: sparsify adds
/// fields between versions).
#[derive(Debug, serde::Deserialize)]
struct SparsifyConfig {
    k: usize,
    #[serde(default)]
    transcode: bool,
}

impl SparseCoder {
    /// Loads an EleutherAI sparsify checkpoint: a folder with `cfg.json` and `sae.safetensors`.
    pub fn load_sparsify(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("cfg.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io { path: cfg_path.clone(), source })?;
        let cfg: SparsifyConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Config { path: cfg_path.clone(), problem: e.to_string() })?;
        if cfg.k == 0 {
            return Err(Error::Config { path: cfg_path, problem: "`k` must be at least 1".into() });
        }

        let path = dir.join("sae.safetensors");
        if !path.exists() {
            return Err(Error::Io { path, source: std::io::ErrorKind::NotFound.into() });
        }
        let mut weights: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .map_err(|e| Error::Weight { path: path.clone(), tensor: String::new(), problem: e.to_string() })?
            .into_iter()
            .collect();
        let mut take = |name: &str| {
            weights.remove(name).ok_or_else(|| Error::Weight {
                path: path.clone(),
                tensor: name.into(),
                problem: "missing".into(),
            })
        };
        let enc = take("encoder.weight")?;
        let b_enc = take("encoder.bias")?;
        let w_dec = take("W_dec")?;
        let b_dec = take("b_dec")?;
        let w_skip = take("W_skip").ok();

        let shape_err = |tensor: &str, got: Vec<i64>, want: String| Error::Weight {
            path: path.clone(),
            tensor: tensor.into(),
            problem: format!("shape {got:?}, expected {want}"),
        };
        let [width, d_in] = enc.size()[..] else {
            return Err(shape_err("encoder.weight", enc.size(), "[num_latents, d_in]".into()));
        };
        if b_enc.size() != [width] {
            return Err(shape_err("encoder.bias", b_enc.size(), format!("[{width}]")));
        }
        let d_out = match w_dec.size()[..] {
            [w, d] if w == width => d,
            _ => return Err(shape_err("W_dec", w_dec.size(), format!("[{width}, d_out]"))),
        };
        if b_dec.size() != [d_out] {
            return Err(shape_err("b_dec", b_dec.size(), format!("[{d_out}]")));
        }
        if !cfg.transcode && d_out != d_in {
            return Err(shape_err("W_dec", w_dec.size(), format!("[{width}, {d_in}] (an SAE reconstructs its input)")));
        }
        if let Some(s) = &w_skip {
            if s.size() != [d_out, d_in] {
                return Err(shape_err("W_skip", s.size(), format!("[{d_out}, {d_in}]")));
            }
        }
        if cfg.k as i64 > width {
            return Err(Error::Config {
                path: cfg_path,
                problem: format!("k = {} exceeds the {width} latents in {}", cfg.k, path.display()),
            });
        }
        let f = |t: Tensor| t.to_kind(Kind::Float).to_device(device);
        Ok(Self {
            w_enc: f(enc).tr().contiguous(),
            b_enc: f(b_enc),
            w_dec: f(w_dec),
            b_dec: f(b_dec),
            w_skip: w_skip.map(|s| f(s).tr().contiguous()),
            subtract_b_dec: !cfg.transcode,
            activation: Activation::TopK { k: cfg.k },
        })
    }

    /// Input dimension.
    pub fn d_in(&self) -> usize {
        self.w_enc.size()[0] as usize
    }

    /// Number of latents.
    pub fn width(&self) -> usize {
        self.w_enc.size()[1] as usize
    }

    /// Latents kept per token, for TopK coders.
    pub fn k(&self) -> Option<usize> {
        match self.activation {
            Activation::TopK { k } => Some(k),
            Activation::Relu => None,
        }
    }

    /// Pre-activations `x' W_enc + b_enc`.
    ///
    /// # Shapes
    /// `x` `[tokens, d_in]` → `[tokens, width]`.
    fn pre_acts(&self, x: &Tensor) -> Result<Tensor> {
        let d = *x.size().last().unwrap_or(&0);
        if x.dim() != 2 || d != self.d_in() as i64 {
            return Err(Error::InputDim { got: d, expected: self.d_in() as i64 });
        }
        let x = x.to_kind(self.w_enc.kind());
        let x = if self.subtract_b_dec { x - &self.b_dec } else { x };
        Ok(x.f_matmul(&self.w_enc)?.f_add(&self.b_enc)?)
    }

    /// Encodes activations into sparse latents.
    ///
    /// # Shapes
    /// `x` `[tokens, d_in]` → indices and values `[tokens, k]`.
    pub fn encode(&self, x: &Tensor) -> Result<SparseLatents> {
        let _guard = tch::no_grad_guard();
        let pre = self.pre_acts(x)?;
        let k = match self.activation {
            Activation::TopK { k } => k as i64,
            // As many slots as the busiest token needs; the rest are padding with value 0.
            Activation::Relu => pre.gt(0.0).sum_dim_intlist(-1, false, Kind::Int64).max().int64_value(&[]).max(1),
        };
        let (values, indices) = pre.f_topk(k, -1, true, true)?;
        Ok(SparseLatents { indices, values: values.relu() })
    }

    /// Reconstructs the input (or, for a transcoder, the output) from latents.
    ///
    /// # Shapes
    /// latents `[tokens, k]` (and `x` `[tokens, d_in]` for skip connections) → `[tokens, d_out]`.
    pub fn decode(&self, latents: &SparseLatents, x: Option<&Tensor>) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let (tokens, k) = (latents.indices.size()[0], latents.indices.size()[1]);
        let rows = self.w_dec.f_index_select(0, &latents.indices.reshape([-1]))?.reshape([tokens, k, -1]);
        let mut out = (rows * latents.values.unsqueeze(-1)).sum_dim_intlist(1, false, None) + &self.b_dec;
        if let (Some(skip), Some(x)) = (&self.w_skip, x) {
            out += x.to_kind(skip.kind()).f_matmul(skip)?;
        }
        Ok(out)
    }

    /// Fraction of variance unexplained of the reconstruction of `target` from `x`:
    /// `Σ‖target − x̂‖² / Σ‖target − mean(target)‖²`.
    ///
    /// # Shapes
    /// `x` `[tokens, d_in]`, `target` `[tokens, d_out]`.
    pub fn fvu(&self, x: &Tensor, target: &Tensor) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let recon = self.decode(&self.encode(x)?, Some(x))?;
        let target = target.to_kind(Kind::Float);
        let err = (&target - recon).square().sum(Kind::Double);
        let var = (&target - target.mean_dim(0, true, Kind::Float)).square().sum(Kind::Double);
        Ok(err.double_value(&[]) / var.double_value(&[]).max(f64::MIN_POSITIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_sparsify(dir: &Path, d_in: i64, width: i64, k: usize) -> (Tensor, Tensor, Tensor, Tensor) {
        tch::manual_seed(0);
        let enc = Tensor::randn([width, d_in], (Kind::Float, Device::Cpu));
        let b_enc = Tensor::randn([width], (Kind::Float, Device::Cpu));
        let w_dec = Tensor::randn([width, d_in], (Kind::Float, Device::Cpu));
        let b_dec = Tensor::randn([d_in], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(
            &[("encoder.weight", &enc), ("encoder.bias", &b_enc), ("W_dec", &w_dec), ("b_dec", &b_dec)],
            dir.join("sae.safetensors"),
        )
        .unwrap();
        std::fs::write(dir.join("cfg.json"), format!(r#"{{"k": {k}, "num_latents": {width}, "d_in": {d_in}}}"#))
            .unwrap();
        (enc, b_enc, w_dec, b_dec)
    }

    #[test]
    fn topk_encode_matches_the_dense_definition() {
        let dir = tempfile::tempdir().unwrap();
        let (enc, b_enc, w_dec, b_dec) = write_sparsify(dir.path(), 8, 32, 4);
        let sae = SparseCoder::load_sparsify(dir.path(), Device::Cpu).unwrap();
        assert_eq!((sae.d_in(), sae.width(), sae.k()), (8, 32, Some(4)));

        let x = Tensor::randn([5, 8], (Kind::Float, Device::Cpu));
        let latents = sae.encode(&x).unwrap();
        // Dense reference: relu((x - b_dec) W_enc^T + b_enc), keep the 4 largest per row.
        let pre = ((&x - &b_dec).matmul(&enc.tr()) + &b_enc).relu();
        let (want, want_idx) = pre.topk(4, -1, true, true);
        assert!(latents.values.allclose(&want, 1e-5, 1e-5, false));
        assert!(latents.indices.equal(&want_idx));

        let dense = Tensor::zeros([5, 32], (Kind::Float, Device::Cpu)).scatter(-1, &want_idx, &want);
        let recon = dense.matmul(&w_dec) + &b_dec;
        assert!(sae.decode(&latents, None).unwrap().allclose(&recon, 1e-4, 1e-4, false));
        assert!(sae.fvu(&x, &x).unwrap().is_finite());
    }

    #[test]
    fn bad_inputs_are_errors_that_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let msg = SparseCoder::load_sparsify(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("cfg.json"), "{msg}");

        let _ = write_sparsify(dir.path(), 8, 32, 4);
        let sae = SparseCoder::load_sparsify(dir.path(), Device::Cpu).unwrap();
        let x = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
        let msg = sae.encode(&x).unwrap_err().to_string();
        assert!(msg.contains("dimension 7") && msg.contains("d_in = 8"), "{msg}");

        std::fs::write(dir.path().join("cfg.json"), r#"{"k": 64}"#).unwrap();
        let msg = SparseCoder::load_sparsify(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("k = 64 exceeds"), "{msg}");

        std::fs::write(dir.path().join("cfg.json"), r#"{"k": 4}"#).unwrap();
        let b = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[("encoder.weight", &b)], dir.path().join("sae.safetensors")).unwrap();
        let msg = SparseCoder::load_sparsify(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("encoder.bias") && msg.contains("missing"), "{msg}");
    }
}
