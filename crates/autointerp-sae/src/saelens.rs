//! SAE-Lens checkpoints (`sae_lens/saes/*.py`, `loading/pretrained_sae_loaders.py`).
//!
//! A folder with `cfg.json` and `sae_weights.safetensors`: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
//! `W_dec [d_sae, d_out]`, `b_dec [d_out]` (`d_out = d_in` except for transcoders), plus per
//! architecture:
//!
//! | `architecture` | extra tensors | latents |
//! |---|---|---|
//! | `standard` | | `relu(pre)` |
//! | `topk` (`k`, `rescale_acts_by_decoder_norm`) | | top `k` of `pre`, ReLU'd |
//! | `jumprelu` | `threshold` (or `log_threshold`) | `relu(pre) * (pre > threshold)` |
//! | `gated` (no `b_enc`) | `b_gate`, `r_mag`, `b_mag` | `[x'W_enc + b_gate > 0] * relu(x'(W_enc·exp(r_mag)) + b_mag)` |
//! | `transcoder`, `skip_transcoder` (`W_skip [d_out, d_in]`), `jumprelu_transcoder` | | as `standard` / `jumprelu`, never `− b_dec` on the input |
//! | `batchtopk` training checkpoints | `topk_threshold` (scalar) | JumpReLU with that threshold, as SAE-Lens saves them for inference |
//!
//! with `pre = x' W_enc + b_enc` and `x' = norm(x) − b_dec · apply_b_dec_to_input`. Configs from
//! before SAE-Lens 6 (flat `hook_point`/`hook_name`, `activation_fn_str` + `activation_fn_kwargs`,
//! boolean `normalize_activations`) are read as SAE-Lens's `handle_pre_6_0_config` reads them, and
//! a non-trivial legacy `scaling_factor` tensor (`finetuning_scaling_factor`) is folded into the
//! decoder rows.
//!
//! `normalize_activations`:
//! - `none`: nothing.
//! - `expected_average_only_in`: training scaled inputs by a constant `s = sqrt(d_in) / E‖x‖`.
//!   SAE-Lens folds `s` into the weights when it knows it (`W_enc *= s`, `W_dec /= s`,
//!   `b_dec /= s`); so does this loader, taking `s` from `activation_scaler.json` beside the
//!   weights (SAE-Lens's training checkpoints) or a `norm_scaling_factor` key in `cfg.json`.
//!   Without either it encodes unscaled inputs and warns, as SAE-Lens does; the factor from
//!   SAE-Lens's `pretrained_saes.yaml` can be applied with
//!   [`SparseCoder::fold_norm_scaling_factor`].
//! - `constant_norm_rescale`: per token, `x · sqrt(d_in) / ‖x‖`; undone on the output.
//! - `layer_norm`: per token, `(x − mean) / (std + 1e-5)`; undone on the output.
//!
//! The hook point comes from `metadata.hook_name` (or the older top-level `hook_name` /
//! `hook_point`), a TransformerLens name such as `blocks.8.hook_resid_post`.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::coder::{float, Activation, Dictionary, Format, InputNorm, Weights};
use crate::files::{parse_hook, read_json, TensorFile};
use crate::{Error, Result, SparseCoder};

/// The weights file of a SAE-Lens coder.
pub(crate) const WEIGHTS: &str = "sae_weights.safetensors";

const ARCHITECTURES: &[&str] = &[
    "standard",
    "topk",
    "jumprelu",
    "gated",
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "batchtopk",
    "matryoshka_batchtopk",
];

/// The fields of SAE-Lens's `cfg.json` this crate reads; the many training fields are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct SaeLensConfig {
    d_in: usize,
    d_sae: usize,
    #[serde(default)]
    d_out: Option<usize>,
    #[serde(default)]
    apply_b_dec_to_input: Option<bool>,
    #[serde(default)]
    normalize_activations: Value,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    rescale_acts_by_decoder_norm: bool,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    hook_name: Option<String>,
    #[serde(default)]
    hook_point: Option<String>,
    #[serde(default, alias = "activation_fn_str")]
    activation_fn: Option<String>,
    #[serde(default)]
    activation_fn_kwargs: Option<Value>,
    #[serde(default)]
    norm_scaling_factor: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    hook_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ActivationScaler {
    scaling_factor: Option<f64>,
}

impl SaeLensConfig {
    /// The TransformerLens hook name the coder reads.
    pub(crate) fn hook_name(&self) -> Option<&str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.hook_name.as_deref())
            .or(self.hook_name.as_deref())
            .or(self.hook_point.as_deref())
    }

    /// The architecture, with pre-6.0 TopK configs (`activation_fn: topk`) mapped as SAE-Lens
    /// does, and `k` from `activation_fn_kwargs` when not at the top level.
    fn architecture_and_k(&self) -> (String, Option<usize>) {
        let kwargs_k = self
            .activation_fn_kwargs
            .as_ref()
            .and_then(|v| v.get("k"))
            .and_then(Value::as_u64)
            .map(|k| k as usize);
        let arch = self
            .architecture
            .clone()
            .unwrap_or_else(|| "standard".into());
        if self.activation_fn.as_deref() == Some("topk") && kwargs_k.is_some() {
            return ("topk".into(), kwargs_k);
        }
        (arch, self.k.or(kwargs_k))
    }
}

pub(crate) fn read_config(dir: &Path) -> Result<SaeLensConfig> {
    read_json(&dir.join("cfg.json"))
}

impl SparseCoder {
    /// Loads a SAE-Lens checkpoint: a folder with `cfg.json` and `sae_weights.safetensors` (see
    /// the [module docs](crate#formats) for the architectures and normalisations read).
    pub fn load_saelens(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("cfg.json");
        let cfg = read_config(dir)?;
        let config_err = |problem: String| Error::Config {
            path: cfg_path.clone(),
            problem,
        };
        let (arch, k) = cfg.architecture_and_k();
        if let Some(f) = cfg.activation_fn.as_deref() {
            if !matches!(f, "relu" | "topk") {
                return Err(Error::UnknownArchitecture {
                    path: cfg_path,
                    field: "activation_fn".into(),
                    name: f.into(),
                    known: vec!["relu".into(), "topk".into()],
                });
            }
        }
        if !ARCHITECTURES.contains(&arch.as_str()) {
            return Err(Error::UnknownArchitecture {
                path: cfg_path,
                field: "architecture".into(),
                name: arch,
                known: ARCHITECTURES.iter().map(|s| s.to_string()).collect(),
            });
        }
        let transcoder = arch.ends_with("transcoder");
        let norm = match &cfg.normalize_activations {
            Value::Null | Value::Bool(false) => "none",
            Value::Bool(true) => "expected_average_only_in",
            Value::String(s) => s.as_str(),
            other => return Err(config_err(format!("bad normalize_activations {other}"))),
        };
        let input_norm = match norm {
            "none" | "expected_average_only_in" => InputNorm::None,
            "constant_norm_rescale" => InputNorm::ConstantNormRescale,
            "layer_norm" => InputNorm::LayerNorm,
            other => {
                return Err(Error::UnknownArchitecture {
                    path: cfg_path,
                    field: "normalize_activations".into(),
                    name: other.into(),
                    known: [
                        "none",
                        "expected_average_only_in",
                        "constant_norm_rescale",
                        "layer_norm",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                })
            }
        };

        let mut file = TensorFile::read_safetensors(&dir.join(WEIGHTS))?;
        let (d_in, width) = (cfg.d_in as i64, cfg.d_sae as i64);
        let d_out = cfg.d_out.filter(|_| transcoder).unwrap_or(cfg.d_in) as i64;
        let mut take = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let t = file.take(name)?;
            if t.size() != shape {
                return Err(file.shape_error(name, t.size(), format!("{shape:?} (from cfg.json)")));
            }
            Ok(float(t, device))
        };
        let w_enc = take("W_enc", &[d_in, width])?;
        let w_dec = take("W_dec", &[width, d_out])?;
        let b_dec = take("b_dec", &[d_out])?;
        let w_skip = if arch == "skip_transcoder" {
            Some(take("W_skip", &[d_out, d_in])?)
        } else {
            None
        };
        let (b_enc, activation) = match arch.as_str() {
            "gated" => (
                Tensor::zeros([width], (Kind::Float, device)),
                Activation::Gated {
                    b_gate: take("b_gate", &[width])?,
                    r_mag: take("r_mag", &[width])?,
                    b_mag: take("b_mag", &[width])?,
                },
            ),
            "standard" | "transcoder" | "skip_transcoder" => {
                (take("b_enc", &[width])?, Activation::Relu)
            }
            "topk" => {
                let k = k.ok_or_else(|| config_err("architecture topk needs `k`".into()))?;
                (take("b_enc", &[width])?, Activation::TopK { k })
            }
            "jumprelu" | "jumprelu_transcoder" => {
                let b_enc = take("b_enc", &[width])?;
                let threshold = match file.take_opt("threshold") {
                    Some(t) => t,
                    None => file
                        .take("log_threshold")
                        .map_err(|_| Error::Weight {
                            path: file.path.clone(),
                            tensor: "threshold".into(),
                            problem:
                                "missing (neither `threshold` nor `log_threshold` is in the file)"
                                    .into(),
                        })?
                        .exp(),
                };
                if threshold.size() != [width] {
                    return Err(file.shape_error(
                        "threshold",
                        threshold.size(),
                        format!("[{width}]"),
                    ));
                }
                (
                    b_enc,
                    Activation::JumpRelu {
                        threshold: float(threshold, device),
                    },
                )
            }
            // batchtopk / matryoshka_batchtopk training checkpoints.
            _ => {
                let b_enc = take("b_enc", &[width])?;
                let t = file.take("topk_threshold")?;
                if t.numel() != 1 {
                    return Err(file.shape_error("topk_threshold", t.size(), "a scalar"));
                }
                let threshold = Tensor::full([width], t.double_value(&[]), (Kind::Float, device));
                (b_enc, Activation::JumpRelu { threshold })
            }
        };
        // Legacy fine-tuning factor on the latents: fold into the decoder rows.
        let w_dec = match file
            .take_opt("scaling_factor")
            .or_else(|| file.take_opt("finetuning_scaling_factor"))
        {
            Some(s) if s.size() != [width] => {
                return Err(file.shape_error("scaling_factor", s.size(), format!("[{width}]")))
            }
            Some(s) => w_dec * float(s, device).unsqueeze(1),
            None => w_dec,
        };
        let path = file.path.clone();
        file.finish()?;

        // `rescale_acts_by_decoder_norm`: SAE-Lens multiplies the pre-activations by ‖W_dec_i‖
        // before the top-k and divides the latents by it before decoding; fold both in.
        let (w_enc, b_enc, w_dec) = if cfg.rescale_acts_by_decoder_norm && arch == "topk" {
            let norms = w_dec.norm_scalaropt_dim(2, [-1i64].as_slice(), false);
            (w_enc * &norms, b_enc * &norms, w_dec / norms.unsqueeze(1))
        } else {
            (w_enc, b_enc, w_dec)
        };
        let weights = Weights {
            w_enc,
            b_enc,
            w_dec: Some(w_dec),
            b_dec,
            w_skip,
        };
        let dict = Dictionary::checked(weights, activation, &path).map_err(|e| match e {
            Error::Config { problem, .. } => config_err(problem),
            e => e,
        })?;
        let apply_b_dec = !transcoder && cfg.apply_b_dec_to_input.unwrap_or(true);
        let mut coder = SparseCoder::from_dictionary(dict, Format::SaeLens)
            .with_apply_b_dec_to_input(apply_b_dec)
            .with_input_norm(input_norm)
            .with_transcoder(transcoder)
            .with_hook_opt(cfg.hook_name().and_then(parse_hook));

        if norm == "expected_average_only_in" {
            let scaler_path = dir.join("activation_scaler.json");
            let factor = if scaler_path.is_file() {
                read_json::<ActivationScaler>(&scaler_path)?.scaling_factor
            } else {
                cfg.norm_scaling_factor
            };
            match factor {
                Some(s) if s.is_finite() && s > 0.0 => coder.fold_norm_scaling_factor(s)?,
                Some(s) => return Err(config_err(format!("bad norm scaling factor {s}"))),
                None => {
                    tracing::warn!(
                        path = %cfg_path.display(),
                        "normalize_activations is expected_average_only_in but no scaling factor was found \
                         (activation_scaler.json or norm_scaling_factor); encoding unscaled inputs. Apply \
                         SAE-Lens's norm_scaling_factor with SparseCoder::fold_norm_scaling_factor."
                    );
                    coder = coder.with_unfolded_norm_scaling();
                }
            }
        }
        Ok(coder)
    }
}
