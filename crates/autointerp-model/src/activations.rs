//! Activations at hook points for a text or rows of token ids, and the safetensors file that
//! holds them (what `autointerp activations` writes, and Python reads with `safetensors`).

use std::path::Path;

use autointerp_core::HookPoint;
use tch::{Device, Kind, Tensor};

use crate::{Error, Hooks, Input, Logits, Model, Result, Tokenizer};

/// What [`Model::activations`] runs the model on.
#[derive(Debug, Clone, Copy)]
pub enum ActivationInput<'a> {
    /// A text, tokenized with special tokens (a BOS where the model adds one), as HF's
    /// `tokenizer(text)` does.
    Text {
        /// The text.
        text: &'a str,
        /// The model's tokenizer.
        tokenizer: &'a Tokenizer,
    },
    /// Rows of token ids; shorter rows are right-padded and masked.
    Ids(&'a [Vec<i64>]),
}

/// Activations captured by [`Model::activations`]: CPU tensors named by hook point
/// (`layers.6`, …, in the order asked, `f32`), then `logits` (`f32`) when asked for, then
/// `attention_mask` (`i64`) when rows were padded.
///
/// # Shapes
/// hook points `[batch, seq, dim]`; `logits` `[batch, seq, vocab]`; `attention_mask` `[batch, seq]`.
#[derive(Debug)]
pub struct Activations {
    tensors: Vec<(String, Tensor)>,
}

impl Activations {
    /// The tensors, named as they are saved.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// The tensor named `name` (a hook point's name, `logits` or `attention_mask`).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Writes the tensors to a safetensors file at `path`, atomically: through a temporary file
    /// beside it and a rename, so that `path` never holds half a file.
    ///
    /// # Errors
    /// [`Error::Write`] naming the file when it cannot be written or renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
        let write = |path: &Path, source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Err(e) = Tensor::write_safetensors(&self.tensors, &tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(write(path, std::io::Error::other(e)));
        }
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            write(path, e)
        })
    }
}

impl Model {
    /// Runs `input` through the model and captures `hooks` (duplicates dropped), plus the logits
    /// when `logits` is set.
    ///
    /// # Errors
    /// [`Error::Input`] for an empty row or text; [`Error::TokenId`] for an id outside the
    /// vocabulary; [`Error::HookLayer`] for a hook point beyond the model's layers;
    /// [`Error::Tokenizer`] if tokenization fails.
    pub fn activations(
        &self,
        input: ActivationInput<'_>,
        hooks: &[HookPoint],
        logits: bool,
    ) -> Result<Activations> {
        let text_rows;
        let rows = match input {
            ActivationInput::Text { text, tokenizer } => {
                text_rows = vec![tokenizer
                    .encode(text, true)?
                    .into_iter()
                    .map(i64::from)
                    .collect::<Vec<_>>()];
                &text_rows[..]
            }
            ActivationInput::Ids(rows) => rows,
        };
        if rows.is_empty() || rows.iter().any(Vec::is_empty) {
            return Err(Error::Input(
                "activations: every row needs at least one token".into(),
            ));
        }
        let vocab = self.vocab_size();
        if let Some(&id) = rows
            .iter()
            .flatten()
            .find(|&&t| usize::try_from(t).map_or(true, |t| t >= vocab))
        {
            return Err(Error::TokenId { id, vocab });
        }
        let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * seq);
        let mut mask = Vec::with_capacity(rows.len() * seq);
        for row in rows {
            ids.extend(
                row.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, seq - row.len())),
            );
            mask.extend((0..seq).map(|i| i64::from(i < row.len())));
        }
        let shape = [rows.len() as i64, seq as i64];
        let ids = Tensor::from_slice(&ids)
            .f_reshape(shape)?
            .f_to_device(self.device())?;
        let mask = Tensor::from_slice(&mask).f_reshape(shape)?;
        let padded = rows.iter().any(|r| r.len() != seq);
        let mask_on_device = mask.f_to_device(self.device())?;
        let input = if padded {
            Input::new(&ids).with_attention_mask(&mask_on_device)
        } else {
            Input::new(&ids)
        };
        let mut unique: Vec<HookPoint> = Vec::with_capacity(hooks.len());
        for &hook in hooks {
            if !unique.contains(&hook) {
                unique.push(hook);
            }
        }
        let hook_set = Hooks::new()
            .capture_all(unique.iter().copied())
            .with_logits(if logits { Logits::All } else { Logits::None });
        let mut out = self.forward(&input, &hook_set)?;

        // Saved as f32 on the CPU whatever the model runs in, so that any reader can open them.
        let to_cpu = |t: Tensor| -> Result<Tensor> {
            Ok(t.f_to_device(Device::Cpu)?
                .f_to_kind(Kind::Float)?
                .f_contiguous()?)
        };
        let mut tensors = Vec::with_capacity(unique.len() + 2);
        for hook in unique {
            let t = out
                .take(hook)
                .ok_or_else(|| Error::Input(format!("the forward pass did not capture {hook}")))?;
            tensors.push((hook.to_string(), to_cpu(t)?));
        }
        if let Some(logits) = out.logits.take() {
            tensors.push(("logits".into(), to_cpu(logits)?));
        }
        if padded {
            tensors.push(("attention_mask".into(), mask));
        }
        Ok(Activations { tensors })
    }
}

/// Runs `input` through `model`, captures `hooks` (and the logits when `logits` is set) and saves
/// them to a safetensors file at `path` atomically; see [`Model::activations`] and
/// [`Activations::save`]. Returns what it saved.
///
/// ```no_run
/// use autointerp_core::HookPoint;
/// use autointerp_model::{save_activations, ActivationInput, DType, Model};
///
/// # fn main() -> autointerp_model::Result<()> {
/// let (model, _) = Model::load("HuggingFaceTB/SmolLM2-135M", tch::Device::Cpu, DType::F32)?;
/// let rows = vec![vec![1, 2, 3], vec![4, 5]];
/// let hooks = [HookPoint::Residual(6), HookPoint::Mlp(6)];
/// let saved = save_activations(&model, ActivationInput::Ids(&rows), &hooks, false, "acts.safetensors".as_ref())?;
/// for (name, t) in saved.tensors() {
///     println!("{name}: {:?}", t.size()); // layers.6 [2, 3, 576], …, attention_mask [2, 3]
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// Those of [`Model::activations`] and [`Activations::save`].
pub fn save_activations(
    model: &Model,
    input: ActivationInput<'_>,
    hooks: &[HookPoint],
    logits: bool,
    path: &Path,
) -> Result<Activations> {
    let acts = model.activations(input, hooks, logits)?;
    acts.save(path)?;
    Ok(acts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_to_a_folder_that_does_not_exist_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let acts = Activations {
            tensors: vec![(
                "layers.0".into(),
                Tensor::zeros([1, 2, 3], (Kind::Float, Device::Cpu)),
            )],
        };
        let path = dir.path().join("missing").join("acts.safetensors");
        let err = acts.save(&path).unwrap_err();
        assert!(matches!(err, Error::Write { .. }), "{err}");
        assert!(err.to_string().contains("acts.safetensors"), "{err}");

        let path = dir.path().join("acts.safetensors");
        acts.save(&path).unwrap();
        let back = Tensor::read_safetensors(&path).unwrap();
        assert_eq!(back[0].0, "layers.0");
        assert_eq!(back[0].1.size(), [1, 2, 3]);
        // Only the file itself is left: no temporary file beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn bad_rows_are_refused_before_the_forward_pass() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
        let (model, _) =
            Model::load(fixture.to_str().unwrap(), Device::Cpu, crate::DType::F32).unwrap();
        let vocab = model.vocab_size();
        let hooks = [HookPoint::Residual(0)];
        let rows = vec![vec![1, vocab as i64]];
        let err = model
            .activations(ActivationInput::Ids(&rows), &hooks, false)
            .unwrap_err();
        assert!(
            matches!(err, Error::TokenId { id, vocab: v } if id == vocab as i64 && v == vocab),
            "{err}"
        );
        let rows = vec![vec![-1]];
        let err = model
            .activations(ActivationInput::Ids(&rows), &hooks, false)
            .unwrap_err();
        assert!(err.to_string().contains("token id -1"), "{err}");
        let rows = vec![vec![1], vec![]];
        let err = model
            .activations(ActivationInput::Ids(&rows), &hooks, false)
            .unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err}");

        // Padded rows: the mask comes along, and duplicate hook points are saved once.
        let rows = vec![vec![1, 2, 3], vec![4]];
        let acts = model
            .activations(ActivationInput::Ids(&rows), &[hooks[0], hooks[0]], true)
            .unwrap();
        let names: Vec<&str> = acts.tensors().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["layers.0", "logits", "attention_mask"]);
        assert_eq!(acts.get("logits").unwrap().size(), [2, 3, vocab as i64]);
    }
}
