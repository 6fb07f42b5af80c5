//! The APR format (version 2.0) as aprender defines it (`apr-format`, `AprV2Writer` /
//! `AprV2Reader`): a checksummed 64-byte header, JSON metadata, a tensor index sorted by
//! name, 64-byte-aligned row-major tensor data, and a CRC32 footer.
//!
//! # Layout (little-endian)
//! | offset | field |
//! |---|---|
//! | 0 | magic `APR\0` |
//! | 4 | version major (u8) = 2, minor (u8) = 0 |
//! | 6 | flags (u16, [`flags`]) |
//! | 8 | tensor_count (u32) |
//! | 12 | metadata_offset (u64) |
//! | 20 | metadata_size (u32) |
//! | 24 | tensor_index_offset (u64) |
//! | 32 | data_offset (u64) |
//! | 40 | CRC32 (IEEE) of header bytes 0..40 and 44..64 |
//! | 44 | 20 reserved zero bytes |
//!
//! Index entry: name_len (u16), name, dtype (u8, [`DType::from_id`]), ndim (u8, up to 8),
//! dims (u64 x ndim, outermost first; the last is the row length), offset (u64, from the
//! data section), size (u64). After the last tensor (padded to 64 bytes) aprender's writers
//! append the CRC32 of every byte before it; older files end without one.
//!
//! Two dialects share this container ([`Dialect`]): aprender's, with flat typed metadata
//! and aprender's type ids, which pv reads and writes; and pv's first one, with nested
//! metadata and GGML type ids, which pv still reads.

mod dtype;
pub mod metadata;
mod reader;
mod writer;

pub use dtype::{DType, Dialect};
pub use metadata::{AprenderMetadata, flags};
pub use reader::{AprFile, AprTensor, Footer};
pub use writer::{AprEntry, AprStream, AprWriter};

use std::path::PathBuf;

/// The four bytes every APR file starts with.
pub const APR_MAGIC: &[u8; 4] = b"APR\0";
/// Header size.
pub const HEADER_LEN: usize = 64;
/// Alignment of the metadata end, index end and every tensor.
pub const ALIGN: usize = 64;
/// Longest tensor name aprender's writer keeps (it cuts longer ones).
pub const MAX_NAME_LEN: usize = 256;

/// An error reading or writing an APR file.
#[derive(Debug, thiserror::Error)]
pub enum AprError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid APR file.
    #[error("malformed APR: field `{field}` at byte offset {offset}: {reason}")]
    Malformed {
        /// The field, e.g. `tensor_index[2].size`.
        field: String,
        /// Its byte offset.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A tensor the model needs is absent or has the wrong shape or contents.
    #[error("APR tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What was wrong.
        reason: String,
    },
}

impl AprError {
    fn malformed(field: impl Into<String>, offset: usize, reason: impl Into<String>) -> Self {
        AprError::Malformed {
            field: field.into(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}

/// CRC32 of the header with the checksum field itself left out.
fn header_crc(h: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&h[..40]);
    c.update(&h[44..64]);
    c.finalize()
}

#[cfg(test)]
mod tests;
