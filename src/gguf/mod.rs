//! The GGUF file format: parse, validate and map (reader), and build (writer).

mod error;
mod reader;
mod value;
mod writer;

pub use crate::quant::{GgmlType, QK_K};
pub use error::GgufError;
pub(crate) use reader::first_overlap;
pub use reader::{Bytes, DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufFile, TensorInfo};
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

#[cfg(test)]
mod tests;
