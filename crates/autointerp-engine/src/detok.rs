//! Incremental detokenization: the text each token adds, such that the pieces of a sequence
//! concatenate to its decoded text.
//!
//! Decoding one token alone is wrong in two ways: a byte-level BPE token may hold half of a
//! UTF-8 character (it decodes to `�`), and SentencePiece decoders drop the leading space of
//! the first token they see. As in text-generation-inference and vLLM, each new token is
//! decoded together with the token before it, and the text it adds is what that decode has
//! beyond the previous one; a token that ends in an incomplete character adds nothing until
//! the character is complete.

use autointerp_model::Tokenizer;

use crate::{Error, Result};

pub(crate) fn tokenizer_error(e: impl std::fmt::Display) -> Error {
    Error::Engine {
        problem: format!("tokenizer: {e}"),
    }
}

/// Turns token ids into text one id at a time.
#[derive(Debug, Clone)]
pub(crate) struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

impl IncrementalDecoder {
    /// A decoder that continues after `context` (whose text is not returned).
    pub(crate) fn new(context: &[u32], skip_special_tokens: bool) -> Self {
        Self {
            ids: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
            skip_special_tokens,
        }
    }

    /// The text that `id` adds (empty while a character is incomplete).
    pub(crate) fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let (prefix, full) = self.window(tokenizer)?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(full[prefix.len()..].to_owned())
        } else {
            Ok(String::new())
        }
    }

    /// The text still held back (an incomplete character at the end), as it decodes now.
    pub(crate) fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let (prefix, full) = self.window(tokenizer)?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(full
            .get(prefix.len()..)
            .map(str::to_owned)
            .unwrap_or_default())
    }

    fn window(&self, tokenizer: &Tokenizer) -> Result<(String, String)> {
        let skip = self.skip_special_tokens;
        let prefix = tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset], skip)
            .map_err(tokenizer_error)?;
        let full = tokenizer
            .decode(&self.ids[self.prefix_offset..], skip)
            .map_err(tokenizer_error)?;
        Ok((prefix, full))
    }
}

/// The text of each of `ids` after `context`, special tokens included; held-back text at the
/// end goes to the last token, so the pieces always concatenate to the whole text.
pub(crate) fn token_pieces(
    tokenizer: &Tokenizer,
    context: &[u32],
    ids: &[u32],
) -> Result<Vec<String>> {
    let mut dec = IncrementalDecoder::new(context, false);
    let mut pieces = ids
        .iter()
        .map(|&id| dec.push(tokenizer, id))
        .collect::<Result<Vec<_>>>()?;
    let rest = dec.flush(tokenizer)?;
    if let Some(last) = pieces.last_mut() {
        last.push_str(&rest);
    }
    Ok(pieces)
}

/// The text of one token on its own (for alternatives, which have no sequence around them).
pub(crate) fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer
        .decode(&[id], false)
        .ok()
        .or_else(|| tokenizer.id_to_token(id))
        .unwrap_or_default()
}
