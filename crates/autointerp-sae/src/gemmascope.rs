//! GemmaScope checkpoints: `params.npz` with `W_enc [d_model, width]`, `b_enc [width]`,
//! `threshold [width]`, `W_dec [width, d_model]`, `b_dec [d_model]`; JumpReLU on
//! `pre = x @ W_enc + b_enc` (no `b_dec` subtracted): `act = (pre > threshold) * relu(pre)`.
//!
//! Repos lay them out as `layer_{i}/width_{w}/average_l0_{l}/params.npz` in
//! `google/gemma-scope-{size}-{pt|it}-{res|mlp|att|transcoders}`; the hook point is read from that
//! path: `res` → `layers.{i}`, `mlp` → `layers.{i}.mlp` (the MLP output after
//! `post_feedforward_layernorm`, as delphi hooks it), `transcoders` → `layers.{i}.mlp.input`
//! (transcoder), `att` → none (they read the attention heads' concatenated `hook_z`).

use std::path::{Component, Path};

use autointerp_core::HookPoint;
use tch::Device;

use crate::coder::{float, Activation, Dictionary, Format, Weights};
use crate::files::TensorFile;
use crate::{Result, SparseCoder};

/// The weights file of a GemmaScope coder.
pub(crate) const WEIGHTS: &str = "params.npz";

/// The hook point and transcoder-ness that a GemmaScope path spells, e.g.
/// `.../gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82`.
pub(crate) fn hook_from_path(path: &Path) -> (Option<HookPoint>, bool) {
    let names: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect();
    let layer = names.iter().rev().find_map(|n| {
        n.strip_prefix("layer_")
            .and_then(|i| i.parse::<usize>().ok())
    });
    let site = names.iter().rev().find_map(|n| {
        let n = n.strip_suffix("-canonical").unwrap_or(n);
        n.contains("gemma-scope")
            .then(|| n.rsplit('-').next())
            .flatten()
    });
    match (layer, site) {
        (Some(i), Some("res")) => (Some(HookPoint::Residual(i)), false),
        (Some(i), Some("mlp")) => (Some(HookPoint::Mlp(i)), false),
        (Some(i), Some("transcoders")) => (Some(HookPoint::MlpInput(i)), true),
        (_, Some("transcoders")) => (None, true),
        _ => (None, false),
    }
}

impl SparseCoder {
    /// Loads a GemmaScope JumpReLU SAE from `params.npz` (`path` is the file or its folder). The
    /// hook point is inferred from a GemmaScope repo path when there is one (see
    /// [`SparseCoder::with_hook`] to set it).
    pub fn load_gemmascope(path: &Path, device: Device) -> Result<Self> {
        let file_path = if path.is_dir() {
            path.join(WEIGHTS)
        } else {
            path.to_path_buf()
        };
        let mut file = TensorFile::read_npz(&file_path)?;
        let w_enc = file.take("W_enc")?;
        let b_enc = file.take("b_enc")?;
        let threshold = file.take("threshold")?;
        let w_dec = file.take("W_dec")?;
        let b_dec = file.take("b_dec")?;
        let [_, width] = w_enc.size()[..] else {
            return Err(file.shape_error("W_enc", w_enc.size(), "[d_model, width]"));
        };
        if threshold.size() != [width] {
            return Err(file.shape_error("threshold", threshold.size(), format!("[{width}]")));
        }
        file.finish()?;
        let weights = Weights {
            w_enc: float(w_enc, device),
            b_enc: float(b_enc, device),
            w_dec: Some(float(w_dec, device)),
            b_dec: float(b_dec, device),
            w_skip: None,
        };
        let activation = Activation::JumpRelu {
            threshold: float(threshold, device),
        };
        let dict = Dictionary::checked(weights, activation, &file_path)?;
        let abs = std::path::absolute(&file_path).unwrap_or(file_path);
        let (hook, transcoder) = hook_from_path(&abs);
        Ok(SparseCoder::from_dictionary(dict, Format::GemmaScope)
            .with_hook_opt(hook)
            .with_transcoder(transcoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_points_come_from_repo_paths() {
        let cases = [
            ("/x/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz", Some(HookPoint::Residual(12)), false),
            ("models--google--gemma-scope-9b-it-mlp/snapshots/abc/layer_3/width_131k/average_l0_9", Some(HookPoint::Mlp(3)), false),
            ("gemma-scope-2b-pt-res-canonical/layer_0/width_16k/canonical", Some(HookPoint::Residual(0)), false),
            ("gemma-scope-2b-pt-transcoders/layer_5/width_16k/average_l0_8", Some(HookPoint::MlpInput(5)), true),
            ("gemma-scope-2b-pt-att/layer_5/width_16k/average_l0_8", None, false),
            ("somewhere/params.npz", None, false),
        ];
        for (path, hook, transcoder) in cases {
            assert_eq!(
                hook_from_path(Path::new(path)),
                (hook, transcoder),
                "{path}"
            );
        }
    }
}
