//! Building APR files in aprender's dialect, as `apr-format`'s `AprV2Writer` lays them out
//! (row-major flag, aprender's type ids, every tensor padded to 64 bytes, a CRC32 footer):
//! in memory ([`AprWriter`], for small models and tests) or streamed tensor by tensor into
//! a file ([`AprStream`], for models larger than memory). Both use the same layout code.

use std::path::Path;

use super::{ALIGN, APR_MAGIC, AprError, DType, Dialect, HEADER_LEN, MAX_NAME_LEN, flags};
use crate::fsutil::{CrcWriter, SectionFile, SectionWriter};

/// One tensor of an APR file to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct AprEntry {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; the last is the row length.
    pub dims: Vec<u64>,
    size: usize,
    id: u8,
}

impl AprEntry {
    /// An entry, checked: a type aprender's table holds (any other would be read by
    /// aprender as something else), up to 8 dims (at least one for a block format), a
    /// name aprender keeps whole (up to 256 bytes), a size that does not overflow.
    pub fn new(name: &str, dtype: DType, dims: &[u64]) -> Result<Self, AprError> {
        let bad = |reason: String| Err(AprError::malformed(format!("tensor {name:?}"), 0, reason));
        let Some(id) = dtype.aprender_id() else {
            return bad(format!(
                "{dtype} is not in aprender's type table (F32, F16, BF16, Q4_K, Q6_K, ...): \
                 aprender would read its id {} as another type; convert it first",
                match dtype {
                    DType::Ggml(t) => t.id().to_string(),
                    _ => "?".into(),
                }
            ));
        };
        if name.len() > MAX_NAME_LEN {
            return bad(format!(
                "name of {} bytes: aprender keeps {MAX_NAME_LEN}",
                name.len()
            ));
        }
        let min_ndim = usize::from(dtype.element_bytes().is_none());
        if !(min_ndim..=8).contains(&dims.len()) {
            return bad(format!(
                "{} dims ({min_ndim} to 8 allowed for {dtype})",
                dims.len()
            ));
        }
        match dtype.tensor_bytes(dims, Dialect::Aprender) {
            Some(size) => Ok(AprEntry {
                name: name.to_string(),
                dtype,
                dims: dims.to_vec(),
                size,
                id,
            }),
            None => bad(format!("{dtype} with dims {dims:?} cannot be stored")),
        }
    }

    /// The tensor's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// The bytes before the data section: header, metadata and the index of `entries` (sorted
/// by name), padded to [`ALIGN`].
fn head(meta: &[u8], entries: &[AprEntry]) -> Vec<u8> {
    let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(ALIGN) * ALIGN, 0);
    let mut out = vec![0u8; HEADER_LEN];
    let metadata_offset = out.len();
    out.extend_from_slice(meta);
    pad(&mut out);
    let index_offset = out.len();
    let mut offset = 0u64;
    for e in entries {
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(e.name.as_bytes());
        out.push(e.id);
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
    h[6..8].copy_from_slice(&flags::ROW_MAJOR.to_le_bytes());
    h[8..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    h[12..20].copy_from_slice(&(metadata_offset as u64).to_le_bytes());
    h[20..24].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    h[24..32].copy_from_slice(&(index_offset as u64).to_le_bytes());
    h[32..40].copy_from_slice(&(data_offset as u64).to_le_bytes());
    let crc = super::header_crc(h);
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

/// Metadata as the JSON bytes of the file, refusing what the header cannot hold.
fn json(metadata: &(impl serde::Serialize + ?Sized)) -> Result<Vec<u8>, AprError> {
    let bytes = serde_json::to_vec(metadata)
        .map_err(|e| AprError::malformed("metadata", HEADER_LEN, e.to_string()))?;
    if u32::try_from(bytes.len()).is_err() {
        return Err(AprError::malformed(
            "metadata_size",
            20,
            format!("{} bytes of metadata do not fit a u32", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// An APR file under construction in memory.
pub struct AprWriter {
    metadata: Vec<u8>,
    tensors: Vec<(AprEntry, Vec<u8>)>,
}

impl AprWriter {
    /// A file with the given metadata (an [`AprenderMetadata`](super::AprenderMetadata), or
    /// any JSON object).
    pub fn new(metadata: &(impl serde::Serialize + ?Sized)) -> Result<Self, AprError> {
        Ok(AprWriter {
            metadata: json(metadata)?,
            tensors: Vec::new(),
        })
    }

    /// A file whose metadata section is `bytes` exactly, JSON or not: for files made to
    /// test other readers (pv's own reader refuses metadata that is not a JSON object).
    pub fn with_metadata_bytes(bytes: Vec<u8>) -> Result<Self, AprError> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(AprError::malformed(
                "metadata_size",
                20,
                format!("{} bytes of metadata do not fit a u32", bytes.len()),
            ));
        }
        Ok(AprWriter {
            metadata: bytes,
            tensors: Vec::new(),
        })
    }

    /// Adds a tensor; `dims` outermost first, `data` already encoded in `dtype`.
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
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

    /// The encoded file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, AprError> {
        let mut order: Vec<&(AprEntry, Vec<u8>)> = self.tensors.iter().collect();
        order.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let entries = sorted(order.iter().map(|t| t.0.clone()).collect())?;
        let sizes = entries.iter().map(|e| e.size as u64).collect();
        let memory = |e: std::io::Error| AprError::malformed("tensor data", 0, e.to_string());
        let out = CrcWriter::new(Vec::new());
        let mut w = SectionWriter::new(out, &head(&self.metadata, &entries), sizes, ALIGN as u64)
            .map_err(memory)?;
        for (_, data) in order {
            w.write(data).map_err(memory)?;
        }
        w.finish(true)
            .and_then(CrcWriter::append_crc)
            .map_err(memory)
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<(), AprError> {
        crate::fsutil::atomic_write(path, &self.to_bytes()?).map_err(|source| AprError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// An APR file streamed to disk tensor by tensor, in name order, never held whole: the index
/// is written first from the entries' sizes, then each tensor's bytes as they are produced,
/// then the CRC32 footer. The file appears at its path only when
/// [`finish`](Self::finish) succeeds.
pub struct AprStream {
    file: SectionFile,
    entries: Vec<AprEntry>,
    path: std::path::PathBuf,
}

impl AprStream {
    /// Starts the file at `path` with `metadata` and the tensors `entries` (any order).
    pub fn create(
        path: &Path,
        metadata: &(impl serde::Serialize + ?Sized),
        entries: Vec<AprEntry>,
    ) -> Result<Self, AprError> {
        let entries = sorted(entries)?;
        let sizes = entries.iter().map(|e| e.size as u64).collect();
        let file = SectionFile::create_with_crc_footer(
            path,
            &head(&json(metadata)?, &entries),
            sizes,
            ALIGN as u64,
        )
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

    /// Checks every tensor is complete, appends the footer, fsyncs and moves the file into
    /// place.
    pub fn finish(self) -> Result<(), AprError> {
        self.file.finish(true).map_err(|source| AprError::Io {
            path: self.path,
            source,
        })
    }
}
