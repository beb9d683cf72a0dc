//! One sparse coder per hook point of a model, from a source spec: a checkpoint folder, a Hub
//! repo, or the model's own MLP neurons.

use autointerp_core::HookPoint;
use tch::Device;

use crate::{Error, Result, SparseCoder};

/// Loads one coder per hook point in `hooks`, checked against the model's activation widths.
///
/// `source` is a checkpoint folder or Hub repo as [`SparseCoder::load`] takes it, or `neurons` /
/// `neurons:K` for the MLP activations at `layers.{i}.mlp.hidden` (all of them, or the top K per
/// token). `hook_dim` gives the model's width at a hook point; it is a closure so that this crate
/// needs no model type. Each coder comes back with the hook point it was asked for and reads at
/// [`SparseCoder::hook`]: for a transcoder that is the MLP input of its layer, not the hook it is
/// named after.
///
/// # Errors
/// [`Error::BadCoderSpec`] for a malformed `neurons:K`, [`Error::NeuronsAt`] for neurons asked at
/// another hook point, [`Error::CoderFor`] when a hook point's coder does not load,
/// [`Error::AmbiguousHookPoint`] when a source holds several coders for one hook point,
/// [`Error::HookDim`] when the model has no such hook point, and [`Error::DoesNotFit`] when a
/// coder's input width is not the model's.
pub fn load_coders<E>(
    source: &str,
    hooks: &[HookPoint],
    hook_dim: impl Fn(HookPoint) -> std::result::Result<usize, E>,
    device: Device,
) -> Result<Vec<(HookPoint, SparseCoder)>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let dim = |hook: HookPoint| {
        hook_dim(hook).map_err(|e| Error::HookDim {
            hook,
            source: Box::new(e),
        })
    };
    if let Some(k) = source.strip_prefix("neurons") {
        let k = match k.strip_prefix(':') {
            Some(k) => Some(k.parse::<usize>().map_err(|_| Error::BadCoderSpec {
                spec: source.into(),
                problem: "K must be a number".into(),
            })?),
            None if k.is_empty() => None,
            None => {
                return Err(Error::BadCoderSpec {
                    spec: source.into(),
                    problem: "expected `neurons` or `neurons:K`".into(),
                })
            }
        };
        let mut coders = Vec::with_capacity(hooks.len());
        for &hook in hooks {
            let HookPoint::MlpHidden(_) = hook else {
                return Err(Error::NeuronsAt { hook });
            };
            coders.push((hook, SparseCoder::neurons(dim(hook)?, k)?.with_hook(hook)));
        }
        return Ok(coders);
    }
    let mut coders = Vec::with_capacity(hooks.len());
    for &hook in hooks {
        let name = hook.to_string();
        let mut found =
            SparseCoder::load(source, &[name.as_str()], device).map_err(|e| Error::CoderFor {
                hook,
                source_name: source.into(),
                source: Box::new(e),
            })?;
        if found.len() != 1 {
            return Err(Error::AmbiguousHookPoint {
                requested: name,
                source_name: source.into(),
                matches: found.into_iter().map(|(n, _)| n).collect(),
            });
        }
        let (_, coder) = found.remove(0);
        // A transcoder reads the MLP input of the layer it was named after.
        let read_at = coder.hook().unwrap_or(hook);
        coder
            .check_input(Some(read_at), dim(read_at)?)
            .map_err(|e| Error::DoesNotFit {
                source_name: source.into(),
                source: Box::new(e),
            })?;
        coders.push((hook, coder.with_hook(read_at)));
    }
    Ok(coders)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn dims(hook: HookPoint) -> std::result::Result<usize, std::io::Error> {
        match hook {
            HookPoint::Residual(0) | HookPoint::MlpHidden(0) => Ok(16),
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    #[test]
    fn neurons_take_the_model_width_and_an_optional_k() {
        let hook = HookPoint::MlpHidden(0);
        let coders = load_coders("neurons:3", &[hook], dims, Device::Cpu).unwrap();
        assert_eq!(coders[0].0, hook);
        assert_eq!((coders[0].1.d_in(), coders[0].1.k()), (16, Some(3)));
        for bad in ["neurons:x", "neuronsx"] {
            let err = load_coders(bad, &[hook], dims, Device::Cpu).unwrap_err();
            assert!(matches!(err, Error::BadCoderSpec { .. }), "{bad}: {err}");
        }
        let err = load_coders("neurons", &[HookPoint::Residual(0)], dims, Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::NeuronsAt { .. }), "{err}");
    }

    #[test]
    fn a_source_with_several_coders_for_a_hook_is_refused() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sparsify/layers.0");
        let dir = tempfile::tempdir().unwrap();
        for sub in ["layers.0/a", "layers.0/b", "single/layers.0"] {
            let to = dir.path().join(sub);
            std::fs::create_dir_all(&to).unwrap();
            for file in ["cfg.json", "sae.safetensors"] {
                std::fs::copy(fixture.join(file), to.join(file)).unwrap();
            }
        }
        let source = dir.path().to_str().unwrap();
        let err = load_coders(source, &[HookPoint::Residual(0)], dims, Device::Cpu).unwrap_err();
        let Error::AmbiguousHookPoint { matches, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(matches.len(), 2, "{err}");

        // One coder of the right width loads; a model of another width is refused.
        let one = dir.path().join("single");
        let coders = load_coders(
            one.to_str().unwrap(),
            &[HookPoint::Residual(0)],
            dims,
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(coders[0].1.hook(), Some(HookPoint::Residual(0)));
        let wide = |_| Ok::<_, std::io::Error>(32);
        let err = load_coders(
            one.to_str().unwrap(),
            &[HookPoint::Residual(0)],
            wide,
            Device::Cpu,
        )
        .unwrap_err();
        assert!(matches!(err, Error::DoesNotFit { .. }), "{err}");
    }
}
