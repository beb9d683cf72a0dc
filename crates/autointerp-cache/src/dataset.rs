//! From a dataset spec (a local path or a Hub dataset id) to the token rows of a run, and the
//! shards those rows split into.

use std::ops::Range;
use std::path::Path;

use autointerp_core::split::Tokens;
use autointerp_model::Tokenizer;

use crate::hub::{self, HubDataset, HubOptions, SplitSpec};
use crate::tokens::{build_rows, read_documents, read_pretokenized, DatasetConfig, RowTokens};
use crate::{Error, Result};

/// Where a run's token rows come from, and how they are cut.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetSpec {
    /// A `.txt`/`.jsonl`/`.parquet` file or a folder of them, a `.safetensors` file of
    /// pre-tokenized `tokens` `[rows, ctx_len]`, or a Hugging Face dataset id (`owner/name`).
    pub source: String,
    /// Config (subset) of a Hub dataset, as delphi's `dataset_name`.
    pub name: Option<String>,
    /// Split of a Hub dataset, optionally sliced as in `datasets` (`train[:1%]`); default
    /// `train`.
    pub split: Option<String>,
    /// Column, row count, seed and BOS handling.
    pub rows: DatasetConfig,
}

impl DatasetSpec {
    /// The documents of the dataset (a pre-tokenized `.safetensors` file has none).
    ///
    /// # Errors
    /// [`Error::NotAHubDataset`] for a name or split with a local path,
    /// [`Error::DatasetNotFound`] for a source that is neither a path nor a Hub id,
    /// [`Error::BadSplit`], and the reading errors of [`read_documents`] and
    /// [`hub::parquet_files`].
    pub fn read_documents(&self) -> Result<Vec<String>> {
        let spec = &self.source;
        let column = &self.rows.column;
        let p = Path::new(spec);
        if p.exists() {
            if self.name.is_some() || self.split.is_some() {
                return Err(Error::NotAHubDataset { spec: spec.clone() });
            }
            return read_documents(p, column);
        }
        if !autointerp_core::is_hub_repo_id(spec) {
            return Err(Error::DatasetNotFound { spec: spec.clone() });
        }
        let split_text = self.split.as_deref().unwrap_or("train");
        let split: SplitSpec = split_text.parse().map_err(|problem| Error::BadSplit {
            split: split_text.into(),
            problem,
        })?;
        let ds = HubDataset {
            repo: spec.clone(),
            config: self.name.clone(),
            split: split.name.clone(),
        };
        let mut docs = Vec::new();
        for file in hub::parquet_files(&ds, &HubOptions::from_env())? {
            docs.extend(read_documents(&file, column)?);
        }
        let range = split.range(docs.len());
        if range.len() < docs.len() {
            docs.truncate(range.end);
            docs.drain(..range.start);
        }
        Ok(docs)
    }

    /// The token rows of the run, all of them (see [`Shard`] to take a part): the first
    /// `n_tokens / ctx_len` rows of a pre-tokenized file (at least one), or the documents
    /// tokenized and cut as [`build_rows`] does, which needs `tokenizer`.
    ///
    /// # Errors
    /// [`Error::NoTokenizer`] for a text dataset without a tokenizer, and the errors of
    /// [`DatasetSpec::read_documents`], [`read_pretokenized`] and [`build_rows`].
    pub fn token_rows(&self, tokenizer: Option<&Tokenizer>) -> Result<Tokens> {
        let path = Path::new(&self.source);
        if self.source.ends_with(".safetensors") {
            let mut t = read_pretokenized(path)?;
            t.rows = t.rows.min(self.rows.n_tokens / t.ctx_len.max(1)).max(1);
            t.ids.truncate(t.rows * t.ctx_len);
            return Ok(t);
        }
        let tok = tokenizer.ok_or_else(|| Error::NoTokenizer {
            dataset: self.source.clone(),
        })?;
        let docs = self.read_documents()?;
        build_rows(docs, tok.inner(), RowTokens::of(tok), &self.rows, path)
    }
}

impl RowTokens {
    /// The row tokens of a model's tokenizer: BOS at the start of each row only when the
    /// tokenizer itself starts sequences with it (then the model was trained on such rows).
    pub fn of(tok: &Tokenizer) -> Self {
        let adds_bos = tok.bos_id().is_some_and(|b| {
            tok.encode("a", true)
                .ok()
                .and_then(|ids| ids.first().copied())
                == Some(b)
        });
        Self {
            bos: if adds_bos { tok.bos_id() } else { None },
            eos: tok.eos_id(),
        }
    }
}

/// Shard `index` of `count` of a run's rows (`I/N`, 0-based), so that several processes (one per
/// GPU) cache one dataset; each takes a contiguous block of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, `0..count`.
    pub index: usize,
    /// How many shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Self { index, count }),
            _ => Err(Error::BadShard { spec: s.into() }),
        }
    }
}

impl Shard {
    /// The rows of this shard out of `rows`.
    ///
    /// # Errors
    /// [`Error::EmptyShard`] when there are fewer rows than shards and this one gets none.
    pub fn rows(&self, rows: usize) -> Result<Range<usize>> {
        let (lo, hi) = (
            rows * self.index / self.count,
            rows * (self.index + 1) / self.count,
        );
        if hi <= lo {
            return Err(Error::EmptyShard {
                index: self.index,
                count: self.count,
                rows,
            });
        }
        Ok(lo..hi)
    }

    /// This shard's rows of `tokens`, and where they are among all the rows.
    ///
    /// # Errors
    /// As [`Shard::rows`].
    pub fn slice(&self, tokens: &Tokens) -> Result<(Range<usize>, Tokens)> {
        let range = self.rows(tokens.rows)?;
        let part = Tokens {
            rows: range.len(),
            ctx_len: tokens.ctx_len,
            ids: tokens.ids[range.start * tokens.ctx_len..range.end * tokens.ctx_len].to_vec(),
        };
        Ok((range, part))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse() {
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        for bad in ["4/4", "1", "a/b", "0/0"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(matches!(err, Error::BadShard { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn shards_split_the_rows_and_refuse_empty_ones() {
        let tokens = Tokens {
            rows: 5,
            ctx_len: 2,
            ids: (0..10).collect(),
        };
        let (range, part) = Shard { index: 1, count: 2 }.slice(&tokens).unwrap();
        assert_eq!(range, 2..5);
        assert_eq!(part.ids, [4, 5, 6, 7, 8, 9]);
        let err = Shard { index: 0, count: 6 }.slice(&tokens).unwrap_err();
        assert!(matches!(err, Error::EmptyShard { rows: 5, .. }), "{err}");
    }

    #[test]
    fn a_text_dataset_needs_a_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("doc.txt");
        std::fs::write(&text, "some words").unwrap();
        let spec = DatasetSpec {
            source: text.to_str().unwrap().into(),
            ..Default::default()
        };
        let err = spec.token_rows(None).unwrap_err();
        assert!(matches!(err, Error::NoTokenizer { .. }), "{err}");
        assert!(err.to_string().contains("doc.txt"), "{err}");
    }

    #[test]
    fn local_and_hub_only_options_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DatasetSpec {
            source: dir.path().to_str().unwrap().into(),
            split: Some("train".into()),
            ..Default::default()
        };
        let err = spec.read_documents().unwrap_err();
        assert!(matches!(err, Error::NotAHubDataset { .. }), "{err}");
        let missing = DatasetSpec {
            source: dir.path().join("missing.jsonl").to_str().unwrap().into(),
            ..Default::default()
        };
        let err = missing.read_documents().unwrap_err();
        assert!(matches!(err, Error::DatasetNotFound { .. }), "{err}");
        let bad_split = DatasetSpec {
            source: "acme/speeches".into(),
            split: Some("train[:x%]".into()),
            ..Default::default()
        };
        let err = bad_split.read_documents().unwrap_err();
        assert!(matches!(err, Error::BadSplit { .. }), "{err}");
    }
}
