//! EleutherAI sparsify checkpoints (`sparsify/sparse_coder.py`, `config.py`).
//!
//! One coder is a folder with `cfg.json` (`SparseCoderConfig.to_dict()` plus `d_in`) and
//! `sae.safetensors` holding `encoder.weight [num_latents, d_in]`, `encoder.bias [num_latents]`,
//! `W_dec [num_latents, d_in]` (absent when saved without a decoder), `b_dec [d_in]` and, with
//! `skip_connection`, `W_skip [d_in, d_in]`. A repo holds one such folder per hook point, named
//! after the module (`layers.6`, `layers.6.mlp`, `gpt_neox.layers.3`, ...).
//!
//! Encoding (`SparseCoder.encode` → `fused_encoder`): `pre = relu((x − b_dec) @ encoder.weight^T +
//! encoder.bias)` (no `− b_dec` for transcoders), then `topk(pre, k)` or, for `groupmax`, the max
//! of each of `k` contiguous groups. Decoding: `Σ top_acts · W_dec[top_indices] + b_dec`, plus
//! `x @ W_skip^T` with a skip connection. `multi_topk` and `normalize_decoder` only affect training.

use std::path::Path;

use autointerp_core::HookPoint;
use serde::Deserialize;
use tch::Device;

use crate::coder::{float, Activation, Dictionary, Format, Weights};
use crate::files::{parse_hook, read_json, TensorFile};
use crate::{Error, Result, SparseCoder};

/// The fields of sparsify's `cfg.json` (unknown fields are ignored, as sparsify's
/// `from_dict(drop_extra_fields=True)` does: they vary between versions).
#[derive(Debug, Deserialize)]
struct SparsifyConfig {
    #[serde(default = "topk")]
    activation: String,
    #[serde(default = "default_expansion")]
    expansion_factor: usize,
    #[serde(default)]
    num_latents: usize,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    skip_connection: bool,
    #[serde(default)]
    transcode: bool,
    d_in: usize,
}

fn topk() -> String {
    "topk".into()
}
fn default_expansion() -> usize {
    32
}
fn default_k() -> usize {
    32
}

/// The weights file of a sparsify coder.
pub(crate) const WEIGHTS: &str = "sae.safetensors";

impl SparseCoder {
    /// Loads one EleutherAI sparsify coder: a folder with `cfg.json` and `sae.safetensors`. The
    /// hook point is parsed from the folder's name (for a transcoder stored under
    /// `layers.{i}.mlp`, the hook it reads is `layers.{i}.mlp.input`). To load a repo of many,
    /// use [`SparseCoder::load`].
    pub fn load_sparsify(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("cfg.json");
        let cfg: SparsifyConfig = read_json(&cfg_path)?;
        let mut file = TensorFile::read_safetensors(&dir.join(WEIGHTS))?;
        let enc = file.take("encoder.weight")?;
        let b_enc = file.take("encoder.bias")?;
        let w_dec = file.take_opt("W_dec");
        let b_dec = file.take("b_dec")?;
        let w_skip = if cfg.skip_connection {
            Some(file.take("W_skip")?)
        } else {
            None
        };
        if file.take_opt("W_skip").is_some() {
            return Err(Error::Weight {
                path: file.path.clone(),
                tensor: "W_skip".into(),
                problem: "present, but cfg.json says skip_connection = false".into(),
            });
        }
        let path = file.path.clone();
        file.finish()?;

        let width = match cfg.num_latents {
            0 => cfg
                .d_in
                .checked_mul(cfg.expansion_factor)
                .ok_or_else(|| Error::Config {
                    path: cfg_path.clone(),
                    problem: format!(
                        "d_in {} × expansion_factor {} overflows",
                        cfg.d_in, cfg.expansion_factor
                    ),
                })?,
            n => n,
        };
        if enc.size() != [width as i64, cfg.d_in as i64] {
            return Err(Error::Weight {
                path,
                tensor: "encoder.weight".into(),
                problem: format!(
                    "shape {:?}, but cfg.json says [num_latents, d_in] = [{width}, {}]",
                    enc.size(),
                    cfg.d_in
                ),
            });
        }
        let activation = match cfg.activation.as_str() {
            "topk" => Activation::TopK { k: cfg.k },
            "groupmax" => Activation::GroupMax { k: cfg.k },
            other => {
                return Err(Error::UnknownArchitecture {
                    path: cfg_path,
                    field: "activation".into(),
                    name: other.into(),
                    known: vec!["topk".into(), "groupmax".into()],
                })
            }
        };
        let weights = Weights {
            w_enc: float(enc, device).tr(),
            b_enc: float(b_enc, device),
            w_dec: w_dec.map(|w| float(w, device)),
            b_dec: float(b_dec, device),
            w_skip: w_skip.map(|w| float(w, device)),
        };
        let dict = Dictionary::checked(weights, activation, &path).map_err(|e| match e {
            // `k` problems are config problems.
            Error::Config { problem, .. } => Error::Config {
                path: cfg_path.clone(),
                problem,
            },
            e => e,
        })?;
        let hook = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_hook)
            .map(|h| match h {
                HookPoint::Mlp(i) if cfg.transcode => HookPoint::MlpInput(i),
                h => h,
            });
        Ok(SparseCoder::from_dictionary(dict, Format::Sparsify)
            .with_apply_b_dec_to_input(!cfg.transcode)
            .with_transcoder(cfg.transcode)
            .with_hook_opt(hook))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn write(dir: &Path, cfg: &str, tensors: &[(&str, &[i64])]) {
        std::fs::create_dir_all(dir).unwrap();
        let made: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, s)| (n.to_string(), Tensor::randn(*s, (Kind::Float, Device::Cpu))))
            .collect();
        Tensor::write_safetensors(&made, dir.join(WEIGHTS)).unwrap();
        std::fs::write(dir.join("cfg.json"), cfg).unwrap();
    }

    const SAE: &[(&str, &[i64])] = &[
        ("encoder.weight", &[32, 8]),
        ("encoder.bias", &[32]),
        ("W_dec", &[32, 8]),
        ("b_dec", &[8]),
    ];

    #[test]
    fn bad_checkpoints_are_errors_that_name_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layers.3");
        let msg = SparseCoder::load_sparsify(&dir, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cfg.json"), "{msg}");

        write(&dir, r#"{"k": 4, "num_latents": 32, "d_in": 8}"#, SAE);
        let sae = SparseCoder::load_sparsify(&dir, Device::Cpu).unwrap();
        assert_eq!(
            (sae.d_in(), sae.width(), sae.k(), sae.hook()),
            (8, 32, Some(4), Some(HookPoint::Residual(3)))
        );
        let msg = sae
            .encode(&Tensor::randn([5, 7], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("dimension 7") && msg.contains("d_in = 8") && msg.contains("layers.3"),
            "{msg}"
        );

        std::fs::write(
            dir.join("cfg.json"),
            r#"{"k": 64, "num_latents": 32, "d_in": 8}"#,
        )
        .unwrap();
        let msg = SparseCoder::load_sparsify(&dir, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cfg.json") && msg.contains("k = 64"), "{msg}");

        std::fs::write(
            dir.join("cfg.json"),
            r#"{"k": 4, "d_in": 8, "expansion_factor": 2}"#,
        )
        .unwrap();
        let msg = SparseCoder::load_sparsify(&dir, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("encoder.weight") && msg.contains("[16, 8]"),
            "{msg}"
        );

        std::fs::write(dir.join("cfg.json"), r#"{"k": 4, "num_latents": 32}"#).unwrap();
        let msg = SparseCoder::load_sparsify(&dir, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("d_in"), "{msg}");

        std::fs::write(
            dir.join("cfg.json"),
            r#"{"k": 4, "num_latents": 32, "d_in": 8, "activation": "batchtopk"}"#,
        )
        .unwrap();
        let msg = SparseCoder::load_sparsify(&dir, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("activation") && msg.contains("batchtopk") && msg.contains("groupmax"),
            "{msg}"
        );

        write(&dir, r#"{"k": 4, "num_latents": 32, "d_in": 8}"#, &SAE[..1]);
        let msg = SparseCoder::load_sparsify(&dir, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("encoder.bias") && msg.contains("missing"),
            "{msg}"
        );

        write(
            &dir,
            r#"{"k": 4, "num_latents": 32, "d_in": 8, "skip_connection": true}"#,
            SAE,
        );
        let msg = SparseCoder::load_sparsify(&dir, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("W_skip") && msg.contains("missing"), "{msg}");

        let mut extra = SAE.to_vec();
        extra.push(("W_dec_2", &[32, 8]));
        write(&dir, r#"{"k": 4, "num_latents": 32, "d_in": 8}"#, &extra);
        let msg = SparseCoder::load_sparsify(&dir, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("W_dec_2") && msg.contains("unexpected"),
            "{msg}"
        );
    }

    #[test]
    fn encoder_only_checkpoints_encode_but_do_not_decode() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            r#"{"k": 2, "num_latents": 32, "d_in": 8}"#,
            &[SAE[0], SAE[1], SAE[3]],
        );
        let sae = SparseCoder::load_sparsify(tmp.path(), Device::Cpu).unwrap();
        assert!(!sae.has_decoder());
        let latents = sae
            .encode(&Tensor::randn([3, 8], (Kind::Float, Device::Cpu)))
            .unwrap();
        let msg = sae.decode(&latents, None).unwrap_err().to_string();
        assert!(msg.contains("no decoder"), "{msg}");
    }
}
