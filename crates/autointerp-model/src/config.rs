//! Model configuration: Hugging Face `config.json` files parsed as they are, one serde struct
//! per family, then converted into the one [`Config`] the forward pass reads (candle's
//! `into_config` style). GGUF metadata converts into the same [`Config`].

use std::path::Path;

use serde::Deserialize;

use crate::gguf::GgufFile;
use crate::{Error, Result};

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
    pub const SUPPORTED_MODEL_TYPES: &'static [&'static str] = &[
        "gpt2",
        "llama",
        "mistral",
        "qwen2",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "gpt_neox",
    ];

    /// The GGUF `general.architecture` values [`Config::from_gguf`] accepts.
    pub const SUPPORTED_GGUF_ARCHS: &'static [&'static str] =
        &["llama", "qwen2", "gemma2", "gemma3"];

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
}

/// The MLP's activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// `x * sigmoid(x)` (HF `silu`, `swish`).
    Silu,
    /// The tanh approximation of GELU (HF `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    /// The exact (erf) GELU (HF `gelu`).
    Gelu,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    pub(crate) fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Self::Silu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh" => Self::GeluTanh,
            "gelu" | "gelu_python" => Self::Gelu,
            "relu" => Self::Relu,
            _ => return None,
        })
    }
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RopeScaling {
    /// `inv_freq / factor` (HF `linear`).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's piecewise rule (HF `llama3`).
    Llama3 {
        /// The divisor for low frequencies.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: f64,
    },
    /// One divisor per frequency (llama.cpp's `rope_freqs.weight`, which stores Llama 3.1's rule
    /// precomputed).
    FreqFactors(Vec<f64>),
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// The base (`rope_theta`).
    pub theta: f64,
    /// How many leading dimensions of each head rotate (the whole head but for GPT-NeoX).
    pub rotary_dim: usize,
    /// Frequency rescaling, if any.
    pub scaling: Option<RopeScaling>,
}

impl RopeConfig {
    /// The inverse frequencies, as HF computes them (in `f32`, scaling applied).
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.rotary_dim;
        let mut inv: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| {
                // HF: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), in float32.
                let exponent = i as f32 / d as f32;
                1.0 / (self.theta as f32).powf(exponent)
            })
            .collect();
        match &self.scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => {
                for f in &mut inv {
                    *f /= *factor as f32;
                }
            }
            Some(RopeScaling::FreqFactors(factors)) => {
                for (f, d) in inv.iter_mut().zip(factors) {
                    *f /= *d as f32;
                }
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: orig,
            }) => {
                let (factor, low, high, orig) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                    *orig as f32,
                );
                let low_freq_wavelen = orig / low;
                let high_freq_wavelen = orig / high;
                for f in &mut inv {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    *f = if wavelen < high_freq_wavelen {
                        *f
                    } else if wavelen > low_freq_wavelen {
                        *f / factor
                    } else {
                        let smooth = (orig / wavelen - low) / (high - low);
                        (1.0 - smooth) * *f / factor + smooth * *f
                    };
                }
            }
        }
        inv
    }
}

/// Whether a layer attends to everything before it or to a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerAttention {
    /// Causal attention over the whole prefix.
    Full,
    /// Causal attention over the last [`Config::sliding_window`] positions (itself included).
    Sliding,
}

/// Everything the forward pass needs to know about a model, whatever file it came from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The architecture family.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// d_model.
    pub hidden_size: usize,
    /// The MLP's hidden width (the `mlp.hidden` hook's last dimension).
    pub intermediate_size: usize,
    /// The number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (fewer than query heads with grouped-query attention).
    pub num_kv_heads: usize,
    /// Dimension of each head.
    pub head_dim: usize,
    /// The norms' epsilon.
    pub norm_eps: f64,
    /// The MLP's activation.
    pub activation: Activation,
    /// Learned positions (GPT-2) or the context the model was trained with.
    pub max_position_embeddings: usize,
    /// RoPE of full-attention layers (of all layers but Gemma 3's sliding ones); `None` for
    /// learned positions (GPT-2).
    pub rope: Option<RopeConfig>,
    /// RoPE of Gemma 3's sliding layers.
    pub rope_local: Option<RopeConfig>,
    /// The window of [`LayerAttention::Sliding`] layers.
    pub sliding_window: Option<usize>,
    /// One entry per layer.
    pub layer_types: Vec<LayerAttention>,
    /// The factor applied to `q·k` scores.
    pub attn_scale: f64,
    /// Gemma 2's `tanh(s / cap) * cap` on attention scores.
    pub attn_logit_softcap: Option<f64>,
    /// Gemma 2's softcap on the final logits.
    pub final_logit_softcap: Option<f64>,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// A bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// GPT-NeoX's `x + attn(ln1(x)) + mlp(ln2(x))`.
    pub parallel_residual: bool,
    /// Whether the unembedding is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (some models have several).
    pub eos_token_ids: Vec<u32>,
    /// The padding token.
    pub pad_token_id: Option<u32>,
}

impl Config {
    /// Reads and converts the `config.json` at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Config`] if it is not valid for its
    /// family, [`Error::UnknownModelType`] for an unsupported `model_type`.
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hf_json(&text, path)
    }

    /// Converts the text of a `config.json`; `path` names it in errors.
    ///
    /// # Errors
    /// As [`Config::from_hf_file`].
    pub fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let err = |problem: String| Error::Config {
            path: path.to_path_buf(),
            problem,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| err("no \"model_type\" string".into()))?
            .to_owned();
        // transformers 5.x spellings (nulls, `rope_parameters`) become 4.x ones, and a key no
        // converter reads is an error rather than a silent default.
        fn parse<T: serde::de::DeserializeOwned>(
            mut v: serde_json::Value,
            path: &Path,
            model_type: &str,
            keys: &[&str],
            local_rope: bool,
        ) -> Result<T> {
            let err = |problem: String| Error::Config {
                path: path.to_path_buf(),
                problem,
            };
            let object = v
                .as_object_mut()
                .ok_or_else(|| err(format!("{model_type}: the config is not a JSON object")))?;
            crate::hf_compat::normalize(object, model_type, keys, local_rope).map_err(err)?;
            serde_json::from_value(v).map_err(|e| err(format!("{model_type}: {e}")))
        }
        let config = match model_type.as_str() {
            "gpt2" => {
                parse::<HfGpt2Config>(value, path, &model_type, GPT2_KEYS, false)?.into_config()
            }
            "llama" | "mistral" => {
                parse::<HfLlamaConfig>(value, path, &model_type, LLAMA_KEYS, false)?
                    .into_config(Arch::Llama, &model_type)
            }
            "qwen2" => parse::<HfLlamaConfig>(value, path, &model_type, LLAMA_KEYS, false)?
                .into_config(Arch::Qwen2, &model_type),
            "gemma2" => parse::<HfGemmaConfig>(value, path, &model_type, GEMMA_KEYS, false)?
                .into_config(Arch::Gemma2),
            "gemma3_text" => parse::<HfGemmaConfig>(value, path, &model_type, GEMMA_KEYS, true)?
                .into_config(Arch::Gemma3),
            "gemma3" => {
                // The multimodal wrapper: the language model's config is `text_config`.
                let mut text = value
                    .get("text_config")
                    .cloned()
                    .ok_or_else(|| err("model_type gemma3 without \"text_config\"".into()))?;
                // Token ids of the wrapper (what HF generation reads) win over the nested ones.
                if let (Some(obj), Some(top)) = (text.as_object_mut(), value.as_object()) {
                    for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
                        if let Some(v) = top.get(key) {
                            obj.insert(key.to_owned(), v.clone());
                        }
                    }
                }
                parse::<HfGemmaConfig>(text, path, &model_type, GEMMA_KEYS, true)?
                    .into_config(Arch::Gemma3)
            }
            "gpt_neox" => {
                parse::<HfNeoxConfig>(value, path, &model_type, NEOX_KEYS, false)?.into_config()
            }
            _ => {
                return Err(Error::UnknownModelType {
                    path: path.to_path_buf(),
                    model_type,
                    supported: Arch::SUPPORTED_MODEL_TYPES
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                })
            }
        };
        let config = config.map_err(err)?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Builds the config of a GGUF model from its metadata (and, for Llama 3.1 files, its
    /// `rope_freqs.weight` tensor).
    ///
    /// # Errors
    /// [`Error::UnknownModelType`] for an architecture other than llama, qwen2, gemma2, gemma3;
    /// [`Error::MissingMetadata`] and the like for absent keys; [`Error::Config`] for an
    /// unsupported option.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path().to_path_buf();
        let err = |problem: String| Error::Config {
            path: path.clone(),
            problem,
        };
        let arch = match gguf.architecture()? {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::UnknownModelType {
                    path: path.clone(),
                    model_type: other.to_owned(),
                    supported: Arch::SUPPORTED_GGUF_ARCHS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                })
            }
        };
        let hp = gguf.hparams()?;
        let a = hp.architecture.clone();
        let head_dim = hp.head_dim();
        let rotary_dim = hp.rope_dimension_count.unwrap_or(head_dim);
        let mut scaling = match hp.rope_scaling_type.as_deref() {
            None | Some("none") => None,
            Some("linear") => Some(RopeScaling::Linear {
                factor: hp.rope_scaling_factor.ok_or_else(|| {
                    err(format!("{a}.rope.scaling.type is linear without a factor"))
                })? as f64,
            }),
            Some(other) => {
                return Err(err(format!("rope scaling type {other:?} is not supported")))
            }
        };
        if gguf.has_tensor("rope_freqs.weight") {
            let (factors, _) = gguf.dequantize("rope_freqs.weight")?;
            if factors.len() != rotary_dim / 2 {
                return Err(err(format!(
                    "rope_freqs.weight has {} values, expected {}",
                    factors.len(),
                    rotary_dim / 2
                )));
            }
            scaling = Some(RopeScaling::FreqFactors(
                factors.into_iter().map(f64::from).collect(),
            ));
        }
        let theta = hp.rope_freq_base.map(f64::from).unwrap_or(10_000.0);
        let rope = RopeConfig {
            theta,
            rotary_dim,
            scaling,
        };
        let n = hp.block_count;
        let (layer_types, rope_local, attn_scale) = match arch {
            Arch::Gemma2 | Arch::Gemma3 => {
                // Gemma 2: even layers slide; Gemma 3: all but every 6th (llama.cpp's default),
                // unless `{arch}.attention.sliding_window_pattern` says otherwise: a period,
                // or one flag per layer (nonzero = sliding).
                let key = format!("{a}.attention.sliding_window_pattern");
                let flags: Vec<bool> = match gguf.get(&key) {
                    Some(crate::gguf::Value::Array(arr)) => match arr {
                        crate::gguf::Array::Bool(b) => b.clone(),
                        other => other
                            .to_i64_vec()
                            .ok_or_else(|| {
                                err(format!("{key} is neither a period nor per-layer flags"))
                            })?
                            .into_iter()
                            .map(|v| v != 0)
                            .collect(),
                    },
                    _ => {
                        let period = match arch {
                            Arch::Gemma2 => 2,
                            _ => gguf.opt_usize(&key)?.unwrap_or(6).max(1),
                        };
                        (0..n).map(|i| (i + 1) % period != 0).collect()
                    }
                };
                if flags.len() != n {
                    return Err(err(format!(
                        "{key} has {} entries for {n} layers",
                        flags.len()
                    )));
                }
                let types = flags
                    .into_iter()
                    .map(|sliding| {
                        if sliding && hp.sliding_window.is_some() {
                            LayerAttention::Sliding
                        } else {
                            LayerAttention::Full
                        }
                    })
                    .collect();
                // llama.cpp: 1/sqrt(head_dim), except the 27B models, which use
                // 1/sqrt(d_model / n_head) (HF's query_pre_attn_scalar).
                let is_27b = (arch == Arch::Gemma2 && n == 46) || (arch == Arch::Gemma3 && n == 62);
                let scalar = match gguf.opt_f32(&format!("{a}.attention.scale"))? {
                    Some(scale) if scale > 0.0 => 1.0 / (f64::from(scale) * f64::from(scale)),
                    _ if is_27b => (hp.embedding_length / hp.head_count) as f64,
                    _ => head_dim as f64,
                };
                let local = (arch == Arch::Gemma3).then(|| RopeConfig {
                    theta: gguf
                        .opt_f32(&format!("{a}.rope.freq_base_swa"))
                        .ok()
                        .flatten()
                        .map(f64::from)
                        .unwrap_or(10_000.0),
                    rotary_dim,
                    scaling: None,
                });
                (types, local, scalar.powf(-0.5))
            }
            _ => (
                vec![LayerAttention::Full; n],
                None,
                (head_dim as f64).powf(-0.5),
            ),
        };
        let tok_id = |key: &str| -> Result<Option<u32>> {
            Ok(gguf.opt_u64(key)?.and_then(|v| u32::try_from(v).ok()))
        };
        let vocab_size = match hp.vocab_size {
            Some(v) => v,
            None => gguf.tensor_info("token_embd.weight")?.shape()[0] as usize,
        };
        let config = Config {
            arch,
            vocab_size,
            hidden_size: hp.embedding_length,
            intermediate_size: hp.feed_forward_length,
            num_layers: n,
            num_heads: hp.head_count,
            num_kv_heads: hp.head_count_kv,
            head_dim,
            norm_eps: f64::from(hp.rms_norm_eps),
            activation: if arch.is_gemma() {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            max_position_embeddings: hp.context_length,
            rope: Some(rope),
            rope_local,
            sliding_window: if arch.is_gemma() {
                hp.sliding_window
            } else {
                None
            },
            layer_types,
            attn_scale,
            attn_logit_softcap: if arch == Arch::Gemma2 {
                hp.attn_logit_softcapping.map(f64::from)
            } else {
                None
            },
            final_logit_softcap: hp.final_logit_softcapping.map(f64::from),
            qkv_bias: gguf.has_tensor("blk.0.attn_q.bias"),
            o_bias: gguf.has_tensor("blk.0.attn_output.bias"),
            mlp_bias: false,
            parallel_residual: false,
            tie_word_embeddings: hp.tied_embeddings,
            bos_token_id: tok_id("tokenizer.ggml.bos_token_id")?,
            eos_token_ids: tok_id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
            pad_token_id: tok_id("tokenizer.ggml.padding_token_id")?,
        };
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Checks the sizes against each other.
    fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.layer_types.len() != self.num_layers {
            return Err(format!(
                "layer_types has {} entries for {} layers",
                self.layer_types.len(),
                self.num_layers
            ));
        }
        if self.layer_types.contains(&LayerAttention::Sliding)
            && self.sliding_window.unwrap_or(0) == 0
        {
            return Err("sliding layers without a positive sliding_window".into());
        }
        for rope in self.rope.iter().chain(&self.rope_local) {
            if rope.rotary_dim == 0 || rope.rotary_dim % 2 != 0 || rope.rotary_dim > self.head_dim {
                return Err(format!(
                    "rotary dimension {} must be even and in 2..={}",
                    rope.rotary_dim, self.head_dim
                ));
            }
            if rope.theta.is_nan() || rope.theta <= 0.0 {
                return Err(format!("rope theta {} must be positive", rope.theta));
            }
        }
        if u32::try_from(self.vocab_size).is_err() {
            return Err(format!("vocab_size {} is too large", self.vocab_size));
        }
        Ok(())
    }

    /// Whether layer `i` uses Gemma 3's local RoPE.
    pub(crate) fn uses_local_rope(&self, i: usize) -> bool {
        self.rope_local.is_some() && self.layer_types[i] == LayerAttention::Sliding
    }
}

// ---------------------------------------------------------------------------------------------
// HF config.json, one struct per family. Unknown fields are ignored; defaults are HF's.

/// `bos_token_id` / `eos_token_id`: an integer, a list of integers, or null.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    #[default]
    None,
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn first(&self) -> Option<u32> {
        self.all().first().copied()
    }

    fn all(&self) -> Vec<u32> {
        match self {
            TokenIds::None => Vec::new(),
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The token ids every HF config may carry.
#[derive(Debug, Default, Deserialize)]
struct HfTokens {
    #[serde(default)]
    bos_token_id: Option<TokenIds>,
    #[serde(default)]
    eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pad_token_id: Option<TokenIds>,
}

impl HfTokens {
    fn apply(&self, c: &mut Config) {
        c.bos_token_id = self.bos_token_id.as_ref().and_then(TokenIds::first);
        c.eos_token_ids = self
            .eos_token_id
            .as_ref()
            .map(TokenIds::all)
            .unwrap_or_default();
        c.pad_token_id = self.pad_token_id.as_ref().and_then(TokenIds::first);
    }
}

/// `rope_scaling` as HF writes it (`rope_type`, or `type` in older files).
#[derive(Debug, Deserialize)]
struct HfRopeScaling {
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    low_freq_factor: Option<f64>,
    #[serde(default)]
    high_freq_factor: Option<f64>,
    #[serde(default)]
    original_max_position_embeddings: Option<f64>,
}

fn rope_scaling(s: &Option<HfRopeScaling>) -> std::result::Result<Option<RopeScaling>, String> {
    let Some(s) = s else { return Ok(None) };
    let kind = s
        .rope_type
        .as_deref()
        .or(s.type_.as_deref())
        .unwrap_or("default");
    let need =
        |v: Option<f64>, name: &str| v.ok_or_else(|| format!("rope_scaling {kind} without {name}"));
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: need(s.factor, "factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: need(s.factor, "factor")?,
            low_freq_factor: need(s.low_freq_factor, "low_freq_factor")?,
            high_freq_factor: need(s.high_freq_factor, "high_freq_factor")?,
            original_max_position_embeddings: need(
                s.original_max_position_embeddings,
                "original_max_position_embeddings",
            )?,
        }),
        other => {
            return Err(format!(
                "rope_scaling type {other:?} is not supported (supported: default, linear, llama3)"
            ))
        }
    })
}

fn activation(name: &str) -> std::result::Result<Activation, String> {
    Activation::from_hf(name).ok_or_else(|| {
        format!("activation {name:?} is not supported (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)")
    })
}

fn parse_layer_types(
    types: &[String],
    n: usize,
) -> std::result::Result<Vec<LayerAttention>, String> {
    if types.len() != n {
        return Err(format!(
            "layer_types has {} entries for {n} layers",
            types.len()
        ));
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "full_attention" => Ok(LayerAttention::Full),
            "sliding_attention" => Ok(LayerAttention::Sliding),
            other => Err(format!("layer type {other:?} is not supported")),
        })
        .collect()
}

/// How many leading dimensions of each head rotate: HF's `int(head_dim * partial_rotary_factor)`.
fn rotary_dim(
    head_dim: usize,
    partial_rotary_factor: Option<f64>,
) -> std::result::Result<usize, String> {
    match partial_rotary_factor {
        None => Ok(head_dim),
        Some(f) if f > 0.0 && f <= 1.0 => Ok((head_dim as f64 * f) as usize),
        Some(f) => Err(format!("partial_rotary_factor {f} must be in (0, 1]")),
    }
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_layer_norm_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

/// The keys [`HfLlamaConfig`] reads (every other key that may change the forward pass is refused).
const LLAMA_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "partial_rotary_factor",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
];

/// `config.json` of `llama`, `mistral` and `qwen2`.
#[derive(Debug, Deserialize)]
struct HfLlamaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default)]
    rope_scaling: Option<HfRopeScaling>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    max_window_layers: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(flatten)]
    tokens: HfTokens,
}

impl HfLlamaConfig {
    fn into_config(self, arch: Arch, model_type: &str) -> std::result::Result<Config, String> {
        let n = self.num_hidden_layers;
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1));
        // Which layers slide: Mistral applies `sliding_window` to every layer; Qwen2 only when
        // `use_sliding_window`, from layer `max_window_layers` on; Llama never.
        let sliding_window = match (arch, model_type) {
            (Arch::Qwen2, _) if !self.use_sliding_window => None,
            (_, "llama") => None,
            _ => self.sliding_window,
        };
        let layer_types = match (&self.layer_types, arch) {
            (Some(types), _) => parse_layer_types(types, n)?,
            (None, Arch::Qwen2) => {
                let first = self.max_window_layers.unwrap_or(28);
                (0..n)
                    .map(|i| {
                        if sliding_window.is_some() && i >= first {
                            LayerAttention::Sliding
                        } else {
                            LayerAttention::Full
                        }
                    })
                    .collect()
            }
            (None, _) if sliding_window.is_some() => vec![LayerAttention::Sliding; n],
            (None, _) => vec![LayerAttention::Full; n],
        };
        let mut c = Config {
            arch,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: n,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            norm_eps: self.rms_norm_eps,
            activation: activation(self.hidden_act.as_deref().unwrap_or("silu"))?,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(2048),
            rope: Some(RopeConfig {
                theta: self.rope_theta,
                rotary_dim: rotary_dim(head_dim, self.partial_rotary_factor)?,
                scaling: rope_scaling(&self.rope_scaling)?,
            }),
            rope_local: None,
            sliding_window,
            layer_types,
            attn_scale: (head_dim as f64).powf(-0.5),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            qkv_bias: arch == Arch::Qwen2 || self.attention_bias,
            o_bias: arch != Arch::Qwen2 && self.attention_bias,
            mlp_bias: self.mlp_bias,
            parallel_residual: false,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
        };
        self.tokens.apply(&mut c);
        Ok(c)
    }
}

fn default_gemma_head_dim() -> usize {
    256
}
fn default_query_pre_attn_scalar() -> f64 {
    256.0
}
fn default_sliding_window() -> Option<usize> {
    Some(4096)
}
/// Absent → `None`, `null` → `Some(None)`, a number → `Some(Some(x))`: Gemma 2 and 3 default
/// their softcaps differently, so absence must be told from null.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// The keys [`HfGemmaConfig`] reads.
const GEMMA_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_activation",
    "hidden_act",
    "rms_norm_eps",
    "rope_theta",
    "rope_local_base_freq",
    "rope_scaling",
    "partial_rotary_factor",
    "query_pre_attn_scalar",
    "sliding_window",
    "sliding_window_pattern",
    "layer_types",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "tie_word_embeddings",
    "attention_bias",
    "use_bidirectional_attention",
];

/// `config.json` of `gemma2` and `gemma3_text` (and the `text_config` of `gemma3`).
#[derive(Debug, Deserialize)]
struct HfGemmaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_gemma_head_dim")]
    head_dim: usize,
    #[serde(default)]
    hidden_activation: Option<String>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_local_base_freq: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<HfRopeScaling>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default = "default_query_pre_attn_scalar")]
    query_pre_attn_scalar: f64,
    #[serde(default = "default_sliding_window")]
    sliding_window: Option<usize>,
    #[serde(default)]
    sliding_window_pattern: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    attn_logit_softcapping: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    final_logit_softcapping: Option<Option<f64>>,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    use_bidirectional_attention: bool,
    #[serde(flatten)]
    tokens: HfTokens,
}

impl HfGemmaConfig {
    fn into_config(self, arch: Arch) -> std::result::Result<Config, String> {
        let n = self.num_hidden_layers;
        if self.use_bidirectional_attention {
            return Err("use_bidirectional_attention is not supported".into());
        }
        let layer_types = match &self.layer_types {
            Some(types) => parse_layer_types(types, n)?,
            None => {
                // Gemma 2: even layers slide; Gemma 3: all but every `pattern`-th.
                let pattern = if arch == Arch::Gemma2 {
                    2
                } else {
                    self.sliding_window_pattern.unwrap_or(6).max(1)
                };
                (0..n)
                    .map(|i| {
                        if (i + 1) % pattern != 0 {
                            LayerAttention::Sliding
                        } else {
                            LayerAttention::Full
                        }
                    })
                    .collect()
            }
        };
        let default_theta = if arch == Arch::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        };
        let rotary_dim = rotary_dim(self.head_dim, self.partial_rotary_factor)?;
        let rope = RopeConfig {
            theta: self.rope_theta.unwrap_or(default_theta),
            rotary_dim,
            scaling: rope_scaling(&self.rope_scaling)?,
        };
        let rope_local = (arch == Arch::Gemma3).then(|| RopeConfig {
            theta: self.rope_local_base_freq.unwrap_or(10_000.0),
            rotary_dim,
            scaling: None,
        });
        // Gemma 3 ignores attn_logit_softcapping (it is not passed to its attention), and its
        // HF defaults for both softcaps are null; Gemma 2's are 50 and 30.
        let (attn_cap, final_cap) = match arch {
            Arch::Gemma2 => (
                self.attn_logit_softcapping.unwrap_or(Some(50.0)),
                self.final_logit_softcapping.unwrap_or(Some(30.0)),
            ),
            _ => (None, self.final_logit_softcapping.flatten()),
        };
        let act = self
            .hidden_activation
            .as_deref()
            .or(self.hidden_act.as_deref())
            .unwrap_or("gelu_pytorch_tanh");
        let mut c = Config {
            arch,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: n,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self.head_dim,
            norm_eps: self.rms_norm_eps,
            activation: activation(act)?,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(8192),
            rope: Some(rope),
            rope_local,
            sliding_window: self.sliding_window,
            layer_types,
            attn_scale: self.query_pre_attn_scalar.powf(-0.5),
            attn_logit_softcap: attn_cap,
            final_logit_softcap: final_cap,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: false,
            parallel_residual: false,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
        };
        self.tokens.apply(&mut c);
        Ok(c)
    }
}

fn default_n_positions() -> usize {
    1024
}
fn default_gpt2_act() -> String {
    "gelu_new".into()
}

/// The keys [`HfGpt2Config`] reads, and GPT-2's own that do not change the forward pass (`n_ctx`
/// is `n_positions` again; the `summary_*` keys configure a classification head;
/// `reorder_and_upcast_attn` only changes the precision of a half-precision softmax).
const GPT2_KEYS: &[&str] = &[
    "vocab_size",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "activation_function",
    "layer_norm_epsilon",
    "n_positions",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "tie_word_embeddings",
    "n_ctx",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "reorder_and_upcast_attn",
];

/// `config.json` of `gpt2`.
#[derive(Debug, Deserialize)]
struct HfGpt2Config {
    vocab_size: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "default_gpt2_act")]
    activation_function: String,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_n_positions")]
    n_positions: usize,
    #[serde(default = "default_true")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(flatten)]
    tokens: HfTokens,
}

impl HfGpt2Config {
    fn into_config(self) -> std::result::Result<Config, String> {
        if self.scale_attn_by_inverse_layer_idx {
            return Err("scale_attn_by_inverse_layer_idx is not supported".into());
        }
        if !self.tie_word_embeddings {
            return Err("untied GPT-2 (tie_word_embeddings false) is not supported".into());
        }
        let head_dim = self.n_embd / self.n_head.max(1);
        let mut c = Config {
            arch: Arch::Gpt2,
            vocab_size: self.vocab_size,
            hidden_size: self.n_embd,
            intermediate_size: self.n_inner.unwrap_or(4 * self.n_embd),
            num_layers: self.n_layer,
            num_heads: self.n_head,
            num_kv_heads: self.n_head,
            head_dim,
            norm_eps: self.layer_norm_epsilon,
            activation: activation(&self.activation_function)?,
            max_position_embeddings: self.n_positions,
            rope: None,
            rope_local: None,
            sliding_window: None,
            layer_types: vec![LayerAttention::Full; self.n_layer],
            attn_scale: if self.scale_attn_weights {
                (head_dim as f64).powf(-0.5)
            } else {
                1.0
            },
            attn_logit_softcap: None,
            final_logit_softcap: None,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            parallel_residual: false,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
        };
        self.tokens.apply(&mut c);
        Ok(c)
    }
}

/// The keys [`HfNeoxConfig`] reads.
const NEOX_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "rotary_pct",
    "partial_rotary_factor",
    "rotary_emb_base",
    "rope_theta",
    "rope_scaling",
    "layer_norm_eps",
    "use_parallel_residual",
    "tie_word_embeddings",
    "attention_bias",
];

/// `config.json` of `gpt_neox` (Pythia).
#[derive(Debug, Deserialize)]
struct HfNeoxConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    rotary_pct: Option<f64>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    rotary_emb_base: Option<f64>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<HfRopeScaling>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_true")]
    use_parallel_residual: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_true")]
    attention_bias: bool,
    #[serde(flatten)]
    tokens: HfTokens,
}

impl HfNeoxConfig {
    fn into_config(self) -> std::result::Result<Config, String> {
        let head_dim = self.hidden_size / self.num_attention_heads.max(1);
        let pct = self
            .partial_rotary_factor
            .or(self.rotary_pct)
            .or(Some(0.25));
        let rotary_dim = rotary_dim(head_dim, pct)?;
        let mut c = Config {
            arch: Arch::GptNeox,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_attention_heads,
            head_dim,
            norm_eps: self.layer_norm_eps,
            activation: activation(self.hidden_act.as_deref().unwrap_or("gelu"))?,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(2048),
            rope: Some(RopeConfig {
                theta: self.rope_theta.or(self.rotary_emb_base).unwrap_or(10_000.0),
                rotary_dim,
                scaling: rope_scaling(&self.rope_scaling)?,
            }),
            rope_local: None,
            sliding_window: None,
            layer_types: vec![LayerAttention::Full; self.num_hidden_layers],
            attn_scale: (head_dim as f64).powf(-0.5),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: true,
            parallel_residual: self.use_parallel_residual,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
        };
        self.tokens.apply(&mut c);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config> {
        Config::from_hf_json(json, Path::new("config.json"))
    }

    #[test]
    fn llama3_inv_freq_matches_hf() {
        // README of the fixtures: default [1, 0.1, 0.01, 0.001] -> [1.0, 0.013042256, 0.00125, 0.000125].
        let rope = RopeConfig {
            theta: 10_000.0,
            rotary_dim: 8,
            scaling: Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64.0,
            }),
        };
        let got = rope.inv_freq();
        let want = [1.0, 0.013042256, 0.00125, 0.000125];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-8, "{got:?}");
        }
    }

    #[test]
    fn unknown_model_type_lists_supported_ones() {
        let msg = parse(r#"{"model_type": "bert"}"#).unwrap_err().to_string();
        assert!(msg.contains("\"bert\""), "{msg}");
        assert!(
            msg.contains("gemma3_text") && msg.contains("gpt_neox"),
            "{msg}"
        );
    }

    #[test]
    fn missing_fields_and_bad_options_are_named() {
        let msg = parse(r#"{"model_type": "llama", "vocab_size": 10}"#)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("hidden_size"), "{msg}");
        let msg = parse(
            r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 2,
                "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("yarn"), "{msg}");
        let msg = parse(
            r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2, "head_dim": 4}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("multiple"), "{msg}");
    }

    #[test]
    fn mistral_slides_every_layer_and_token_lists_parse() {
        let c = parse(
            r#"{"model_type": "mistral", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                "num_hidden_layers": 2, "num_attention_heads": 2, "sliding_window": 16,
                "eos_token_id": [1, 7], "bos_token_id": 2, "pad_token_id": null}"#,
        )
        .unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!(c.sliding_window, Some(16));
        assert_eq!(c.layer_types, vec![LayerAttention::Sliding; 2]);
        assert_eq!(c.eos_token_ids, vec![1, 7]);
        assert_eq!(c.bos_token_id, Some(2));
        assert_eq!(c.pad_token_id, None);
    }

    /// transformers 5.x writes `rope_parameters` and explicit nulls; both used to be lost (a
    /// Qwen2's theta of 1e6 silently became 10,000).
    #[test]
    fn transformers_5_configs_keep_their_rope_and_accept_nulls() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                      "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 4"#;
        let q = parse(&format!(
            r#"{{"model_type": "qwen2", {base}, "sliding_window": null,
                 "rope_parameters": {{"rope_theta": 1000000.0, "rope_type": "default",
                                      "partial_rotary_factor": 0.5}}}}"#
        ))
        .unwrap();
        let rope = q.rope.unwrap();
        assert_eq!((rope.theta, rope.rotary_dim), (1e6, 2));
        let g = parse(&format!(
            r#"{{"model_type": "gemma2", {base}, "use_bidirectional_attention": null}}"#
        ))
        .unwrap();
        assert_eq!(g.attn_logit_softcap, Some(50.0));
        let msg = parse(&format!(
            r#"{{"model_type": "qwen2", {base}, "use_mrope": true}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("config.json") && msg.contains("\"use_mrope\""),
            "{msg}"
        );
    }

    #[test]
    fn gemma_defaults_follow_hf() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                      "num_hidden_layers": 6, "num_attention_heads": 2, "head_dim": 4"#;
        let g2 = parse(&format!(r#"{{"model_type": "gemma2", {base}}}"#)).unwrap();
        assert_eq!(g2.attn_logit_softcap, Some(50.0));
        assert_eq!(g2.final_logit_softcap, Some(30.0));
        assert_eq!(g2.layer_types[0], LayerAttention::Sliding);
        assert_eq!(g2.layer_types[1], LayerAttention::Full);
        let g3 = parse(&format!(
            r#"{{"model_type": "gemma3_text", "final_logit_softcapping": null, {base}}}"#
        ))
        .unwrap();
        assert_eq!(g3.attn_logit_softcap, None);
        assert_eq!(g3.final_logit_softcap, None);
        assert_eq!(
            g3.layer_types
                .iter()
                .filter(|t| **t == LayerAttention::Full)
                .count(),
            1
        );
        assert_eq!(g3.layer_types[5], LayerAttention::Full);
        assert_eq!(g3.rope.as_ref().unwrap().theta, 1e6);
        assert_eq!(g3.rope_local.as_ref().unwrap().theta, 1e4);
    }
}
