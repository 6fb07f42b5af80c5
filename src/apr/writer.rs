//! Building APR files.

use std::path::Path;

use super::{ALIGN, APR_MAGIC, AprError, HEADER_LEN, header_crc};
use crate::gguf::GgmlType;

/// An APR file under construction.
pub struct AprWriter {
    metadata: serde_json::Value,
    tensors: Vec<(String, GgmlType, Vec<u64>, Vec<u8>)>,
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
        let row = *dims.last().unwrap_or(&1) as usize;
        let n: u64 = dims.iter().product();
        let expected = dtype
            .row_bytes(n as usize)
            .filter(|_| row.is_multiple_of(dtype.block_size()));
        if expected != Some(data.len())
            || dims.is_empty()
            || dims.len() > 4
            || name.len() > u16::MAX as usize
            || dtype.id() > 255
        {
            return Err(AprError::malformed(
                format!("tensor {name:?}"),
                0,
                format!(
                    "{} bytes of {dtype} with dims {dims:?} (expected {expected:?})",
                    data.len()
                ),
            ));
        }
        self.tensors
            .push((name.to_string(), dtype, dims.to_vec(), data));
        Ok(self)
    }

    /// The encoded file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(ALIGN) * ALIGN, 0);
        let mut order: Vec<usize> = (0..self.tensors.len()).collect();
        order.sort_by(|&a, &b| self.tensors[a].0.cmp(&self.tensors[b].0));

        let mut out = vec![0u8; HEADER_LEN];
        let meta = serde_json::to_vec(&self.metadata).expect("JSON values serialise");
        let metadata_offset = out.len();
        out.extend_from_slice(&meta);
        pad(&mut out);
        let index_offset = out.len();
        let mut offset = 0u64;
        for &i in &order {
            let (name, dtype, dims, data) = &self.tensors[i];
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(dtype.id() as u8);
            out.push(dims.len() as u8);
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            offset = (offset + data.len() as u64).div_ceil(ALIGN as u64) * ALIGN as u64;
        }
        pad(&mut out);
        let data_offset = out.len();
        for &i in &order {
            out.extend_from_slice(&self.tensors[i].3);
            pad(&mut out);
        }

        let h = &mut out[..HEADER_LEN];
        h[..4].copy_from_slice(APR_MAGIC);
        h[4] = 2;
        h[5] = 0;
        h[8..12].copy_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        h[12..20].copy_from_slice(&(metadata_offset as u64).to_le_bytes());
        h[20..24].copy_from_slice(&(meta.len() as u32).to_le_bytes());
        h[24..32].copy_from_slice(&(index_offset as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(data_offset as u64).to_le_bytes());
        let crc = header_crc(h);
        h[40..44].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<(), AprError> {
        crate::fsutil::atomic_write(path, &self.to_bytes()).map_err(|source| AprError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
