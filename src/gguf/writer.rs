//! Writing GGUF v3 files: synthetic models of every format and architecture, in memory for
//! tests or streamed to disk at real sizes (`pv synth`); round-trip tested against the
//! reader.

use std::path::Path;

use super::error::GgufError;
use super::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::value::{Array, Value};
use crate::fsutil::{SectionFile, SectionWriter};
use crate::quant::GgmlType;

/// A GGUF file under construction: metadata in insertion order and tensors with their
/// already-encoded bytes.
#[derive(Default)]
pub struct GgufWriter {
    pub(crate) metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a metadata entry.
    pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        self
    }

    /// Adds a tensor whose `data` is already encoded in `ty`; `dims[0]` is the row length.
    pub fn tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let n: u64 = dims.iter().product();
        let expected = ty
            .row_bytes(n as usize)
            .filter(|_| (dims[0] as usize).is_multiple_of(ty.block_size()));
        if expected != Some(data.len()) {
            return Err(GgufError::Tensor {
                name: name.into(),
                reason: format!(
                    "{} bytes given, {ty} with dims {dims:?} needs {expected:?}",
                    data.len()
                ),
            });
        }
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, data));
        Ok(self)
    }

    fn alignment(&self) -> usize {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .map_or(DEFAULT_ALIGNMENT, |a| a as usize)
    }

    /// The bytes before the data section for tensors `(name, dims, type, size)` in file
    /// order: header, metadata, tensor infos, padding to the alignment.
    fn head<'a>(
        &self,
        tensors: impl Iterator<Item = (&'a str, &'a [u64], GgmlType, usize)>,
    ) -> Vec<u8> {
        let align = self.alignment() as u64;
        let tensors: Vec<_> = tensors.collect();
        let mut out = Vec::new();
        out.extend_from_slice(GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        for (name, dims, ty, size) in tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + size as u64).div_ceil(align) * align;
        }
        out.resize(out.len().div_ceil(align as usize) * align as usize, 0);
        out
    }

    /// The encoded file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let head = self.head(
            self.tensors
                .iter()
                .map(|(n, d, t, data)| (n.as_str(), d.as_slice(), *t, data.len())),
        );
        let sizes = self.tensors.iter().map(|t| t.3.len() as u64).collect();
        let mut w = SectionWriter::new(Vec::new(), &head, sizes, self.alignment() as u64)
            .expect("writing to memory does not fail");
        for t in &self.tensors {
            w.write(&t.3).expect("sizes were taken from the data");
        }
        w.finish(false).expect("writing to memory does not fail")
    }

    /// Starts a file at `path` with this writer's metadata and the tensors `(name, dims,
    /// type)` (`dims[0]` the row length), whose bytes are then written in this order through
    /// the returned [`SectionFile`]: a model larger than memory is never held whole. Tensors
    /// added with [`tensor`](Self::tensor) are not part of it.
    pub fn stream(
        &self,
        path: &Path,
        tensors: &[(String, Vec<u64>, GgmlType)],
    ) -> Result<SectionFile, GgufError> {
        let mut sizes = Vec::with_capacity(tensors.len());
        for (name, dims, ty) in tensors {
            let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let size = n
                .and_then(|n| usize::try_from(n).ok())
                .filter(|_| {
                    dims.first()
                        .is_some_and(|&c| (c as usize).is_multiple_of(ty.block_size()))
                })
                .and_then(|n| ty.row_bytes(n))
                .ok_or_else(|| GgufError::Tensor {
                    name: name.clone(),
                    reason: format!("{ty} with dims {dims:?} is not whole blocks per row"),
                })?;
            sizes.push(size as u64);
        }
        let head = self.head(
            tensors
                .iter()
                .zip(&sizes)
                .map(|((n, d, t), &s)| (n.as_str(), d.as_slice(), *t, s as usize)),
        );
        SectionFile::create(path, &head, sizes, self.alignment() as u64).map_err(|source| {
            GgufError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Writes the file atomically (temporary file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<(), GgufError> {
        crate::fsutil::atomic_write(path, &self.to_bytes()).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        Array::Scalars { bytes, .. } => out.extend_from_slice(bytes),
        Array::Strings { .. } => {
            for i in 0..a.len() {
                put_str(out, a.str(i).unwrap_or_default());
            }
        }
        Array::Nested(items) => {
            for item in items {
                put_array(out, item);
            }
        }
    }
}
