//! The tokenizer that comes with a model: `tokenizer.json` (+ `tokenizer_config.json`) of an HF
//! folder, or the one built from a GGUF file's metadata.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::gguf::GgufTokenizer;
use crate::{Error, Result};

/// A `tokenizers::Tokenizer` with the model's special token ids and chat template.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    chat_template: Option<String>,
}

impl From<GgufTokenizer> for Tokenizer {
    fn from(t: GgufTokenizer) -> Self {
        Self {
            bos_id: t.bos_id(),
            eos_id: t.eos_id(),
            pad_id: t.pad_id(),
            chat_template: t.chat_template().map(str::to_owned),
            path: PathBuf::from("<gguf>"),
            inner: t.into_inner(),
        }
    }
}

impl Tokenizer {
    /// Reads `tokenizer.json` in `dir`, and `tokenizer_config.json` beside it when present
    /// (special tokens, chat template).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if `tokenizer.json` is absent or invalid.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let err = |problem: String| Error::Tokenizer {
            path: path.clone(),
            problem,
        };
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        let config: serde_json::Value =
            match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
                Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
                    path: dir.join("tokenizer_config.json"),
                    problem: e.to_string(),
                })?,
                Err(_) => serde_json::Value::Null,
            };
        let token = |key: &str| -> Option<u32> {
            let v = config.get(key)?;
            let content = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(content)
        };
        let chat_template = match config.get("chat_template") {
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            // A list of named templates: take "default", else the first.
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        Ok(Self {
            bos_id: token("bos_token"),
            eos_id: token("eos_token"),
            pad_id: token("pad_token"),
            chat_template,
            path,
            inner,
        })
    }

    /// Wraps a `tokenizers::Tokenizer` without special-token information.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Self {
        Self {
            inner,
            path: PathBuf::from("<tokenizer>"),
            bos_id: None,
            eos_id: None,
            pad_id: None,
            chat_template: None,
        }
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`; with `add_special_tokens`, BOS/EOS as the tokenizer's
    /// post-processor adds them.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if `tokenizers` fails.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.error(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if `tokenizers` fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.error(e.to_string()))
    }

    /// This tokenizer as a per-token decoder (what autointerp-latents' `Decode` takes): each id
    /// decoded on its own, special tokens kept. An id that fails to decode shows as `<id>`, so that
    /// one odd token never stops a whole record from being displayed.
    pub fn into_token_decoder(self) -> impl Fn(u32) -> String + Send + Sync + 'static {
        move |id| {
            self.decode(&[id], false)
                .unwrap_or_else(|_| format!("<{id}>"))
        }
    }

    /// The id of a vocabulary entry.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary entry of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The beginning-of-sequence id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The end-of-sequence id.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The padding id.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The Jinja chat template, if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    fn error(&self, problem: String) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            problem,
        }
    }
}

/// Which side [`pad_batch`] pads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Padding first, tokens last: what generation needs.
    #[default]
    Left,
    /// Tokens first.
    Right,
}

/// Packs rows of token ids of different lengths into `input_ids` and `attention_mask`.
///
/// # Shapes
/// → two `[rows, longest]` int64 tensors on the CPU.
///
/// # Errors
/// [`Error::Input`] if there are no rows or every row is empty.
pub fn pad_batch(rows: &[Vec<u32>], pad_id: u32, side: PaddingSide) -> Result<(Tensor, Tensor)> {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    if len == 0 {
        return Err(Error::Input("pad_batch: no tokens".into()));
    }
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut mask = Vec::with_capacity(rows.len() * len);
    for row in rows {
        let pad = len - row.len();
        let tokens = row.iter().map(|&t| i64::from(t));
        match side {
            PaddingSide::Left => {
                ids.extend(std::iter::repeat_n(i64::from(pad_id), pad).chain(tokens));
                mask.extend(
                    std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, row.len())),
                );
            }
            PaddingSide::Right => {
                ids.extend(tokens.chain(std::iter::repeat_n(i64::from(pad_id), pad)));
                mask.extend(
                    std::iter::repeat_n(1i64, row.len()).chain(std::iter::repeat_n(0, pad)),
                );
            }
        }
    }
    let shape = [rows.len() as i64, len as i64];
    Ok((
        Tensor::from_slice(&ids)
            .f_reshape(shape)?
            .f_to_kind(Kind::Int64)?,
        Tensor::from_slice(&mask).f_reshape(shape)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_decoders_decode_each_id_on_its_own() {
        use tokenizers::models::wordlevel::WordLevel;
        let vocab = [("<unk>", 0), ("hello", 1), ("world", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("<unk>".into())
            .build()
            .unwrap();
        let decode =
            Tokenizer::from_tokenizer(tokenizers::Tokenizer::new(model)).into_token_decoder();
        assert_eq!(decode(1), "hello");
        assert_eq!(decode(2), "world");
        // An id beyond the vocabulary is not an error for `tokenizers`: it decodes to nothing.
        assert_eq!(decode(99), "");
    }

    #[test]
    fn pads_left_and_right() {
        let rows = vec![vec![5, 6, 7], vec![8]];
        let (ids, mask) = pad_batch(&rows, 0, PaddingSide::Left).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(ids.flatten(0, 1)).unwrap(),
            [5, 6, 7, 0, 0, 8]
        );
        assert_eq!(
            Vec::<i64>::try_from(mask.flatten(0, 1)).unwrap(),
            [1, 1, 1, 0, 0, 1]
        );
        let (ids, mask) = pad_batch(&rows, 9, PaddingSide::Right).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(ids.flatten(0, 1)).unwrap(),
            [5, 6, 7, 8, 9, 9]
        );
        assert_eq!(
            Vec::<i64>::try_from(mask.flatten(0, 1)).unwrap(),
            [1, 1, 1, 1, 0, 0]
        );
        assert!(pad_batch(&[vec![]], 0, PaddingSide::Left).is_err());
    }
}
