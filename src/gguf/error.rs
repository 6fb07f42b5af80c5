//! The typed error every malformed GGUF file produces: which field, at which byte offset, and
//! what was wrong with it.

use std::path::PathBuf;

/// An error reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not form a valid GGUF file.
    #[error("malformed GGUF: field `{field}` at byte offset {offset}: {reason}")]
    Malformed {
        /// The field being read, e.g. `tensor_info[3].n_dims` or `metadata["general.name"]`.
        field: String,
        /// Byte offset of the field in the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A metadata key the caller needs is absent or of the wrong type.
    #[error("GGUF metadata key `{key}`: {reason}")]
    Metadata {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A tensor the caller needs is absent or has the wrong shape.
    #[error("GGUF tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What was wrong.
        reason: String,
    },
}

impl GgufError {
    pub(crate) fn malformed(
        field: impl Into<String>,
        offset: usize,
        reason: impl Into<String>,
    ) -> Self {
        GgufError::Malformed {
            field: field.into(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}
