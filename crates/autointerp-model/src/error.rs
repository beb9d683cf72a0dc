/// Errors from loading and running models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device string that is not `cpu`, `cuda` or `cuda:N`, or a CUDA device that is absent.
    #[error("bad device {given:?}: {problem}")]
    Device {
        /// The string given.
        given: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A dtype string that is not `f32`, `bf16` or `f16`.
    #[error("unknown dtype {0:?}: expected f32, bf16 or f16")]
    DType(String),
    /// An error from libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
