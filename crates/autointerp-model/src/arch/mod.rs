//! The architecture families, one file each, and the registry that finds them.
//!
//! A family's file holds all that is particular to it: the struct its HF `config.json` is read
//! into and the conversion to [`Config`], its GGUF name, tensor names and metadata, and the
//! builder that takes its weights into the shared blocks of [`crate::decoder`]. Everything
//! else (the blocks, the hooked forward pass, the KV cache, the loaders) is shared. Families
//! that differ from another by a few details reuse its code: Qwen2 is Llama's, Gemma 3 is
//! Gemma 2's, and Gemma 2 builds on Llama's block. docs/architecture.md says how to add one.

mod gemma2;
mod gemma3;
mod gpt2;
mod gpt_neox;
mod llama;
mod qwen2;

use crate::config::Config;
use crate::decoder::Parts;
use crate::gguf::{GgufFile, GgufHparams};
use crate::weights::Weights;

/// The registry: every family, one line each, in the order error messages list their names.
const FAMILIES: &[&Family] = &[
    &gpt2::FAMILY,
    &llama::FAMILY,
    &qwen2::FAMILY,
    &gemma2::FAMILY,
    &gemma3::FAMILY,
    &gpt_neox::FAMILY,
];

/// The architecture families this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Arch {
    /// GPT-2: learned positions, LayerNorm, `Conv1D` projections, tied unembedding.
    Gpt2,
    /// Llama (also Llama 3, SmolLM2, Mistral): RMSNorm, RoPE, gated SiLU MLP, GQA.
    Llama,
    /// Qwen2: Llama with q/k/v biases.
    Qwen2,
    /// Gemma 2: `(1 + w)` RMSNorm before and after each branch, softcaps, sliding layers.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 plus q/k norms and a second RoPE for sliding layers.
    Gemma3,
    /// GPT-NeoX / Pythia: LayerNorm, partial rotary, parallel or sequential residual.
    GptNeox,
}

impl Arch {
    /// The HF `model_type` values [`Config::from_hf_json`] accepts.
    pub const SUPPORTED_MODEL_TYPES: &'static [&'static str] = &MODEL_TYPES;

    /// The GGUF `general.architecture` values [`Config::from_gguf`] accepts.
    pub const SUPPORTED_GGUF_ARCHS: &'static [&'static str] = &GGUF_ARCHS;

    /// Whether the family uses Gemma's `(1 + w)` RMSNorm, post-branch norms and scaled embeddings.
    pub fn is_gemma(self) -> bool {
        matches!(self, Arch::Gemma2 | Arch::Gemma3)
    }

    /// Whether the MLP is gated (`down(act(gate(x)) * up(x))`) rather than `proj(act(fc(x)))`.
    pub fn gated_mlp(self) -> bool {
        !matches!(self, Arch::Gpt2 | Arch::GptNeox)
    }

    /// Whether the norms are LayerNorms with a bias (else RMSNorms).
    pub fn layer_norm(self) -> bool {
        matches!(self, Arch::Gpt2 | Arch::GptNeox)
    }

    /// The family's entry in the registry.
    pub(crate) fn family(self) -> &'static Family {
        FAMILIES
            .iter()
            .find(|f| f.arch == self)
            // Configs come only from the registry's readers, so their arch is registered.
            .expect("every Arch has a line in arch::FAMILIES")
    }
}

/// What the crate knows of one family.
pub(crate) struct Family {
    pub(crate) arch: Arch,
    /// The HF `model_type` values it reads.
    pub(crate) model_types: &'static [&'static str],
    /// Converts a `config.json` whose `model_type` is one of `model_types` (passed along, for
    /// families that tell them apart); the message names the key at fault.
    pub(crate) hf_config: fn(serde_json::Value, &str) -> Result<Config, String>,
    /// How llama.cpp stores it; `None` for a family that loads from HF folders only.
    pub(crate) gguf: Option<GgufSpec>,
    /// Takes the model's tensors, by their HF names, into the shared blocks.
    pub(crate) build: fn(&Config, &mut Weights) -> crate::Result<Parts>,
}

/// A family as llama.cpp writes it.
pub(crate) struct GgufSpec {
    /// `general.architecture`.
    pub(crate) name: &'static str,
    /// llama.cpp's name of each block tensor (`blk.{i}.{gguf}`) beside HF's
    /// (`model.layers.{i}.{hf}`); tables are searched in order, so a family can put the names
    /// it spells differently before a table it shares.
    pub(crate) tensors: &'static [&'static [(&'static str, &'static str)]],
    /// Whether llama.cpp's converter permuted the rows of `attn_q` and `attn_k` for ggml's
    /// interleaved RoPE (it does so for `llama` only).
    pub(crate) permuted_qk: bool,
    /// Sets what the family reads from metadata beyond the hyperparameters every family has
    /// (which [`Config::from_gguf`] has already set).
    pub(crate) config: fn(&GgufFile, &GgufHparams, &mut Config) -> crate::Result<()>,
}

impl GgufSpec {
    /// The HF name of block tensor `gguf` (e.g. `attn_q` → `self_attn.q_proj`).
    pub(crate) fn hf_name(&self, gguf: &str) -> Option<&'static str> {
        self.tensors
            .iter()
            .flat_map(|t| t.iter())
            .find(|(g, _)| *g == gguf)
            .map(|(_, hf)| *hf)
    }

    /// The GGUF name of block tensor `hf`, the inverse of [`GgufSpec::hf_name`].
    pub(crate) fn gguf_name(&self, hf: &str) -> Option<&'static str> {
        self.tensors
            .iter()
            .flat_map(|t| t.iter())
            .find(|(g, h)| *h == hf && self.hf_name(g) == Some(hf))
            .map(|(g, _)| *g)
    }
}

/// The family whose HF `model_type` this is.
pub(crate) fn by_model_type(model_type: &str) -> Option<&'static Family> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.model_types.contains(&model_type))
}

/// The family whose GGUF `general.architecture` this is.
pub(crate) fn by_gguf_name(name: &str) -> Option<(&'static Family, &'static GgufSpec)> {
    FAMILIES
        .iter()
        .find_map(|f| f.gguf.as_ref().filter(|g| g.name == name).map(|g| (*f, g)))
}

/// Every family that loads from GGUF, in registry order.
pub(crate) fn gguf_specs() -> impl Iterator<Item = &'static GgufSpec> {
    FAMILIES.iter().filter_map(|f| f.gguf.as_ref())
}

/// Writes the names the registry answers to into `out`, in its order: the HF `model_type`s, or
/// with `gguf` the GGUF architectures; returns how many there are (with an empty `out` it only
/// counts). `const`, so that the public lists are sized and filled from the registry itself.
const fn registry_names(gguf: bool, out: &mut [&'static str]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < FAMILIES.len() {
        let family = FAMILIES[i];
        let names: &[&'static str] = match (gguf, &family.gguf) {
            (false, _) => family.model_types,
            (true, Some(spec)) => std::slice::from_ref(&spec.name),
            (true, None) => &[],
        };
        let mut j = 0;
        while j < names.len() {
            if n < out.len() {
                out[n] = names[j];
            }
            n += 1;
            j += 1;
        }
        i += 1;
    }
    n
}

const MODEL_TYPES: [&str; registry_names(false, &mut [])] = {
    let mut out = [""; registry_names(false, &mut [])];
    registry_names(false, &mut out);
    out
};

const GGUF_ARCHS: [&str; registry_names(true, &mut [])] = {
    let mut out = [""; registry_names(true, &mut [])];
    registry_names(true, &mut out);
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_is_found_by_its_arch_and_its_names() {
        for (i, family) in FAMILIES.iter().enumerate() {
            // One line per family: a second one would never be found.
            assert!(FAMILIES[..i].iter().all(|f| f.arch != family.arch));
            assert_eq!(family.arch.family().model_types, family.model_types);
            for model_type in family.model_types {
                assert_eq!(by_model_type(model_type).map(|f| f.arch), Some(family.arch));
            }
            if let Some(spec) = &family.gguf {
                assert_eq!(
                    by_gguf_name(spec.name).map(|(f, _)| f.arch),
                    Some(family.arch)
                );
            }
        }
        assert_eq!(
            Arch::SUPPORTED_MODEL_TYPES,
            [
                "gpt2",
                "llama",
                "mistral",
                "qwen2",
                "gemma2",
                "gemma3",
                "gemma3_text",
                "gpt_neox"
            ]
        );
        // Names are unique, so each finds the one family that reads it.
        let mut names = Arch::SUPPORTED_MODEL_TYPES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Arch::SUPPORTED_MODEL_TYPES.len());
        assert_eq!(
            Arch::SUPPORTED_GGUF_ARCHS,
            ["llama", "qwen2", "gemma2", "gemma3"]
        );
    }
}
