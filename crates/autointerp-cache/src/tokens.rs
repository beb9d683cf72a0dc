//! Token rows for caching: documents from local files, tokenized, joined with EOS and cut into
//! `ctx_len` rows, or pre-tokenized rows from a safetensors file.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use autointerp_core::split::Tokens;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use crate::{Error, Result};

/// How documents become token rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// Column (parquet) or key (JSON lines) holding the text.
    pub column: String,
    /// Tokens per row.
    pub ctx_len: usize,
    /// Tokens to cache; the row count is `n_tokens / ctx_len`.
    pub n_tokens: usize,
    /// Seed of the document shuffle.
    pub seed: u64,
    /// Drop every BOS token from the stream (delphi's `--filter_bos`), and start no row with one.
    pub filter_bos: bool,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            column: "text".into(),
            ctx_len: 256,
            n_tokens: 10_000_000,
            seed: 22,
            filter_bos: false,
        }
    }
}

/// The special tokens that shape rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowTokens {
    /// Put at the start of each row when the model expects one (and `filter_bos` is off).
    pub bos: Option<u32>,
    /// Put between documents.
    pub eos: Option<u32>,
}

/// Reads the documents of a dataset: a `.txt` file (one document), a `.jsonl` file (one
/// document per line, text under `column`), a `.parquet` file (text in `column`), or a folder of
/// such files, read in name order.
pub fn read_documents(path: &Path, column: &str) -> Result<Vec<String>> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return read_file(path, column);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(extension(p), "txt" | "jsonl" | "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            problem: "no .txt, .jsonl or .parquet files in this folder".into(),
        });
    }
    let mut docs = Vec::new();
    for file in files {
        docs.extend(read_file(&file, column)?);
    }
    Ok(docs)
}

fn extension(p: &Path) -> &str {
    p.extension().and_then(|e| e.to_str()).unwrap_or("")
}

fn read_file(path: &Path, column: &str) -> Result<Vec<String>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    match extension(path) {
        "txt" => Ok(vec![std::fs::read_to_string(path).map_err(io)?]),
        "jsonl" => {
            let mut docs = Vec::new();
            for (i, line) in BufReader::new(File::open(path).map_err(io)?)
                .lines()
                .enumerate()
            {
                let line = line.map_err(io)?;
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
                match value.get(column) {
                    Some(serde_json::Value::String(s)) => docs.push(s.clone()),
                    Some(other) => {
                        return Err(bad(format!(
                            "line {}: `{column}` is not a string: {other}",
                            i + 1
                        )))
                    }
                    None => {
                        let keys: Vec<&str> = value
                            .as_object()
                            .map(|o| o.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        return Err(bad(format!(
                            "line {}: no key `{column}` (keys: {}); choose one with --dataset-column",
                            i + 1,
                            keys.join(", ")
                        )));
                    }
                }
            }
            Ok(docs)
        }
        "parquet" => read_parquet(path, column),
        other => Err(bad(format!(
            "unsupported file type `.{other}` (use .txt, .jsonl, .parquet)"
        ))),
    }
}

fn read_parquet(path: &Path, column: &str) -> Result<Vec<String>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(format!("not a readable parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let names: Vec<String> = schema
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    if !names.iter().any(|n| n == column) {
        return Err(bad(format!(
            "no column `{column}` (columns: {}); choose one with --dataset-column",
            names.join(", ")
        )));
    }
    let rows = reader.get_row_iter(None).map_err(|e| bad(e.to_string()))?;
    let mut docs = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
        for (name, field) in row.get_column_iter() {
            if name == column {
                match field {
                    Field::Str(s) => docs.push(s.clone()),
                    Field::Null => {}
                    other => {
                        return Err(bad(format!(
                            "row {i}: column `{column}` is not text: {other}"
                        )))
                    }
                }
            }
        }
    }
    Ok(docs)
}

/// Tokenizes documents in a seeded random order, joins them with EOS and cuts the stream into
/// rows of `ctx_len` tokens (each starting with BOS when `specials.bos` is set and `filter_bos` is
/// off), stopping at `n_tokens / ctx_len` rows.
pub fn build_rows(
    mut docs: Vec<String>,
    tokenizer: &Tokenizer,
    specials: RowTokens,
    cfg: &DatasetConfig,
    source: &Path,
) -> Result<Tokens> {
    let bad = |problem: String| Error::Dataset {
        path: source.to_path_buf(),
        problem,
    };
    if cfg.ctx_len < 2 {
        return Err(bad(format!(
            "ctx_len {} is too small (at least 2)",
            cfg.ctx_len
        )));
    }
    let rows_wanted = cfg.n_tokens / cfg.ctx_len;
    if rows_wanted == 0 {
        return Err(bad(format!(
            "n_tokens {} is less than one row of ctx_len {}",
            cfg.n_tokens, cfg.ctx_len
        )));
    }
    docs.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));

    let bos = if cfg.filter_bos { None } else { specials.bos };
    let body = cfg.ctx_len - usize::from(bos.is_some());
    let mut ids: Vec<u32> = Vec::with_capacity(rows_wanted.min(1 << 20) * cfg.ctx_len);
    let mut stream: Vec<u32> = Vec::new();
    let mut rows = 0;
    // Tokenize a few documents at a time (in parallel inside `tokenizers`) until enough rows.
    'docs: for chunk in docs.chunks(64) {
        let encodings = tokenizer
            .encode_batch(chunk.to_vec(), false)
            .map_err(|e| bad(format!("tokenization failed: {e}")))?;
        for enc in encodings {
            if !stream.is_empty() || rows > 0 {
                stream.extend(specials.eos);
            }
            stream.extend(
                enc.get_ids()
                    .iter()
                    .copied()
                    .filter(|&t| !(cfg.filter_bos && Some(t) == specials.bos)),
            );
            let mut taken = 0;
            while stream.len() - taken >= body {
                ids.extend(bos);
                ids.extend_from_slice(&stream[taken..taken + body]);
                taken += body;
                rows += 1;
                if rows == rows_wanted {
                    break 'docs;
                }
            }
            stream.drain(..taken);
        }
    }
    if rows == 0 {
        return Err(bad(format!(
            "the dataset holds fewer than {} tokens, not even one row (ctx_len {})",
            body, cfg.ctx_len
        )));
    }
    if rows < rows_wanted {
        tracing::warn!(
            rows,
            rows_wanted,
            "dataset exhausted before n_tokens; caching {} tokens",
            rows * cfg.ctx_len
        );
    }
    Ok(Tokens {
        rows,
        ctx_len: cfg.ctx_len,
        ids,
    })
}

/// Reads pre-tokenized rows: a safetensors file holding `tokens` `[rows, ctx_len]` (any integer
/// type), as delphi and sparsify save them.
pub fn read_pretokenized(path: &Path) -> Result<Tokens> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let t = st
        .tensor("tokens")
        .map_err(|_| bad("no tensor `tokens`".into()))?;
    let [rows, ctx_len] = t.shape() else {
        return Err(bad(format!(
            "`tokens` has shape {:?}, expected [rows, ctx_len]",
            t.shape()
        )));
    };
    if *rows == 0 || *ctx_len == 0 {
        return Err(bad(format!(
            "`tokens` has shape [{rows}, {ctx_len}]: there is nothing to cache"
        )));
    }
    let d = t.data();
    let ids: Option<Vec<u32>> = match t.dtype() {
        safetensors::Dtype::I64 => d
            .chunks_exact(8)
            .map(|b| u32::try_from(i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).ok())
            .collect(),
        safetensors::Dtype::I32 => d
            .chunks_exact(4)
            .map(|b| u32::try_from(i32::from_le_bytes(b.try_into().unwrap_or([0; 4]))).ok())
            .collect(),
        safetensors::Dtype::U32 => d
            .chunks_exact(4)
            .map(|b| Some(u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))))
            .collect(),
        safetensors::Dtype::U16 => d
            .chunks_exact(2)
            .map(|b| Some(u16::from_le_bytes([b[0], b[1]]) as u32))
            .collect(),
        other => {
            return Err(bad(format!(
                "`tokens` has dtype {other:?}, expected an integer type"
            )))
        }
    };
    let ids = ids.ok_or_else(|| bad("`tokens` holds negative or too large ids".into()))?;
    Ok(Tokens {
        rows: *rows,
        ctx_len: *ctx_len,
        ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordlevel::WordLevel;

    #[test]
    fn empty_pretokenized_datasets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for shape in [[0usize, 8], [4, 0]] {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::I64, shape.to_vec(), &[])
                    .unwrap();
            let bytes = safetensors::serialize([("tokens", view)], None).unwrap();
            let path = dir.path().join("tokens.safetensors");
            std::fs::write(&path, bytes).unwrap();
            let err = read_pretokenized(&path).unwrap_err().to_string();
            assert!(err.contains("nothing to cache"), "{shape:?}: {err}");
        }
    }
    use tokenizers::pre_tokenizers::whitespace::Whitespace;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// A word-level tokenizer: each distinct word of the vocabulary is one id, others are `[UNK]`.
    fn word_tokenizer(words: &[&str]) -> Tokenizer {
        let mut vocab: std::collections::HashMap<String, u32> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as u32 + 3))
            .collect();
        vocab.insert("[UNK]".into(), 0);
        vocab.insert("<bos>".into(), 1);
        vocab.insert("<eos>".into(), 2);
        let model = WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(Whitespace {}));
        tok
    }

    #[test]
    fn parquet_jsonl_and_txt_give_the_same_documents() {
        let snappy = read_documents(&fixtures().join("docs.snappy.parquet"), "text").unwrap();
        let zstd = read_documents(&fixtures().join("docs.zstd.parquet"), "text").unwrap();
        let jsonl = read_documents(&fixtures().join("docs.jsonl"), "body").unwrap();
        assert_eq!(snappy.len(), 4);
        assert_eq!(snappy, zstd);
        assert_eq!(snappy, jsonl);
        assert!(snappy[3].contains("🙂"));

        let err = read_documents(&fixtures().join("docs.snappy.parquet"), "body")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no column `body`") && err.contains("text, id, title"),
            "{err}"
        );
        let err = read_documents(&fixtures().join("docs.jsonl"), "text")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1: no key `text`"), "{err}");
        let err = read_documents(&fixtures().join("missing.parquet"), "text")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.parquet"), "{err}");
    }

    #[test]
    fn rows_join_documents_with_eos_and_start_with_bos() {
        let tok = word_tokenizer(&["a", "b", "c", "d", "e"]);
        let docs = vec![
            "a b c".to_string(),
            "d e".to_string(),
            "a a a a a a".to_string(),
        ];
        let cfg = DatasetConfig {
            ctx_len: 4,
            n_tokens: 12,
            seed: 0,
            ..Default::default()
        };
        let specials = RowTokens {
            bos: Some(1),
            eos: Some(2),
        };
        let rows = build_rows(docs.clone(), &tok, specials, &cfg, Path::new("mem")).unwrap();
        assert_eq!((rows.rows, rows.ctx_len), (3, 4));
        for r in 0..3 {
            assert_eq!(rows.row(r)[0], 1, "row {r} starts with BOS");
        }
        // The body is the documents (in shuffled order) joined by EOS.
        let body: Vec<u32> = (0..3).flat_map(|r| rows.row(r)[1..].to_vec()).collect();
        let ids = |d: &str| tok.encode(d, false).unwrap().get_ids().to_vec();
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let joined = |p: &[usize; 3]| -> Vec<u32> {
            p.iter()
                .map(|&i| ids(&docs[i]))
                .collect::<Vec<_>>()
                .join(&2u32)
        };
        assert!(perms.iter().any(|p| joined(p)[..9] == body[..]), "{body:?}");
        // Deterministic for a seed; another seed reorders documents.
        assert_eq!(
            build_rows(docs.clone(), &tok, specials, &cfg, Path::new("mem")).unwrap(),
            rows
        );

        let filtered = DatasetConfig {
            filter_bos: true,
            ..cfg.clone()
        };
        let rows = build_rows(docs, &tok, specials, &filtered, Path::new("mem")).unwrap();
        assert!(!rows.ids.contains(&1));
    }

    #[test]
    fn too_little_data_is_a_clear_error() {
        let tok = word_tokenizer(&["a"]);
        let cfg = DatasetConfig {
            ctx_len: 8,
            n_tokens: 64,
            ..Default::default()
        };
        let err = build_rows(
            vec!["a a".into()],
            &tok,
            RowTokens::default(),
            &cfg,
            Path::new("tiny.txt"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tiny.txt") && err.contains("fewer than 8 tokens"),
            "{err}"
        );
        let cfg = DatasetConfig {
            ctx_len: 8,
            n_tokens: 4,
            ..Default::default()
        };
        let err = build_rows(
            vec!["a".into()],
            &tok,
            RowTokens::default(),
            &cfg,
            Path::new("x"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("less than one row"), "{err}");
    }
}
