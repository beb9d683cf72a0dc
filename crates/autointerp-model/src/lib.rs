//! Transformer language models on libtorch with named hook points.
#![warn(missing_docs)]

mod device;
mod error;
pub mod gguf;

pub use device::{init_cuda, parse_device, DType};
pub use error::{Error, Result};
