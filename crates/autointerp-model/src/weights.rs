//! Checkpoint tensors by name: memory-mapped safetensors files (one, or shards listed by
//! `model.safetensors.index.json`) or a GGUF file, whose tensors are renamed to the HF names.
//!
//! Every tensor is read once, copied out of the map, checked against the shape the config
//! implies and converted to the model's dtype and device; what the model never asked for is an
//! error ([`Weights::finish`]), so a wrong config cannot load silently.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use crate::arch::{self, Arch};
use crate::config::Config;
use crate::gguf::GgufFile;
use crate::{Error, Result};

/// One memory-mapped safetensors file.
struct SafetensorsFile {
    path: PathBuf,
    map: memmap2::Mmap,
    data_start: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        #[allow(unsafe_code)]
        // SAFETY: read-only map kept alive by `self`; only unsound if another process truncates
        // the file while it is mapped, the contract every mmap-based weight loader accepts.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        // Validates the header and that the data section is exactly as long as it says.
        let (n, metadata) =
            SafeTensors::read_metadata(&map).map_err(|source| Error::Safetensors {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + n,
            metadata,
        })
    }

    fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// The tensor `name` copied into a CPU tensor of its stored dtype.
    fn read(&self, name: &str) -> Result<Tensor> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| Error::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_owned(),
            })?;
        let kind = match info.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            other => {
                return Err(Error::TensorDType {
                    path: self.path.clone(),
                    tensor: name.to_owned(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let (start, end) = info.data_offsets;
        // read_metadata checked that every range lies inside the data section.
        let bytes = &self.map[self.data_start + start..self.data_start + end];
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        Ok(Tensor::f_from_data_size(bytes, &shape, kind)?)
    }
}

enum Source {
    Safetensors {
        files: Vec<SafetensorsFile>,
        /// Tensor name -> index into `files`.
        index: HashMap<String, usize>,
    },
    Gguf {
        file: Box<GgufFile>,
        /// HF name -> GGUF name, for every tensor the GGUF file has.
        names: BTreeMap<String, String>,
        /// Heads of q and k, to undo llama.cpp's permutation (where the family says it
        /// permuted them).
        unpermute: Option<(i64, i64)>,
    },
}

/// The tensors of a checkpoint, taken one by one by the model builder.
pub(crate) struct Weights {
    source: Source,
    taken: BTreeSet<String>,
    /// Names that the model may leave untaken (buffers HF saves, tied heads).
    ignorable: Vec<String>,
    /// Prefixes of names the model may leave untaken (a multimodal model's vision tower).
    ignorable_prefixes: Vec<String>,
    pub(crate) device: Device,
    pub(crate) kind: Kind,
}

impl Weights {
    /// Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`, in `dir`.
    pub(crate) fn from_hf_dir(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io {
                path: index_path.clone(),
                source,
            })?;
            let index: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Config {
                    path: index_path.clone(),
                    problem: e.to_string(),
                })?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Config {
                    path: index_path.clone(),
                    problem: "no \"weight_map\" object".into(),
                })?;
            let mut shards = BTreeSet::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| Error::Config {
                    path: index_path.clone(),
                    problem: format!("weight_map[{tensor:?}] is not a file name"),
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with("..") {
                    return Err(Error::Config {
                        path: index_path.clone(),
                        problem: format!(
                            "weight_map[{tensor:?}] = {file:?} is not a plain file name"
                        ),
                    });
                }
                shards.insert(file.to_owned());
            }
            shards.into_iter().map(|f| dir.join(f)).collect()
        } else {
            let hint = if dir.join("pytorch_model.bin").exists() {
                " (pytorch_model.bin is not supported: convert it to safetensors)"
            } else {
                ""
            };
            return Err(Error::ModelPath {
                path: dir.to_path_buf(),
                problem: format!("no model.safetensors or model.safetensors.index.json{hint}"),
            });
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in paths {
            let file = SafetensorsFile::open(&path)?;
            for name in file.names() {
                index.insert(name, files.len());
            }
            files.push(file);
        }
        Ok(Self {
            source: Source::Safetensors { files, index },
            taken: BTreeSet::new(),
            ignorable: Vec::new(),
            ignorable_prefixes: Vec::new(),
            device,
            kind,
        })
    }

    /// Wraps a GGUF file whose tensors the builder asks for by their HF names.
    pub(crate) fn from_gguf(file: GgufFile, config: &Config, device: Device, kind: Kind) -> Self {
        let mut names = BTreeMap::new();
        for t in file.tensors() {
            if let Some(hf) = gguf_to_hf(&t.name, config.arch) {
                names.insert(hf, t.name.clone());
            }
        }
        let unpermute = config
            .arch
            .family()
            .gguf
            .as_ref()
            .is_some_and(|s| s.permuted_qk)
            .then_some((config.num_heads as i64, config.num_kv_heads as i64));
        Self {
            source: Source::Gguf {
                file: Box::new(file),
                names,
                unpermute,
            },
            taken: BTreeSet::new(),
            ignorable: Vec::new(),
            ignorable_prefixes: Vec::new(),
            device,
            kind,
        }
    }

    /// Marks names (exact) that may stay unused without an error.
    pub(crate) fn ignore(&mut self, name: impl Into<String>) {
        self.ignorable.push(name.into());
    }

    /// Marks name prefixes whose tensors may stay unused.
    pub(crate) fn ignore_prefixes<S: Into<String>>(
        &mut self,
        prefixes: impl IntoIterator<Item = S>,
    ) {
        self.ignorable_prefixes
            .extend(prefixes.into_iter().map(Into::into));
    }

    /// Whether the checkpoint has a tensor called `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        match &self.source {
            Source::Safetensors { index, .. } => index.contains_key(name),
            Source::Gguf { names, .. } => names.contains_key(name),
        }
    }

    /// The file that holds (or would hold) `name`, for error messages.
    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        match &self.source {
            Source::Safetensors { files, index } => {
                let i = index.get(name).copied().unwrap_or(0);
                files.get(i).map(|f| f.path.clone()).unwrap_or_default()
            }
            Source::Gguf { file, .. } => file.path().to_path_buf(),
        }
    }

    /// Whether the source is GGUF (whose Gemma norm weights already hold `1 + w`).
    pub(crate) fn is_gguf(&self) -> bool {
        matches!(self.source, Source::Gguf { .. })
    }

    /// Tensor `name` on the CPU in its stored dtype (`f32` for GGUF), checked against `shape`.
    pub(crate) fn raw(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let t = match &self.source {
            Source::Safetensors { files, index } => {
                let i = *index.get(name).ok_or_else(|| self.missing(name))?;
                files[i].read(name)?
            }
            Source::Gguf {
                file,
                names,
                unpermute,
            } => {
                let gguf_name = names.get(name).ok_or_else(|| self.missing(name))?;
                let t = file.to_tensor(gguf_name)?;
                match (unpermute, name.rsplit('.').nth(1)) {
                    (Some((heads, _)), Some("q_proj")) => unpermute_rows(t, *heads)?,
                    (Some((_, kv_heads)), Some("k_proj")) => unpermute_rows(t, *kv_heads)?,
                    _ => t,
                }
            }
        };
        if t.size() != shape {
            return Err(Error::TensorShape {
                path: self.path_of(name),
                tensor: name.to_owned(),
                expected: shape.to_vec(),
                found: t.size(),
            });
        }
        self.taken.insert(name.to_owned());
        Ok(t)
    }

    /// A tensor the builder made from raw ones (a fused projection), moved to the model's
    /// dtype and device, contiguous.
    pub(crate) fn place(&self, t: Tensor) -> Result<Tensor> {
        Ok(t.f_to_device(self.device)?
            .f_to_kind(self.kind)?
            .f_contiguous()?)
    }

    /// Tensor `name` in the model's dtype on its device.
    pub(crate) fn get(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.raw(name, shape)?;
        self.place(t)
    }

    fn missing(&self, name: &str) -> Error {
        let path = match &self.source {
            Source::Safetensors { files, .. } => match files.as_slice() {
                [one] => one.path.clone(),
                _ => files
                    .first()
                    .and_then(|f| f.path.parent())
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            },
            Source::Gguf { file, .. } => file.path().to_path_buf(),
        };
        let tensor = match &self.source {
            Source::Gguf { .. } => match hf_to_gguf_hint(name) {
                Some(g) => format!("{g} ({name})"),
                None => name.to_owned(),
            },
            Source::Safetensors { .. } => name.to_owned(),
        };
        Error::MissingTensor { path, tensor }
    }

    /// Errors if the checkpoint holds tensors the model did not take.
    pub(crate) fn finish(&self) -> Result<()> {
        let all: Vec<(String, String)> = match &self.source {
            Source::Safetensors { index, .. } => {
                index.keys().map(|k| (k.clone(), k.clone())).collect()
            }
            Source::Gguf { file, names, .. } => {
                let mapped: BTreeMap<&String, &String> =
                    names.iter().map(|(h, g)| (g, h)).collect();
                file.tensors()
                    .iter()
                    .map(|t| {
                        let hf = mapped
                            .get(&t.name)
                            .map(|s| s.to_string())
                            .unwrap_or_default();
                        (t.name.clone(), hf)
                    })
                    .collect()
            }
        };
        let mut left: Vec<String> = all
            .into_iter()
            .filter(|(_, hf)| !self.taken.contains(hf) && !self.ignorable.contains(hf))
            .map(|(name, hf)| if hf.is_empty() { name } else { hf })
            .filter(|name| !is_buffer(name) && name != "rope_freqs.weight")
            .filter(|name| {
                !self
                    .ignorable_prefixes
                    .iter()
                    .any(|p| name.starts_with(p.as_str()))
            })
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        left.sort();
        let path = self.path_of(&left[0]);
        left.truncate(20);
        Err(Error::UnexpectedTensors {
            path,
            tensors: left,
        })
    }
}

/// Non-parameter buffers that some HF checkpoints carry: causal-mask and RoPE caches.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with(".attention.bias")
        || name.ends_with(".attention.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
}

/// Undoes `LlamaModel.permute` of llama.cpp's converter: rows of each head are stored
/// interleaved (`x0, x_{d/2}, x1, ...`) for ggml's interleaved RoPE; HF's rotate-half wants
/// the two halves.
///
/// # Shapes
/// `t`: `[heads * head_dim, ...]` (a weight or a bias), returned with the same shape.
fn unpermute_rows(t: Tensor, heads: i64) -> Result<Tensor> {
    let shape = t.size();
    let rows = shape[0];
    if heads <= 0 || rows % (2 * heads) != 0 {
        return Ok(t);
    }
    let rest: Vec<i64> = shape[1..].to_vec();
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend(&rest);
    Ok(t.f_reshape(&split)?
        .f_transpose(1, 2)?
        .f_contiguous()?
        .f_reshape(&shape)?)
}

/// llama.cpp's names of the tensors outside the blocks beside HF's, the same in every family.
const TOP_LEVEL: &[(&str, &str)] = &[
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// The HF name (with the `model.` prefix) of a GGUF tensor in a file of `arch`.
fn gguf_to_hf(name: &str, arch: Arch) -> Option<String> {
    let spec = arch.family().gguf.as_ref()?;
    let (stem, suffix) = name.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let hf = match TOP_LEVEL.iter().find(|(g, _)| *g == stem) {
        Some((_, hf)) => (*hf).to_owned(),
        None => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, member) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            format!("model.layers.{layer}.{}", spec.hf_name(member)?)
        }
    };
    Some(format!("{hf}.{suffix}"))
}

/// The GGUF spelling of an HF name, for "missing tensor" messages: the first family's that has
/// one.
fn hf_to_gguf_hint(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let gguf = match TOP_LEVEL.iter().find(|(_, hf)| *hf == stem) {
        Some((g, _)) => (*g).to_owned(),
        None => {
            let rest = stem.strip_prefix("model.layers.")?;
            let (layer, member) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let member = arch::gguf_specs().find_map(|s| s.gguf_name(member))?;
            format!("blk.{layer}.{member}")
        }
    };
    Some(format!("{gguf}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, d/2, in).swapaxes(1, 2).reshape(w.shape)
        let heads = 3;
        let d = 8;
        let w = Tensor::arange(heads * d * 5, (Kind::Float, Device::Cpu)).reshape([heads * d, 5]);
        let permuted = w
            .reshape([heads, 2, d / 2, 5])
            .transpose(1, 2)
            .contiguous()
            .reshape([heads * d, 5]);
        let back = unpermute_rows(permuted, heads).unwrap();
        assert!(back.equal(&w));
        let b = Tensor::arange(heads * d, (Kind::Float, Device::Cpu));
        let pb = b
            .reshape([heads, 2, d / 2])
            .transpose(1, 2)
            .contiguous()
            .reshape([heads * d]);
        assert!(unpermute_rows(pb, heads).unwrap().equal(&b));
    }

    #[test]
    fn gguf_names_map_to_hf() {
        assert_eq!(
            gguf_to_hf("blk.3.attn_q.weight", Arch::Llama).as_deref(),
            Some("model.layers.3.self_attn.q_proj.weight")
        );
        assert_eq!(
            gguf_to_hf("blk.0.ffn_norm.weight", Arch::Llama).as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            gguf_to_hf("blk.0.ffn_norm.weight", Arch::Gemma2).as_deref(),
            Some("model.layers.0.pre_feedforward_layernorm.weight")
        );
        assert_eq!(
            gguf_to_hf("blk.0.post_attention_norm.weight", Arch::Gemma3).as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            gguf_to_hf("output.weight", Arch::Llama).as_deref(),
            Some("lm_head.weight")
        );
        assert_eq!(gguf_to_hf("rope_freqs.weight", Arch::Llama), None);
        assert_eq!(
            hf_to_gguf_hint("model.layers.2.mlp.up_proj.weight").as_deref(),
            Some("blk.2.ffn_up.weight")
        );
    }
}
