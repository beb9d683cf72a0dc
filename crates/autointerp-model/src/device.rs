use std::str::FromStr;
use std::sync::Once;

use tch::{Device, Kind};

use crate::{Error, Result};

/// Loads `libtorch_cuda.so` so that CUDA tensors work, once per process; a no-op where it is
/// absent or its CUDA libraries are missing (CPU machines).
///
/// rustc links with `--as-needed`, and no symbol of `libtorch_cuda.so` is used directly, so the
/// linker drops it and libtorch never registers its CUDA kernels. Opening it ourselves with
/// `RTLD_GLOBAL` registers them. Linking it with `--no-as-needed` would also work, but would make
/// every binary require the full CUDA install even on CPU.
pub fn init_cuda() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[allow(unsafe_code)]
        // SAFETY: loading libtorch_cuda only runs its static initialisers, which register CUDA
        // kernels with the already-loaded libtorch_cpu; the handle is leaked so it stays loaded.
        unsafe {
            use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
            match Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_GLOBAL) {
                Ok(lib) => {
                    std::mem::forget(lib);
                    tracing::debug!("loaded libtorch_cuda.so");
                }
                Err(e) => tracing::debug!("libtorch_cuda.so not loaded ({e}); CUDA unavailable"),
            }
        }
    });
}

/// Parses `cpu`, `cuda` or `cuda:N`, checking that the CUDA device exists.
pub fn parse_device(s: &str) -> Result<Device> {
    let err = |problem: String| Error::Device {
        given: s.to_string(),
        problem,
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let index = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| err("expected cpu, cuda or cuda:N".into()))?,
                None => return Err(err("expected cpu, cuda or cuda:N".into())),
            };
            init_cuda();
            let available = if tch::Cuda::is_available() {
                tch::Cuda::device_count() as usize
            } else {
                0
            };
            if index >= available {
                return Err(err(format!(
                    "{available} CUDA device(s) visible to libtorch (see docs/gpu.md for running on a GPU)"
                )));
            }
            Ok(Device::Cuda(index))
        }
    }
}

/// The floating-point types models run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl DType {
    /// The libtorch kind.
    pub fn kind(self) -> Kind {
        match self {
            Self::F32 => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
            Self::F16 => Kind::Half,
        }
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" | "half" => Ok(Self::F16),
            _ => Err(Error::DType(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_absent_cuda_is_an_error() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("gpu")
            .unwrap_err()
            .to_string()
            .contains("cpu, cuda or cuda:N"));
        assert!(parse_device("cuda:x").is_err());
        // cuda:99 never exists: the error must say how many devices there are.
        let msg = parse_device("cuda:99").unwrap_err().to_string();
        assert!(msg.contains("CUDA device(s) visible"), "{msg}");
    }

    #[test]
    fn dtypes_run_on_libtorch() {
        for (name, kind) in [
            ("f32", Kind::Float),
            ("bf16", Kind::BFloat16),
            ("F16", Kind::Half),
        ] {
            let dtype: DType = name.parse().unwrap();
            let t = tch::Tensor::ones([2, 3], (dtype.kind(), Device::Cpu));
            assert_eq!(t.kind(), kind);
            assert_eq!(t.sum(Kind::Float).double_value(&[]), 6.0);
        }
        assert!("f8".parse::<DType>().is_err());
    }
}
