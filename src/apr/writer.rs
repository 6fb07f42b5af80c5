//! Building APR files: in memory ([`AprWriter`], for small models and tests) or streamed
//! tensor by tensor into a file ([`AprStream`], for models larger than memory). Both lay the
//! file out with the same code.

use std::path::Path;

use super::{ALIGN, APR_MAGIC, AprError, HEADER_LEN, header_crc};
use crate::fsutil::{SectionFile, SectionWriter};
use crate::gguf::GgmlType;

/// One tensor of an APR file to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct AprEntry {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: GgmlType,
    /// Dimensions, outermost first; the last is the row length.
    pub dims: Vec<u64>,
    size: usize,
}

impl AprEntry {
    /// An entry, checked: 1 to 4 dims, whole blocks per row, a name and type the index can
    /// hold.
    pub fn new(name: &str, dtype: GgmlType, dims: &[u64]) -> Result<Self, AprError> {
        let row = *dims.last().unwrap_or(&1) as usize;
        let size = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .filter(|_| row.is_multiple_of(dtype.block_size()))
            .and_then(|n| dtype.row_bytes(n));
        match size {
            Some(size)
                if !dims.is_empty()
                    && dims.len() <= 4
                    && name.len() <= u16::MAX as usize
                    && dtype.id() <= 255 =>
            {
                Ok(AprEntry {
                    name: name.to_string(),
                    dtype,
                    dims: dims.to_vec(),
                    size,
                })
            }
            _ => Err(AprError::malformed(
                format!("tensor {name:?}"),
                0,
                format!(
                    "{dtype} with dims {dims:?} cannot be stored (whole blocks per row, 1 to 4 dims)"
                ),
            )),
        }
    }

    /// The tensor's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// The bytes before the data section: header, metadata and the index of `entries` (sorted
/// by name), padded to [`ALIGN`].
fn head(metadata: &serde_json::Value, entries: &[AprEntry]) -> Vec<u8> {
    let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(ALIGN) * ALIGN, 0);
    let mut out = vec![0u8; HEADER_LEN];
    let meta = serde_json::to_vec(metadata).expect("JSON values serialise");
    let metadata_offset = out.len();
    out.extend_from_slice(&meta);
    pad(&mut out);
    let index_offset = out.len();
    let mut offset = 0u64;
    for e in entries {
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(e.name.as_bytes());
        out.push(e.dtype.id() as u8);
        out.push(e.dims.len() as u8);
        for d in &e.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(e.size as u64).to_le_bytes());
        offset = (offset + e.size as u64).div_ceil(ALIGN as u64) * ALIGN as u64;
    }
    pad(&mut out);
    let data_offset = out.len();
    let h = &mut out[..HEADER_LEN];
    h[..4].copy_from_slice(APR_MAGIC);
    h[4] = 2;
    h[5] = 0;
    h[8..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    h[12..20].copy_from_slice(&(metadata_offset as u64).to_le_bytes());
    h[20..24].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    h[24..32].copy_from_slice(&(index_offset as u64).to_le_bytes());
    h[32..40].copy_from_slice(&(data_offset as u64).to_le_bytes());
    let crc = header_crc(h);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Sorts `entries` by name, refusing duplicates (the reader requires unique names).
fn sorted(mut entries: Vec<AprEntry>) -> Result<Vec<AprEntry>, AprError> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = entries.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(AprError::malformed(
            format!("tensor {:?}", w[0].name),
            0,
            "named twice",
        ));
    }
    Ok(entries)
}

/// An APR file under construction in memory.
pub struct AprWriter {
    metadata: serde_json::Value,
    tensors: Vec<(AprEntry, Vec<u8>)>,
}

impl AprWriter {
    /// A file with the given JSON metadata.
    pub fn new(metadata: serde_json::Value) -> Self {
        AprWriter {
            metadata,
            tensors: Vec::new(),
        }
    }

    /// Adds a tensor; `dims` outermost first, `data` already encoded in `dtype`.
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: GgmlType,
        dims: &[u64],
        data: Vec<u8>,
    ) -> Result<&mut Self, AprError> {
        let e = AprEntry::new(name, dtype, dims)?;
        if e.size != data.len() {
            return Err(AprError::malformed(
                format!("tensor {name:?}"),
                0,
                format!(
                    "{} bytes of {dtype} with dims {dims:?} (expected {})",
                    data.len(),
                    e.size
                ),
            ));
        }
        self.tensors.push((e, data));
        Ok(self)
    }

    /// Writes the file's bytes to `out` in order.
    fn emit<W: std::io::Write>(&self, out: W) -> std::io::Result<W> {
        let mut order: Vec<&(AprEntry, Vec<u8>)> = self.tensors.iter().collect();
        order.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let entries: Vec<AprEntry> = order.iter().map(|t| t.0.clone()).collect();
        let sizes = entries.iter().map(|e| e.size as u64).collect();
        let mut w = SectionWriter::new(out, &head(&self.metadata, &entries), sizes, ALIGN as u64)?;
        for (_, data) in order {
            w.write(data)?;
        }
        w.finish(true)
    }

    /// The encoded file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.emit(Vec::new())
            .expect("writing to memory does not fail")
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<(), AprError> {
        crate::fsutil::atomic_write(path, &self.to_bytes()).map_err(|source| AprError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// An APR file streamed to disk tensor by tensor, in name order, never held whole: the index
/// is written first from the entries' sizes, then each tensor's bytes as they are produced.
/// The file appears at its path only when [`finish`](Self::finish) succeeds.
pub struct AprStream {
    file: SectionFile,
    entries: Vec<AprEntry>,
    path: std::path::PathBuf,
}

impl AprStream {
    /// Starts the file at `path` with `metadata` and the tensors `entries` (any order).
    pub fn create(
        path: &Path,
        metadata: &serde_json::Value,
        entries: Vec<AprEntry>,
    ) -> Result<Self, AprError> {
        let entries = sorted(entries)?;
        let sizes = entries.iter().map(|e| e.size as u64).collect();
        let file = SectionFile::create(path, &head(metadata, &entries), sizes, ALIGN as u64)
            .map_err(|source| AprError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(AprStream {
            file,
            entries,
            path: path.to_path_buf(),
        })
    }

    /// The tensors in the order their bytes must be written.
    pub fn entries(&self) -> &[AprEntry] {
        &self.entries
    }

    /// The next bytes of the current tensor (a tensor may come in any number of pieces).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), AprError> {
        self.file.write(bytes).map_err(|source| AprError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Checks every tensor is complete, fsyncs and moves the file into place.
    pub fn finish(self) -> Result<(), AprError> {
        self.file.finish(true).map_err(|source| AprError::Io {
            path: self.path,
            source,
        })
    }
}
