//! Sentence embeddings with a BERT encoder, as sentence-transformers computes them: the
//! [`SentenceEmbedder`] loads a sentence-transformers folder (all-MiniLM-L6-v2 and the like) and
//! turns texts into vectors in this process.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tch::{Device, Kind, Tensor};
use tokenizers::{PostProcessor, TruncationParams};

use crate::config::Activation;
use crate::layers::{activate, layer_norm, linear, Linear, Norm};
use crate::tokenizer::{pad_batch, PaddingSide, Tokenizer};
use crate::weights::Weights;
use crate::{Error, Result};

/// How token states become one vector, as sentence-transformers' `Pooling` module says in its
/// `1_Pooling/config.json`. Several modes may be on at once: their vectors are concatenated in
/// the order CLS, max, mean, mean-sqrt-len (sentence-transformers' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pooling {
    /// The first token's state (`pooling_mode_cls_token`).
    pub cls_token: bool,
    /// The maximum over the real tokens, per dimension (`pooling_mode_max_tokens`).
    pub max_tokens: bool,
    /// The mean over the real tokens (`pooling_mode_mean_tokens`).
    pub mean_tokens: bool,
    /// The sum over the real tokens divided by the square root of their count
    /// (`pooling_mode_mean_sqrt_len_tokens`).
    pub mean_sqrt_len_tokens: bool,
}

impl Pooling {
    /// Mean pooling only: what sentence-transformers uses for a folder without `modules.json`.
    pub const MEAN: Pooling = Pooling {
        cls_token: false,
        max_tokens: false,
        mean_tokens: true,
        mean_sqrt_len_tokens: false,
    };

    /// CLS pooling only.
    pub const CLS: Pooling = Pooling {
        cls_token: true,
        max_tokens: false,
        mean_tokens: false,
        mean_sqrt_len_tokens: false,
    };

    /// How many modes are on (the embedding is this many times the hidden size).
    fn modes(self) -> usize {
        [
            self.cls_token,
            self.max_tokens,
            self.mean_tokens,
            self.mean_sqrt_len_tokens,
        ]
        .iter()
        .filter(|&&on| on)
        .count()
    }

    /// # Shapes
    /// `hidden`: `[batch, seq, d]`; `mask`: `[batch, seq]` (1 for real tokens) →
    /// `[batch, modes · d]`.
    fn pool(self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mask = mask.f_unsqueeze(-1)?.f_to_kind(hidden.kind())?; // [batch, seq, 1]
        let mut parts = Vec::with_capacity(4);
        if self.cls_token {
            parts.push(hidden.f_select(1, 0)?);
        }
        if self.max_tokens {
            // sentence-transformers sets padding states to -1e9 before the max.
            let masked = hidden.f_masked_fill(&mask.f_eq(0.0)?, -1e9)?;
            parts.push(masked.f_amax([1].as_slice(), false)?);
        }
        if self.mean_tokens || self.mean_sqrt_len_tokens {
            let sum =
                hidden
                    .f_mul(&mask)?
                    .f_sum_dim_intlist([1].as_slice(), false, hidden.kind())?;
            let count = mask
                .f_sum_dim_intlist([1].as_slice(), false, hidden.kind())?
                .f_clamp_min(1e-9)?;
            if self.mean_tokens {
                parts.push(sum.f_div(&count)?);
            }
            if self.mean_sqrt_len_tokens {
                parts.push(sum.f_div(&count.f_sqrt()?)?);
            }
        }
        Ok(Tensor::f_cat(&parts, -1)?)
    }
}

/// A sentence-transformers model with a BERT encoder (all-MiniLM-L6-v2, all-mpnet's BERT
/// cousins, BGE and E5 small/base) running in this process on libtorch, in `f32`.
///
/// It computes what `SentenceTransformer(folder).encode(texts)` does: texts are stripped of
/// surrounding whitespace (and lowercased when `sentence_bert_config.json` says
/// `do_lower_case`), tokenized with special tokens, truncated at `max_seq_length` tokens and
/// padded to the longest text of their batch; the BERT encoder's last hidden states are pooled
/// over the real tokens ([`Pooling`]) and scaled to unit length when `modules.json` lists a
/// `Normalize` module. It matches transformers + sentence-transformers to about 1e-6.
///
/// The tensors make it `Send` but not `Sync`: to share it between threads, put it behind a
/// `Mutex` or on its own thread (`autointerp-client`'s `LocalEmbedder` does the latter).
///
/// ```no_run
/// use autointerp_model::SentenceEmbedder;
///
/// # fn main() -> autointerp_model::Result<()> {
/// let embedder = SentenceEmbedder::load("all-MiniLM-L6-v2", tch::Device::Cpu)?;
/// let v = embedder.embed(&["A river bank.".to_string(), "Money in the bank.".to_string()])?;
/// assert_eq!(v[0].len(), 384);
/// let cosine: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| a * b).sum(); // unit vectors
/// # let _ = cosine; Ok(()) }
/// ```
#[derive(Debug)]
pub struct SentenceEmbedder {
    encoder: BertEncoder,
    /// The folder's tokenizer as loaded.
    tokenizer: Tokenizer,
    /// The same, truncating at `max_seq_length` and not padding (padding is done per batch).
    encoding: tokenizers::Tokenizer,
    pooling: Pooling,
    normalize: bool,
    max_seq_length: usize,
    do_lower_case: bool,
    batch_size: usize,
}

impl SentenceEmbedder {
    /// Loads a sentence-transformers folder onto `device` (for a CUDA device, parse it with
    /// [`parse_device`](crate::parse_device), which also loads libtorch's CUDA kernels):
    ///
    /// - `modules.json` lists the modules; a `Transformer` (the folder it names, usually the
    ///   root), then a `Pooling` (its `config.json`), then optionally a `Normalize`. Other
    ///   modules (`Dense`, ...) are not supported. Without `modules.json` the folder is a plain
    ///   HF model, embedded with mean pooling and no normalisation, as sentence-transformers
    ///   does;
    /// - in the transformer's folder: `config.json` (`model_type` `bert`), `model.safetensors`
    ///   (or shards listed by `model.safetensors.index.json`; tensor names with or without the
    ///   `bert.` prefix), `tokenizer.json`, and `sentence_bert_config.json` for `max_seq_length`
    ///   and `do_lower_case`. Without a `max_seq_length` the limit is the smaller of
    ///   `max_position_embeddings` and `tokenizer_config.json`'s `model_max_length`.
    ///
    /// Blocking (it reads the weights); in async code, call it inside `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::ModelPath`] naming a missing folder or file; [`Error::UnknownModelType`] for a
    /// `model_type` other than `bert`; [`Error::Config`] naming the file and key for an
    /// unsupported `hidden_act`, position embedding, pooling mode or module, or malformed JSON;
    /// [`Error::Tokenizer`] for a `tokenizer.json` that cannot be read; the tensor errors of
    /// [`Model::from_hf_dir`](crate::Model::from_hf_dir) ([`Error::MissingTensor`],
    /// [`Error::TensorShape`], [`Error::UnexpectedTensors`], ...), naming the tensor and file.
    pub fn load(source: &str, device: Device) -> Result<Self> {
        let root = Path::new(source);
        if !root.is_dir() {
            return Err(Error::ModelPath {
                path: root.to_path_buf(),
                problem: "no such folder (a sentence-transformers model folder is needed)".into(),
            });
        }
        let layout = Layout::read(root)?;
        let dir = &layout.transformer;
        let config_path = require(dir, "config.json")?;
        let config = BertConfig::read(&config_path)?;
        require(dir, "tokenizer.json")?;
        let tokenizer = Tokenizer::from_hf_dir(dir)?;

        let st_config = match &layout.sentence_config {
            Some(path) if path.is_file() => read_json::<SentenceBertConfig>(path)?,
            _ => SentenceBertConfig::default(),
        };
        let inferred = || {
            let model_max = read_model_max_length(dir);
            config
                .max_position_embeddings
                .min(model_max.unwrap_or(usize::MAX))
        };
        let mut max_seq_length = st_config.max_seq_length.unwrap_or_else(inferred);
        if max_seq_length > config.max_position_embeddings {
            tracing::warn!(
                max_seq_length,
                max_position_embeddings = config.max_position_embeddings,
                "max_seq_length exceeds the model's positions; using max_position_embeddings"
            );
            max_seq_length = config.max_position_embeddings;
        }
        let special = tokenizer
            .inner()
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_seq_length <= special {
            return Err(Error::Config {
                path: layout
                    .sentence_config
                    .clone()
                    .unwrap_or_else(|| dir.join("sentence_bert_config.json")),
                problem: format!(
                    "max_seq_length {max_seq_length} leaves no room for text after the {special} \
                     special tokens"
                ),
            });
        }
        let mut encoding = tokenizer.inner().clone();
        encoding
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::Tokenizer {
                path: dir.join("tokenizer.json"),
                problem: e.to_string(),
            })?;
        encoding.with_padding(None);

        let weights = Weights::from_hf_dir(dir, device, Kind::Float)?;
        let encoder = BertEncoder::build(&config, weights)?;
        if let Some((path, dim)) = &layout.pooling_dim {
            if *dim != config.hidden_size {
                return Err(Error::Config {
                    path: path.clone(),
                    problem: format!(
                        "word_embedding_dimension is {dim} but the model's hidden_size is {}",
                        config.hidden_size
                    ),
                });
            }
        }
        tracing::info!(
            path = %root.display(),
            layers = config.num_hidden_layers,
            hidden = config.hidden_size,
            max_seq_length,
            pooling = ?layout.pooling,
            normalize = layout.normalize,
            "loaded sentence embedder"
        );
        Ok(Self {
            encoder,
            tokenizer,
            encoding,
            pooling: layout.pooling,
            normalize: layout.normalize,
            max_seq_length,
            do_lower_case: st_config.do_lower_case,
            batch_size: 32,
        })
    }

    /// Sets how many texts run through the encoder at once (at least 1; default 32, as
    /// sentence-transformers). Texts are sorted by length first, so batches pad little.
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The length of the vectors [`SentenceEmbedder::embed`] returns.
    pub fn dim(&self) -> usize {
        self.encoder.hidden as usize * self.pooling.modes()
    }

    /// The most tokens (special tokens included) of a text; longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// How token states are pooled.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether vectors are scaled to unit length.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The device the encoder runs on.
    pub fn device(&self) -> Device {
        self.encoder.device
    }

    /// The folder's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The token ids a text is embedded from: stripped, lowercased if the model says so,
    /// with special tokens, truncated at [`SentenceEmbedder::max_seq_length`].
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if `tokenizers` fails.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode(&[text.to_owned()])?.remove(0).0)
    }

    /// One vector of [`SentenceEmbedder::dim`] values per text, in the order of `texts`.
    /// Runs without autograd, [`SentenceEmbedder::with_batch_size`] texts at a time.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if tokenizing fails; [`Error::Input`] for a token id beyond the
    /// model's vocabulary (a tokenizer that does not belong to the model); [`Error::Torch`] if
    /// libtorch fails (e.g. out of memory).
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = tch::no_grad_guard();
        let encoded = self.encode(texts)?;
        // Longest first, as sentence-transformers sorts, so that each batch pads little.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].0.len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let dim = self.dim();
        for chunk in order.chunks(self.batch_size) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].0.clone()).collect();
            let types: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].1.clone()).collect();
            let vectors = self.embed_batch(&ids, &types)?; // [rows, dim] on the CPU
            let flat = Vec::<f32>::try_from(vectors.f_flatten(0, -1)?)?;
            for (&i, v) in chunk.iter().zip(flat.chunks_exact(dim)) {
                out[i] = v.to_vec();
            }
        }
        Ok(out)
    }

    /// The pooled (and normalised) vectors of a batch of token ids.
    ///
    /// # Shapes
    /// `ids`, `types`: rows of token ids and token type ids (same lengths per row) →
    /// `[rows, dim]`, `f32` on the CPU.
    fn embed_batch(&self, ids: &[Vec<u32>], types: &[Vec<u32>]) -> Result<Tensor> {
        let (input_ids, mask) = pad_batch(ids, 0, PaddingSide::Right)?;
        let (type_ids, _) = pad_batch(types, 0, PaddingSide::Right)?;
        let device = self.encoder.device;
        let input_ids = input_ids.f_to_device(device)?;
        let type_ids = type_ids.f_to_device(device)?;
        let mask = mask.f_to_device(device)?;
        let hidden = self.encoder.forward(&input_ids, &type_ids, &mask)?;
        let mut pooled = self.pooling.pool(&hidden, &mask)?;
        if self.normalize {
            // torch.nn.functional.normalize: x / max(‖x‖₂, 1e-12).
            let norm = pooled
                .f_square()?
                .f_sum_dim_intlist([-1].as_slice(), true, Kind::Float)?
                .f_sqrt()?
                .f_clamp_min(1e-12)?;
            pooled = pooled.f_div(&norm)?;
        }
        Ok(pooled
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?)
    }

    /// `(token ids, token type ids)` per text, prepared as sentence-transformers does.
    fn encode(&self, texts: &[String]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let prepared: Vec<String> = texts
            .iter()
            .map(|t| {
                let t = t.trim();
                if self.do_lower_case {
                    t.to_lowercase()
                } else {
                    t.to_owned()
                }
            })
            .collect();
        let encodings =
            self.encoding
                .encode_batch(prepared, true)
                .map_err(|e| Error::Tokenizer {
                    path: self.tokenizer_path(),
                    problem: e.to_string(),
                })?;
        let vocab = self.encoder.vocab_size;
        let type_vocab = self.encoder.type_vocab_size;
        encodings
            .into_iter()
            .map(|e| {
                let ids = e.get_ids().to_vec();
                let types = e.get_type_ids().to_vec();
                if let Some(&bad) = ids.iter().find(|&&id| i64::from(id) >= vocab) {
                    return Err(Error::Input(format!(
                        "token id {bad} is beyond the model's vocabulary of {vocab}: the \
                         tokenizer does not belong to the model"
                    )));
                }
                if let Some(&bad) = types.iter().find(|&&t| i64::from(t) >= type_vocab) {
                    return Err(Error::Input(format!(
                        "token type id {bad} is beyond the model's type_vocab_size {type_vocab}"
                    )));
                }
                Ok((ids, types))
            })
            .collect()
    }

    fn tokenizer_path(&self) -> PathBuf {
        self.encoder.dir.join("tokenizer.json")
    }
}

/// Where the parts of a sentence-transformers folder are, from its `modules.json`.
struct Layout {
    /// The folder of the transformer (config, weights, tokenizer).
    transformer: PathBuf,
    /// `sentence_bert_config.json` to read, if any.
    sentence_config: Option<PathBuf>,
    pooling: Pooling,
    /// The pooling config's path and `word_embedding_dimension`, when it has one.
    pooling_dim: Option<(PathBuf, usize)>,
    normalize: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

impl Layout {
    fn read(root: &Path) -> Result<Self> {
        let modules_path = root.join("modules.json");
        if !modules_path.is_file() {
            // sentence-transformers' fallback for a plain HF folder: Transformer + mean Pooling.
            return Ok(Self {
                transformer: root.to_path_buf(),
                sentence_config: None,
                pooling: Pooling::MEAN,
                pooling_dim: None,
                normalize: false,
            });
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        let err = |problem: String| Error::Config {
            path: modules_path.clone(),
            problem,
        };
        let sub = |entry: &ModuleEntry| -> Result<PathBuf> {
            let p = Path::new(&entry.path);
            if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(err(format!(
                    "module path {:?} is not inside the folder",
                    entry.path
                )));
            }
            Ok(root.join(p))
        };
        let mut transformer = None;
        let mut pooling = None;
        let mut normalize = false;
        for (i, entry) in modules.iter().enumerate() {
            let name = entry.kind.rsplit('.').next().unwrap_or_default();
            match (name, i) {
                ("Transformer", 0) => transformer = Some(sub(entry)?),
                ("Pooling", 1) => pooling = Some(sub(entry)?),
                ("Normalize", 2) => normalize = true,
                ("Transformer" | "Pooling" | "Normalize", _) => {
                    return Err(err(format!(
                        "module {i} is {}: expected the order Transformer, Pooling, Normalize",
                        entry.kind
                    )))
                }
                _ => {
                    return Err(err(format!(
                        "module {i} has type {:?}, which is not supported (supported: \
                         Transformer, Pooling, Normalize)",
                        entry.kind
                    )))
                }
            }
        }
        let transformer =
            transformer.ok_or_else(|| err("no Transformer module first in the list".into()))?;
        let pooling_dir =
            pooling.ok_or_else(|| err("no Pooling module after the Transformer".into()))?;
        let pooling_path = require(&pooling_dir, "config.json")?;
        let config: PoolingConfig = read_json(&pooling_path)?;
        let perr = |problem: String| Error::Config {
            path: pooling_path.clone(),
            problem,
        };
        for (on, key) in [
            (
                config.pooling_mode_weightedmean_tokens,
                "pooling_mode_weightedmean_tokens",
            ),
            (config.pooling_mode_lasttoken, "pooling_mode_lasttoken"),
        ] {
            if on {
                return Err(perr(format!(
                    "{key} is not supported (supported: cls_token, max_tokens, mean_tokens, \
                     mean_sqrt_len_tokens)"
                )));
            }
        }
        if !config.include_prompt {
            return Err(perr("include_prompt false is not supported".into()));
        }
        let pooling = Pooling {
            cls_token: config.pooling_mode_cls_token,
            max_tokens: config.pooling_mode_max_tokens,
            mean_tokens: config.pooling_mode_mean_tokens,
            mean_sqrt_len_tokens: config.pooling_mode_mean_sqrt_len_tokens,
        };
        if pooling.modes() == 0 {
            return Err(perr("no pooling mode is on".into()));
        }
        Ok(Self {
            sentence_config: Some(transformer.join("sentence_bert_config.json")),
            transformer,
            pooling,
            pooling_dim: config.word_embedding_dimension.map(|d| (pooling_path, d)),
            normalize,
        })
    }
}

/// `1_Pooling/config.json`, with sentence-transformers' defaults.
#[derive(Deserialize)]
#[serde(default)]
struct PoolingConfig {
    word_embedding_dimension: Option<usize>,
    pooling_mode_cls_token: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
    pooling_mode_weightedmean_tokens: bool,
    pooling_mode_lasttoken: bool,
    include_prompt: bool,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        Self {
            word_embedding_dimension: None,
            pooling_mode_cls_token: false,
            pooling_mode_max_tokens: false,
            pooling_mode_mean_tokens: true,
            pooling_mode_mean_sqrt_len_tokens: false,
            pooling_mode_weightedmean_tokens: false,
            pooling_mode_lasttoken: false,
            include_prompt: true,
        }
    }
}

/// `sentence_bert_config.json`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    do_lower_case: bool,
}

/// `tokenizer_config.json`'s `model_max_length`, if the file and key are there.
fn read_model_max_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let n = value.get("model_max_length")?.as_f64()?;
    (n >= 1.0 && n < usize::MAX as f64).then_some(n as usize)
}

/// `dir/name`, or an error naming it when it is not a file.
fn require(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::ModelPath {
            path,
            problem: format!(
                "no such file (a sentence-transformers folder needs {name} in {})",
                dir.display()
            ),
        })
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// The fields of a BERT `config.json` the encoder reads, with transformers' `BertConfig`
/// defaults.
#[derive(Deserialize)]
struct HfBertConfig {
    #[serde(default = "defaults::vocab_size")]
    vocab_size: usize,
    #[serde(default = "defaults::hidden_size")]
    hidden_size: usize,
    #[serde(default = "defaults::num_layers")]
    num_hidden_layers: usize,
    #[serde(default = "defaults::num_heads")]
    num_attention_heads: usize,
    #[serde(default = "defaults::intermediate_size")]
    intermediate_size: usize,
    #[serde(default = "defaults::hidden_act")]
    hidden_act: String,
    #[serde(default = "defaults::max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "defaults::type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "defaults::layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "defaults::position_embedding_type")]
    position_embedding_type: String,
    #[serde(default)]
    is_decoder: bool,
}

mod defaults {
    pub(super) fn vocab_size() -> usize {
        30522
    }
    pub(super) fn hidden_size() -> usize {
        768
    }
    pub(super) fn num_layers() -> usize {
        12
    }
    pub(super) fn num_heads() -> usize {
        12
    }
    pub(super) fn intermediate_size() -> usize {
        3072
    }
    pub(super) fn hidden_act() -> String {
        "gelu".into()
    }
    pub(super) fn max_position_embeddings() -> usize {
        512
    }
    pub(super) fn type_vocab_size() -> usize {
        2
    }
    pub(super) fn layer_norm_eps() -> f64 {
        1e-12
    }
    pub(super) fn position_embedding_type() -> String {
        "absolute".into()
    }
}

/// A validated BERT config.
struct BertConfig {
    dir: PathBuf,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    activation: Activation,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
}

impl BertConfig {
    fn read(path: &Path) -> Result<Self> {
        let value: serde_json::Value = read_json(path)?;
        let err = |problem: String| Error::Config {
            path: path.to_path_buf(),
            problem,
        };
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| err("no \"model_type\" string".into()))?;
        if model_type != "bert" {
            return Err(Error::UnknownModelType {
                path: path.to_path_buf(),
                model_type: model_type.to_owned(),
                supported: vec!["bert".into()],
            });
        }
        let hf: HfBertConfig = serde_json::from_value(value).map_err(|e| err(e.to_string()))?;
        let activation = Activation::from_hf(&hf.hidden_act).ok_or_else(|| {
            err(format!(
                "hidden_act {:?} is not supported (supported: gelu, gelu_new, \
                 gelu_pytorch_tanh, relu, silu)",
                hf.hidden_act
            ))
        })?;
        if hf.position_embedding_type != "absolute" {
            return Err(err(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                hf.position_embedding_type
            )));
        }
        if hf.is_decoder {
            return Err(err(
                "is_decoder true is not supported (a sentence encoder attends both ways)".into(),
            ));
        }
        if hf.num_attention_heads == 0 || !hf.hidden_size.is_multiple_of(hf.num_attention_heads) {
            return Err(err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                hf.hidden_size, hf.num_attention_heads
            )));
        }
        for (value, key) in [
            (hf.hidden_size, "hidden_size"),
            (hf.num_hidden_layers, "num_hidden_layers"),
            (hf.intermediate_size, "intermediate_size"),
            (hf.vocab_size, "vocab_size"),
            (hf.max_position_embeddings, "max_position_embeddings"),
            (hf.type_vocab_size, "type_vocab_size"),
        ] {
            if value == 0 {
                return Err(err(format!("{key} is 0")));
            }
        }
        Ok(Self {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            intermediate_size: hf.intermediate_size,
            activation,
            max_position_embeddings: hf.max_position_embeddings,
            type_vocab_size: hf.type_vocab_size,
            layer_norm_eps: hf.layer_norm_eps,
        })
    }
}

/// One BERT layer: post-norm self-attention and feed-forward, as transformers' `BertLayer`.
#[derive(Debug)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

impl BertLayer {
    /// # Shapes
    /// `x`: `[batch, seq, hidden]`; `mask`: additive `[batch, 1, 1, seq]` → `[batch, seq, hidden]`.
    fn forward(&self, x: &Tensor, mask: &Tensor, heads: i64, act: Activation) -> Result<Tensor> {
        let (b, s, d) = x.size3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.f_view([b, s, heads, d / heads])?.f_transpose(1, 2)?)
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        // softmax(q·kᵀ / sqrt(head_dim) + mask) · v
        let ctx = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask),
            0.0,
            false,
            None::<f64>,
            false,
        )?
        .f_transpose(1, 2)?
        .f_reshape([b, s, d])?;
        let h = self
            .attn_norm
            .forward(&self.attn_out.forward(&ctx)?.f_add(x)?)?;
        let inter = activate(act, &self.intermediate.forward(&h)?)?;
        self.output_norm
            .forward(&self.output.forward(&inter)?.f_add(&h)?)
    }
}

/// The BERT encoder (transformers' `BertModel` without the pooler).
#[derive(Debug)]
struct BertEncoder {
    /// The folder the weights came from, for error messages.
    dir: PathBuf,
    device: Device,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: Norm,
    layers: Vec<BertLayer>,
    heads: i64,
    hidden: i64,
    vocab_size: i64,
    type_vocab_size: i64,
    activation: Activation,
}

impl BertEncoder {
    fn build(c: &BertConfig, mut w: Weights) -> Result<Self> {
        let device = w.device;
        let p = if w.has("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let d = c.hidden_size as i64;
        let inter = c.intermediate_size as i64;
        let eps = c.layer_norm_eps;
        let word = w.get(
            &format!("{p}embeddings.word_embeddings.weight"),
            &[c.vocab_size as i64, d],
        )?;
        let position = w.get(
            &format!("{p}embeddings.position_embeddings.weight"),
            &[c.max_position_embeddings as i64, d],
        )?;
        let token_type = w.get(
            &format!("{p}embeddings.token_type_embeddings.weight"),
            &[c.type_vocab_size as i64, d],
        )?;
        let embed_norm = layer_norm(&mut w, &format!("{p}embeddings.LayerNorm"), d, eps)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = format!("{p}encoder.layer.{i}.");
            layers.push(BertLayer {
                query: linear(&mut w, &format!("{l}attention.self.query"), d, d, true)?,
                key: linear(&mut w, &format!("{l}attention.self.key"), d, d, true)?,
                value: linear(&mut w, &format!("{l}attention.self.value"), d, d, true)?,
                attn_out: linear(&mut w, &format!("{l}attention.output.dense"), d, d, true)?,
                attn_norm: layer_norm(&mut w, &format!("{l}attention.output.LayerNorm"), d, eps)?,
                intermediate: linear(&mut w, &format!("{l}intermediate.dense"), inter, d, true)?,
                output: linear(&mut w, &format!("{l}output.dense"), d, inter, true)?,
                output_norm: layer_norm(&mut w, &format!("{l}output.LayerNorm"), d, eps)?,
            });
        }
        // Buffers older checkpoints carry, and heads sentence embeddings do not use: the pooler
        // and, with the `bert.` prefix, BertForPreTraining's MLM/NSP heads.
        w.ignore(format!("{p}embeddings.position_ids"));
        w.ignore(format!("{p}embeddings.token_type_ids"));
        w.ignore_prefixes([format!("{p}pooler."), "cls.".to_owned()]);
        w.finish()?;
        Ok(Self {
            dir: c.dir.clone(),
            device,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            heads: c.num_attention_heads as i64,
            hidden: d,
            vocab_size: c.vocab_size as i64,
            type_vocab_size: c.type_vocab_size as i64,
            activation: c.activation,
        })
    }

    /// The last hidden states.
    ///
    /// # Shapes
    /// `ids`, `type_ids`, `mask`: `[batch, seq]` int64 on the model's device (mask 1 for real
    /// tokens, seq ≤ `max_position_embeddings`) → `[batch, seq, hidden]`.
    fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.size2()?;
        let max_pos = self.position.size()[0];
        if s > max_pos {
            return Err(Error::Input(format!(
                "{s} tokens exceed the model's {max_pos} positions"
            )));
        }
        let positions = Tensor::f_arange(s, (Kind::Int64, self.device))?
            .f_unsqueeze(0)?
            .f_expand([b, s], false)?;
        // transformers: (word + token_type) + position, then LayerNorm.
        let x = Tensor::f_embedding(&self.word, ids, -1, false, false)?
            .f_add(&Tensor::f_embedding(
                &self.token_type,
                type_ids,
                -1,
                false,
                false,
            )?)?
            .f_add(&Tensor::f_embedding(
                &self.position,
                &positions,
                -1,
                false,
                false,
            )?)?;
        let mut x = self.embed_norm.forward(&x)?;
        // Additive mask over keys: 0 for real tokens, finfo(float32).min for padding.
        let allowed = mask.f_ne(0)?.f_view([b, 1, 1, s])?;
        let additive =
            Tensor::f_where_scalar(&allowed, 0.0, f64::from(f32::MIN))?.f_to_kind(Kind::Float)?;
        for layer in &self.layers {
            x = layer.forward(&x, &additive, self.heads, self.activation)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes_follow_sentence_transformers() {
        // Two rows: one with 3 real tokens, one with 1 real token and 2 pads.
        let hidden = Tensor::from_slice(&[
            1.0f32, 2.0, 3.0, 4.0, 5.0, -6.0, //
            7.0, 8.0, 100.0, 100.0, 100.0, 100.0,
        ])
        .reshape([2, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 0, 0]).reshape([2, 3]);
        let all = Pooling {
            cls_token: true,
            max_tokens: true,
            mean_tokens: true,
            mean_sqrt_len_tokens: true,
        };
        let got = Vec::<f32>::try_from(all.pool(&hidden, &mask).unwrap().flatten(0, -1)).unwrap();
        let s3 = 3f32.sqrt();
        let want = [
            // cls, max, mean, mean_sqrt_len
            1.0,
            2.0,
            5.0,
            4.0,
            3.0,
            0.0,
            9.0 / s3,
            0.0, //
            7.0,
            8.0,
            7.0,
            8.0,
            7.0,
            8.0,
            7.0,
            8.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        assert_eq!(all.modes(), 4);
        assert_eq!(Pooling::MEAN.modes(), 1);
    }
}
