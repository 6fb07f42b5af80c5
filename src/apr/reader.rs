//! Reading APR files: everything validated before use (magic, version, CRC, bounds, sorted
//! unique names, size = dtype x dims), nothing allocated from an unchecked size.

use std::path::Path;

use super::{ALIGN, APR_MAGIC, AprError, HEADER_LEN, header_crc};
use crate::gguf::{Bytes, GgmlType};

/// One tensor of an APR file.
#[derive(Clone, Debug, PartialEq)]
pub struct AprTensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: GgmlType,
    /// Dimensions, outermost first; the last is the row length.
    pub dims: Vec<u64>,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Size in bytes.
    pub size: usize,
}

/// A parsed APR file.
pub struct AprFile {
    bytes: Bytes,
    /// Format version (major, minor).
    pub version: (u8, u8),
    /// Header flags.
    pub flags: u16,
    /// The JSON metadata.
    pub metadata: serde_json::Value,
    /// The tensor index, sorted by name.
    pub tensors: Vec<AprTensor>,
    /// Byte offset of the JSON metadata (where errors in it are reported).
    pub metadata_offset: u64,
    data_offset: usize,
}

fn m(field: impl Into<String>, offset: usize, reason: impl Into<String>) -> AprError {
    AprError::malformed(field, offset, reason)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl AprFile {
    /// Opens and maps an APR file.
    pub fn open(path: &Path) -> Result<Self, AprError> {
        let io = |source| AprError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::fsutil::open_regular(path).map_err(io)?;
        // SAFETY: a read-only mapping of a file pv does not modify while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(Bytes::Mapped(map))
    }

    /// The whole file's bytes (mapped or held).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Parses APR bytes held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, AprError> {
        Self::parse(Bytes::Owned(bytes))
    }

    fn parse(bytes: Bytes) -> Result<Self, AprError> {
        let b: &[u8] = &bytes;
        if b.len() < HEADER_LEN {
            return Err(m(
                "header",
                0,
                format!(
                    "file is {} bytes, the header alone is {HEADER_LEN}",
                    b.len()
                ),
            ));
        }
        if &b[..4] != APR_MAGIC {
            return Err(m(
                "magic",
                0,
                format!("expected \"APR\\0\", found {:02x?}", &b[..4]),
            ));
        }
        let stored = u32::from_le_bytes(b[40..44].try_into().expect("4 bytes"));
        let crc = header_crc(&b[..HEADER_LEN]);
        if stored != crc {
            return Err(m(
                "crc32",
                40,
                format!("header checksum {stored:#010x}, computed {crc:#010x}"),
            ));
        }
        if (b[4], b[5]) != (2, 0) {
            return Err(m(
                "version",
                4,
                format!("version {}.{} is not supported (2.0)", b[4], b[5]),
            ));
        }
        if b[44..64].iter().any(|&x| x != 0) {
            return Err(m("reserved", 44, "reserved bytes are not zero"));
        }
        let flags = u16::from_le_bytes([b[6], b[7]]);
        let count = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
        let meta_off = u64_at(b, 12);
        let meta_len = u32::from_le_bytes(b[20..24].try_into().expect("4 bytes")) as u64;
        let index_off = u64_at(b, 24);
        let data_off = u64_at(b, 32);
        let len = b.len() as u64;
        if meta_off < HEADER_LEN as u64
            || meta_off.checked_add(meta_len).is_none_or(|e| e > index_off)
        {
            return Err(m(
                "metadata_offset",
                12,
                format!(
                    "metadata [{meta_off}, +{meta_len}) must lie between the header and the index at {index_off}"
                ),
            ));
        }
        if index_off > data_off || data_off > len || !data_off.is_multiple_of(ALIGN as u64) {
            return Err(m(
                "data_offset",
                32,
                format!(
                    "data offset {data_off} must be 64-aligned, after the index at {index_off} and within the file ({len} bytes)"
                ),
            ));
        }
        let meta_bytes = &b[meta_off as usize..(meta_off + meta_len) as usize];
        let metadata: serde_json::Value = serde_json::from_slice(meta_bytes)
            .map_err(|e| m("metadata", meta_off as usize, format!("not JSON: {e}")))?;
        if !metadata.is_object() {
            return Err(m(
                "metadata",
                meta_off as usize,
                "metadata is not a JSON object",
            ));
        }

        // An index entry takes at least 2 + 1 + 1 + 1 + 8 + 8 + 8 bytes.
        let index = &b[index_off as usize..data_off as usize];
        if count > index.len() / 29 {
            return Err(m(
                "tensor_count",
                8,
                format!(
                    "{count} entries cannot fit in the {}-byte index",
                    index.len()
                ),
            ));
        }
        let data_len = len - data_off;
        let mut tensors = Vec::with_capacity(count);
        let mut pos = 0usize;
        for i in 0..count {
            let at = index_off as usize + pos;
            let field = |f: &str| format!("tensor_index[{i}].{f}");
            let need = |pos: usize, n: usize, f: &str| -> Result<(), AprError> {
                if pos + n > index.len() {
                    Err(m(
                        field(f),
                        index_off as usize + pos,
                        "runs past the end of the index",
                    ))
                } else {
                    Ok(())
                }
            };
            need(pos, 2, "name_len")?;
            let name_len = u16::from_le_bytes([index[pos], index[pos + 1]]) as usize;
            pos += 2;
            need(pos, name_len + 2, "name")?;
            let name = std::str::from_utf8(&index[pos..pos + name_len])
                .map_err(|e| {
                    m(
                        field("name"),
                        index_off as usize + pos,
                        format!("not UTF-8: {e}"),
                    )
                })?
                .to_string();
            pos += name_len;
            let dtype_id = index[pos];
            let dtype = GgmlType::from_id(dtype_id as u32).ok_or_else(|| {
                m(
                    field("dtype"),
                    index_off as usize + pos,
                    format!("unknown dtype {dtype_id}"),
                )
            })?;
            let ndim = index[pos + 1] as usize;
            if !(1..=4).contains(&ndim) {
                return Err(m(
                    field("ndim"),
                    index_off as usize + pos + 1,
                    format!("{ndim} dimensions (1 to 4 allowed)"),
                ));
            }
            pos += 2;
            need(pos, 8 * ndim + 16, "dims")?;
            let dims: Vec<u64> = (0..ndim).map(|d| u64_at(index, pos + 8 * d)).collect();
            pos += 8 * ndim;
            let offset = u64_at(index, pos);
            let size = u64_at(index, pos + 8);
            pos += 16;
            let expected = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .and_then(|n| usize::try_from(n).ok())
                .filter(|_| {
                    (*dims.last().expect("ndim >= 1") as usize).is_multiple_of(dtype.block_size())
                })
                .and_then(|n| dtype.row_bytes(n));
            if expected != Some(size as usize) {
                return Err(m(
                    field("size"),
                    at,
                    format!("{size} bytes, but {dtype} with dims {dims:?} takes {expected:?}"),
                ));
            }
            if !offset.is_multiple_of(ALIGN as u64)
                || offset.checked_add(size).is_none_or(|e| e > data_len)
            {
                return Err(m(
                    field("offset"),
                    at,
                    format!(
                        "[{offset}, +{size}) is unaligned or past the data section ({data_len} bytes)"
                    ),
                ));
            }
            if let Some(prev) = tensors.last().map(|t: &AprTensor| &t.name)
                && *prev >= name
            {
                return Err(m(
                    field("name"),
                    at,
                    format!("{name:?} is not after {prev:?}: names must be sorted and unique"),
                ));
            }
            tensors.push(AprTensor {
                name,
                dtype,
                dims,
                offset,
                size: size as usize,
            });
        }
        if let Some((a, b)) =
            crate::gguf::first_overlap(tensors.iter().map(|t| (t.offset, t.offset + t.size as u64)))
        {
            let (ta, tb) = (&tensors[a], &tensors[b]);
            return Err(m(
                format!("tensor_index[{b}].offset"),
                index_off as usize,
                format!(
                    "{} at [{}, +{}) overlaps {} at [{}, +{})",
                    tb.name, tb.offset, tb.size, ta.name, ta.offset, ta.size
                ),
            ));
        }
        Ok(AprFile {
            version: (2, 0),
            flags,
            metadata,
            tensors,
            metadata_offset: meta_off,
            data_offset: data_off as usize,
            bytes,
        })
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&AprTensor> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i])
    }

    /// Where a tensor's bytes lie within [`bytes`](Self::bytes) (bounds checked at parse
    /// time).
    pub fn tensor_range(&self, t: &AprTensor) -> std::ops::Range<usize> {
        let start = self.data_offset + t.offset as usize;
        start..start + t.size
    }

    /// A tensor's bytes (bounds checked at parse time).
    pub fn tensor_data(&self, t: &AprTensor) -> &[u8] {
        &self.bytes[self.tensor_range(t)]
    }
}
