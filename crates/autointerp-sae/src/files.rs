//! Reading checkpoint files: JSON configs and named tensors, with errors that name the file and
//! the tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autointerp_core::HookPoint;
use serde::de::DeserializeOwned;
use tch::Tensor;

use crate::{Error, Result};

/// Parses a JSON config file.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let err = |e: serde_json::Error| Error::Config {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(err)?;
    drop_nulls(&mut value);
    serde_json::from_value(value).map_err(err)
}

/// Removes the `null` members of every object: the Python tools that write these configs spell
/// an unset option as `null`, which means "absent" (the default), not "a value of the wrong type".
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The tensors of one weights file, taken out by name; whatever is left at the end is an error.
pub(crate) struct TensorFile {
    pub(crate) path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl TensorFile {
    pub(crate) fn read_safetensors(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let tensors = Tensor::read_safetensors(path).map_err(|e| Error::Weight {
            path: path.to_path_buf(),
            tensor: String::new(),
            problem: format!("not a readable safetensors file: {e}"),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors: tensors.into_iter().collect(),
        })
    }

    pub(crate) fn read_npz(path: &Path) -> Result<Self> {
        let tensors = crate::npz::read_npz(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors: tensors.into_iter().collect(),
        })
    }

    pub(crate) fn take(&mut self, name: &str) -> Result<Tensor> {
        self.tensors.remove(name).ok_or_else(|| Error::Weight {
            path: self.path.clone(),
            tensor: name.into(),
            problem: format!("missing (the file holds: {})", self.names()),
        })
    }

    pub(crate) fn take_opt(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    fn names(&self) -> String {
        if self.tensors.is_empty() {
            return "nothing else".into();
        }
        self.tensors
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Errors on the first tensor nobody took.
    pub(crate) fn finish(self) -> Result<()> {
        match self.tensors.into_keys().next() {
            None => Ok(()),
            Some(name) => Err(Error::Weight {
                path: self.path,
                tensor: name,
                problem: "unexpected tensor for this architecture".into(),
            }),
        }
    }

    pub(crate) fn shape_error(
        &self,
        tensor: &str,
        got: Vec<i64>,
        want: impl std::fmt::Display,
    ) -> Error {
        Error::Weight {
            path: self.path.clone(),
            tensor: tensor.into(),
            problem: format!("shape {got:?}, expected {want}"),
        }
    }
}

/// The hook point a name spells, or `None` (with a debug log) when it spells none.
pub(crate) fn parse_hook(name: &str) -> Option<HookPoint> {
    match name.parse() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::debug!("{e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Cfg {
        #[serde(default)]
        skip_connection: bool,
        #[serde(default)]
        k: Option<usize>,
        d_in: usize,
    }

    #[test]
    fn nulls_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg.json");
        std::fs::write(
            &path,
            r#"{"skip_connection": null, "k": null, "d_in": 4, "x": [{"y": null}]}"#,
        )
        .unwrap();
        let cfg: Cfg = read_json(&path).unwrap();
        assert!(!cfg.skip_connection && cfg.k.is_none() && cfg.d_in == 4);
        std::fs::write(&path, r#"{"d_in": null}"#).unwrap();
        let msg = read_json::<Cfg>(&path).unwrap_err().to_string();
        assert!(msg.contains("d_in") && msg.contains("cfg.json"), "{msg}");
    }
}
