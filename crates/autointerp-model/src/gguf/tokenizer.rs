//! A `tokenizers::Tokenizer` built from a GGUF file's `tokenizer.*` metadata.
//!
//! Two vocabulary kinds (`tokenizer.ggml.model`) are supported, mirroring llama.cpp:
//!
//! - `gpt2`: byte-level BPE (SmolLM, Llama 3, Qwen2, …). The vocabulary and merges are in the
//!   file; the pre-tokenizer regexes are chosen by `tokenizer.ggml.pre` and applied in turn,
//!   each splitting the pieces of the one before, then bytes are mapped to GPT-2's printable
//!   alphabet.
//! - `llama`: SentencePiece BPE (Llama 2, Gemma). Spaces become `▁` (with one prepended when
//!   `tokenizer.ggml.add_space_prefix`, default true); pieces merge in the order of their scores
//!   (`tokenizer.ggml.scores`), as llama.cpp does; characters outside the vocabulary fall back
//!   to the `<0xXX>` byte tokens.
//!
//! Control tokens (token type 3) and the BOS/EOS/padding tokens are registered as special
//! tokens: matched whole in the input, skipped by `decode(.., true)`. User-defined tokens
//! (type 4; Gemma has HTML tags and whitespace runs among them) are matched whole too, as
//! llama.cpp does, but are ordinary text to `decode`. BOS/EOS are added by `encode(.., true)`
//! when `tokenizer.ggml.add_bos_token`/`add_eos_token` say so.

use std::path::PathBuf;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, Template, TemplateProcessing};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

use super::GgufFile;
use crate::{Error, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_UNUSED: i64 = 5;
const TYPE_BYTE: i64 = 6;

/// GPT-2's pre-tokenizer regex.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's, with up to three digits per piece.
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with one digit per piece.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// BLOOM-style: anything but whitespace and a little punctuation.
const BLOOM_REGEX: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// The regexes llama.cpp applies, in turn, for pre-tokenizer `pre`, and whether merges are
/// skipped for words that are whole tokens (`ignore_merges`). `None` for names it does not
/// know.
fn pre_tokenizer_regexes(pre: &str) -> Option<(Vec<&'static str>, bool)> {
    Some(match pre {
        "default" => (
            vec![
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_REGEX,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            false,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => (vec![LLAMA3_REGEX], true),
        "dbrx" | "smaug-bpe" | "chatglm-bpe" => (vec![LLAMA3_REGEX], false),
        "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" | "hunyuan" => {
            (vec![QWEN2_REGEX], false)
        }
        "falcon" => (
            vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2_REGEX, "[0-9][0-9][0-9]"],
            false,
        ),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => {
            (vec![r"\p{N}", GPT2_REGEX], false)
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v1-en" | "jina-v2-es"
        | "jina-v2-de" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion"
        | "granite-docling" => (vec![GPT2_REGEX], false),
        "poro-chat" | "bloom" | "gpt3-finnish" => (vec![BLOOM_REGEX], false),
        "viking" => (vec![BLOOM_REGEX, r"\p{N}"], false),
        _ => return None,
    })
}

/// A tokenizer built from GGUF metadata, with the model's special token ids and chat template.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    model: String,
    pre: Option<String>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
}

impl GgufTokenizer {
    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The underlying `tokenizers` tokenizer, by value.
    pub fn into_inner(self) -> Tokenizer {
        self.inner
    }

    /// Token ids of `text`. With `add_special_tokens`, BOS/EOS are added as the model's
    /// `add_bos_token`/`add_eos_token` say. Special tokens written in the text (e.g.
    /// `<|im_start|>`) always map to their single ids.
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

    /// The text of `ids`; with `skip_special_tokens`, control tokens (BOS, `<|im_end|>`, …) are
    /// left out.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if `tokenizers` fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.error(e.to_string()))
    }

    /// The id of `token` (in the vocabulary's spelling, e.g. `Ġworld` for byte-level BPE).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary entry of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// `tokenizer.ggml.pre`, the pre-tokenizer's name (byte-level BPE only).
    pub fn pre(&self) -> Option<&str> {
        self.pre.as_deref()
    }

    /// `tokenizer.ggml.bos_token_id`.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// `tokenizer.ggml.padding_token_id`.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether `encode(.., true)` prepends BOS (`tokenizer.ggml.add_bos_token`; when absent,
    /// true for `llama` vocabularies and false for `gpt2`, as in llama.cpp).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., true)` appends EOS (`tokenizer.ggml.add_eos_token`, default false).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// `tokenizer.chat_template`: the model's Jinja chat template, if it has one.
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

/// Builds the tokenizer of `gguf`.
pub(super) fn build(gguf: &GgufFile) -> Result<GgufTokenizer> {
    let path = gguf.path().to_path_buf();
    let problem = |problem: String| Error::Tokenizer {
        path: path.clone(),
        problem,
    };
    let model = gguf.get_str("tokenizer.ggml.model")?.to_owned();
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let n = tokens.len();
    if n == 0 || n > u32::MAX as usize {
        return Err(problem(format!("tokenizer.ggml.tokens has {n} entries")));
    }
    let types = match gguf.opt_i64_array("tokenizer.ggml.token_type")? {
        Some(t) if t.len() != n => {
            return Err(problem(format!(
                "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {n}",
                t.len()
            )))
        }
        Some(t) => t,
        None => vec![TYPE_NORMAL; n],
    };
    let id = |key: &str| -> Result<Option<u32>> {
        match gguf.opt_u64(key)? {
            None => Ok(None),
            Some(id) if id < n as u64 => Ok(Some(id as u32)),
            Some(id) => Err(problem(format!(
                "{key} is {id}, outside the vocabulary of {n} tokens"
            ))),
        }
    };
    let bos_id = id("tokenizer.ggml.bos_token_id")?;
    let eos_id = id("tokenizer.ggml.eos_token_id")?;
    let pad_id = id("tokenizer.ggml.padding_token_id")?;
    let unk_id = id("tokenizer.ggml.unknown_token_id")?;
    let add_bos = gguf
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(model == "llama");
    let add_eos = gguf
        .opt_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let chat_template = gguf.opt_str("tokenizer.chat_template")?.map(str::to_owned);

    // Later duplicates win, as in llama.cpp's token_to_id.
    let mut vocab = Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    if vocab.len() < n {
        tracing::warn!(
            path = %path.display(),
            duplicates = n - vocab.len(),
            "GGUF vocabulary has duplicate tokens; the earlier ids of each are unreachable"
        );
    }

    let mut pre = None;
    let mut tokenizer = match model.as_str() {
        "gpt2" => {
            let merges = gguf
                .get_str_array("tokenizer.ggml.merges")?
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .ok_or_else(|| {
                            problem(format!(
                                "merge {i} ({m:?}) is not two tokens separated by a space"
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let name = gguf
                .opt_str("tokenizer.ggml.pre")?
                .unwrap_or("default")
                .to_owned();
            let (regexes, ignore_merges) = pre_tokenizer_regexes(&name).ok_or_else(|| {
                problem(format!(
                    "pre-tokenizer {name:?} (tokenizer.ggml.pre) is not supported"
                ))
            })?;
            pre = Some(name);
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .ignore_merges(ignore_merges)
                .build()
                .map_err(|e| problem(format!("cannot build the BPE model: {e}")))?;
            let mut pieces = Vec::new();
            for re in regexes {
                let split = Split::new(
                    SplitPattern::Regex(re.to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| problem(format!("bad pre-tokenizer regex {re:?}: {e}")))?;
                pieces.push(PreTokenizerWrapper::Split(split));
            }
            pieces.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
                false, false, false,
            )));
            let mut t = Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(PreSequence::new(pieces)))
                .with_decoder(Some(ByteLevel::default()));
            t
        }
        "llama" => {
            let scores = match gguf.opt_f32_array("tokenizer.ggml.scores")? {
                Some(s) if s.len() != n => {
                    return Err(problem(format!(
                        "tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {n}",
                        s.len()
                    )))
                }
                Some(s) => s,
                None => vec![0.0; n],
            };
            let merges = match gguf.opt_str_array("tokenizer.ggml.merges")? {
                Some(m) => m
                    .iter()
                    .filter_map(|m| m.split_once(' '))
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .collect(),
                None => merges_from_scores(tokens, &scores, &types, &vocab),
            };
            let unk = unk_id
                .map(|i| tokens[i as usize].clone())
                .or_else(|| {
                    types
                        .iter()
                        .position(|&t| t == TYPE_UNKNOWN)
                        .map(|i| tokens[i].clone())
                })
                .or_else(|| vocab.contains_key("<unk>").then(|| "<unk>".to_owned()));
            let mut builder = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .byte_fallback(true)
                .fuse_unk(true);
            if let Some(unk) = unk {
                builder = builder.unk_token(unk);
            }
            let bpe = builder
                .build()
                .map_err(|e| problem(format!("cannot build the BPE model: {e}")))?;
            let add_space_prefix = gguf
                .opt_bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true);
            let replace = |from: &str, to: &str| {
                Replace::new(from, to).map_err(|e| problem(format!("normalizer: {e}")))
            };
            let mut norm = Vec::new();
            if add_space_prefix {
                norm.push(NormalizerWrapper::Prepend(Prepend::new("▁".into())));
            }
            norm.push(NormalizerWrapper::Replace(replace(" ", "▁")?));
            let mut dec = vec![
                DecoderWrapper::Replace(replace("▁", " ")?),
                DecoderWrapper::ByteFallback(ByteFallback::new()),
                DecoderWrapper::Fuse(Fuse::new()),
            ];
            if add_space_prefix {
                dec.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
            }
            let mut t = Tokenizer::new(bpe);
            t.with_normalizer(Some(NormalizerSequence::new(norm)))
                .with_decoder(Some(DecoderSequence::new(dec)));
            t
        }
        other => {
            return Err(problem(format!(
                "tokenizer.ggml.model {other:?} is not supported (only \"gpt2\" and \"llama\")"
            )))
        }
    };

    // Special tokens: control ones, and BOS/EOS/PAD whatever their type. User-defined tokens
    // are matched whole but decode as text.
    let special_ids = [bos_id, eos_id, pad_id];
    let mut special = Vec::new();
    let mut user_defined = Vec::new();
    for (i, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if tok.is_empty() {
            continue;
        }
        if ty == TYPE_CONTROL || special_ids.contains(&Some(i as u32)) {
            special.push(AddedToken::from(tok.clone(), true));
        } else if ty == TYPE_USER_DEFINED {
            user_defined.push(AddedToken::from(tok.clone(), false).normalized(false));
        }
    }
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user_defined);

    if add_bos || add_eos {
        let processor = template(tokens, add_bos.then_some(bos_id), add_eos.then_some(eos_id))
            .map_err(problem)?;
        tokenizer.with_post_processor(Some(processor));
    }

    Ok(GgufTokenizer {
        inner: tokenizer,
        path,
        model,
        pre,
        bos_id,
        eos_id,
        pad_id,
        add_bos,
        add_eos,
        chat_template,
    })
}

/// A post-processor adding BOS before and/or EOS after each sequence. `bos`/`eos` are `None`
/// when not wanted and `Some(None)` when wanted but the file names no such token.
fn template(
    tokens: &[String],
    bos: Option<Option<u32>>,
    eos: Option<Option<u32>>,
) -> std::result::Result<TemplateProcessing, String> {
    let mut specials = Vec::new();
    let mut single = Vec::new();
    let mut pair = Vec::new();
    if let Some(bos) = bos {
        let bos = bos.ok_or("add_bos_token is true but there is no bos_token_id")?;
        specials.push(
            SpecialToken::new("BOS".into(), vec![bos], vec![tokens[bos as usize].clone()])
                .map_err(|e| e.to_string())?,
        );
        single.push("BOS");
        pair.push("BOS");
    }
    single.push("$A");
    pair.push("$A");
    if let Some(eos) = eos {
        let eos = eos.ok_or("add_eos_token is true but there is no eos_token_id")?;
        specials.push(
            SpecialToken::new("EOS".into(), vec![eos], vec![tokens[eos as usize].clone()])
                .map_err(|e| e.to_string())?,
        );
        single.push("EOS");
        pair.push("EOS");
    }
    if bos.is_some() {
        pair.push("BOS:1");
    }
    pair.push("$B:1");
    if eos.is_some() {
        pair.push("EOS:1");
    }
    let single = Template::try_from(single)?;
    let pair = Template::try_from(pair)?;
    TemplateProcessing::builder()
        .single(single)
        .pair(pair)
        .special_tokens(specials)
        .build()
        .map_err(|e| e.to_string())
}

/// SentencePiece-BPE merges recovered from piece scores: every split of a piece into two
/// vocabulary entries is a merge, ranked by the piece's score (higher first), as llama.cpp's
/// tokenizer merges the adjacent pair whose concatenation scores highest.
fn merges_from_scores(
    tokens: &[String],
    scores: &[f32],
    types: &[i64],
    vocab: &Vocab,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if !matches!(types[id], TYPE_NORMAL | TYPE_USER_DEFINED) {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                if usable(types, l) && usable(types, r) {
                    ranked.push((scores[id], id as u32, l, r));
                }
            }
        }
    }
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    ranked
        .into_iter()
        .map(|(_, _, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
        .collect()
}

/// Whether token `id` can be one side of a merge (not a control, byte or unused token).
fn usable(types: &[i64], id: u32) -> bool {
    !matches!(
        types[id as usize],
        TYPE_CONTROL | TYPE_BYTE | TYPE_UNUSED | TYPE_UNKNOWN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_pre_tokenizers_compile() {
        for name in [
            "default",
            "llama-bpe",
            "qwen2",
            "smollm",
            "gpt-2",
            "falcon",
            "viking",
        ] {
            let (regexes, _) = pre_tokenizer_regexes(name).unwrap();
            for re in regexes {
                Split::new(
                    SplitPattern::Regex(re.to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{name}: {re}: {e}"));
            }
        }
        assert!(pre_tokenizer_regexes("no-such-pre").is_none());
    }

    #[test]
    fn merges_rank_by_score() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let types = [TYPE_NORMAL; 6];
        let mut vocab = Vocab::default();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let merges = merges_from_scores(&tokens, &scores, &types, &vocab);
        let m: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(m, [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]);
    }
}
