use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A named place in a transformer where activations are read or replaced.
///
/// The canonical names are the same for every architecture; [`FromStr`] also accepts the
/// Hugging Face module paths and TransformerLens names that SAE checkpoints use, e.g.
/// `model.layers.5`, `transformer.h.5.mlp`, `gpt_neox.layers.5`, `blocks.5.hook_resid_post`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `embed`: the (scaled) token embeddings entering block 0.
    Embed,
    /// `layers.{i}.attn`: what block i's attention branch adds to the residual stream.
    Attn(usize),
    /// `layers.{i}.mlp.input`: the MLP's input after its norm (transcoders read this).
    MlpInput(usize),
    /// `layers.{i}.mlp.hidden`: the MLP's activation before the down projection (neurons).
    MlpHidden(usize),
    /// `layers.{i}.mlp`: what block i's MLP branch adds to the residual stream.
    Mlp(usize),
    /// `layers.{i}`: the residual stream after block i.
    Residual(usize),
}

impl HookPoint {
    /// The block this hook point belongs to; `None` for [`HookPoint::Embed`].
    pub fn layer(&self) -> Option<usize> {
        match *self {
            Self::Embed => None,
            Self::Attn(i)
            | Self::MlpInput(i)
            | Self::MlpHidden(i)
            | Self::Mlp(i)
            | Self::Residual(i) => Some(i),
        }
    }

    /// Where the forward pass produces this tensor: hooks with a larger key come later, so a
    /// forward can stop once the largest requested key has been produced.
    pub fn depth(&self) -> (usize, u8) {
        match *self {
            Self::Embed => (0, 0),
            Self::Attn(i) => (i + 1, 0),
            Self::MlpInput(i) => (i + 1, 1),
            Self::MlpHidden(i) => (i + 1, 2),
            Self::Mlp(i) => (i + 1, 3),
            Self::Residual(i) => (i + 1, 4),
        }
    }

    /// The accepted spellings, for error messages.
    pub fn valid_forms() -> Vec<String> {
        [
            "embed",
            "layers.{i}",
            "layers.{i}.attn",
            "layers.{i}.mlp",
            "layers.{i}.mlp.input",
            "layers.{i}.mlp.hidden",
            "(aliases: model.layers.{i}, transformer.h.{i}.mlp, gpt_neox.layers.{i}, \
             blocks.{i}.hook_resid_post, layers.{i}.post_feedforward_layernorm, ...)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Embed => f.write_str("embed"),
            Self::Attn(i) => write!(f, "layers.{i}.attn"),
            Self::MlpInput(i) => write!(f, "layers.{i}.mlp.input"),
            Self::MlpHidden(i) => write!(f, "layers.{i}.mlp.hidden"),
            Self::Mlp(i) => write!(f, "layers.{i}.mlp"),
            Self::Residual(i) => write!(f, "layers.{i}"),
        }
    }
}

/// Module-path prefixes that wrap the decoder stack in HF checkpoints.
const PREFIXES: &[&str] = &[
    "model.language_model.",
    "language_model.model.",
    "model.",
    "transformer.",
    "gpt_neox.",
];

impl FromStr for HookPoint {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        parse(name.trim()).ok_or_else(|| Error::UnknownHookPoint {
            name: name.to_string(),
            valid: Self::valid_forms(),
        })
    }
}

fn parse(name: &str) -> Option<HookPoint> {
    let mut rest = name;
    for prefix in PREFIXES {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
            break;
        }
    }
    if matches!(
        rest,
        "embed" | "embed_tokens" | "wte" | "embed_in" | "hook_embed"
    ) {
        return Some(HookPoint::Embed);
    }
    let rest = ["layers.", "h.", "blocks.", "layer."]
        .iter()
        .find_map(|p| rest.strip_prefix(p))?;
    let (index, suffix) = match rest.split_once('.') {
        Some((i, s)) => (i, s),
        None => (rest, ""),
    };
    // Reject signs, spaces and leading `+` that `usize::from_str` would otherwise accept.
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: usize = index.parse().ok()?;
    Some(match suffix {
        "" | "hook_resid_post" => HookPoint::Residual(i),
        "hook_resid_pre" => match i {
            0 => HookPoint::Embed,
            _ => HookPoint::Residual(i - 1),
        },
        "attn" | "self_attn" | "attention" | "hook_attn_out" => HookPoint::Attn(i),
        "mlp" | "hook_mlp_out" | "post_feedforward_layernorm" => HookPoint::Mlp(i),
        "mlp.input" | "ln_2" | "pre_feedforward_layernorm" | "ln2.hook_normalized" => {
            HookPoint::MlpInput(i)
        }
        "mlp.hidden" | "mlp.act_fn" | "mlp.act" | "mlp.hook_post" => HookPoint::MlpHidden(i),
        _ => return None,
    })
}

impl Serialize for HookPoint {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HookPoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_round_trip() {
        for h in [
            HookPoint::Embed,
            HookPoint::Residual(3),
            HookPoint::Attn(0),
            HookPoint::Mlp(11),
            HookPoint::MlpInput(2),
            HookPoint::MlpHidden(7),
        ] {
            assert_eq!(h.to_string().parse::<HookPoint>().unwrap(), h);
        }
    }

    #[test]
    fn hf_and_transformer_lens_aliases() {
        let cases = [
            ("model.layers.5", HookPoint::Residual(5)),
            ("transformer.h.5.mlp", HookPoint::Mlp(5)),
            ("gpt_neox.layers.5", HookPoint::Residual(5)),
            ("layers.5.post_feedforward_layernorm", HookPoint::Mlp(5)),
            ("model.layers.5.self_attn", HookPoint::Attn(5)),
            ("blocks.8.hook_resid_post", HookPoint::Residual(8)),
            ("blocks.8.hook_resid_pre", HookPoint::Residual(7)),
            ("blocks.0.hook_resid_pre", HookPoint::Embed),
            ("model.embed_tokens", HookPoint::Embed),
            ("layers.3.mlp.act_fn", HookPoint::MlpHidden(3)),
            ("model.language_model.layers.2", HookPoint::Residual(2)),
        ];
        for (name, want) in cases {
            assert_eq!(name.parse::<HookPoint>().unwrap(), want, "{name}");
        }
    }

    #[test]
    fn unknown_names_list_valid_forms() {
        for bad in [
            "layers.x",
            "layers.-1",
            "layers.+1",
            "layers.2.mlp.gate",
            "",
            "lm_head",
        ] {
            let err = bad.parse::<HookPoint>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("layers.{i}.mlp.input"), "{msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
    }

    #[test]
    fn depth_orders_hooks_as_the_forward_produces_them() {
        let mut hooks = [
            HookPoint::Residual(1),
            HookPoint::Mlp(1),
            HookPoint::Embed,
            HookPoint::MlpHidden(1),
            HookPoint::Residual(0),
            HookPoint::Attn(1),
            HookPoint::MlpInput(1),
        ];
        hooks.sort_by_key(HookPoint::depth);
        let names: Vec<_> = hooks.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "embed",
                "layers.0",
                "layers.1.attn",
                "layers.1.mlp.input",
                "layers.1.mlp.hidden",
                "layers.1.mlp",
                "layers.1"
            ]
        );
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let json = serde_json::to_string(&HookPoint::MlpInput(4)).unwrap();
        assert_eq!(json, "\"layers.4.mlp.input\"");
        let back: HookPoint = serde_json::from_str("\"model.layers.4\"").unwrap();
        assert_eq!(back, HookPoint::Residual(4));
        assert!(serde_json::from_str::<HookPoint>("\"nope\"").is_err());
    }
}
