//! Reading APR files of either dialect: everything validated before use (magic, version,
//! header CRC, flags, bounds, sorted unique names, size = dtype x dims, the footer CRC when
//! there is one), nothing allocated from an unchecked size.

use std::path::Path;

use super::{ALIGN, APR_MAGIC, AprError, DType, Dialect, HEADER_LEN, flags, header_crc};
use crate::gguf::Bytes;

/// One tensor of an APR file.
#[derive(Clone, Debug, PartialEq)]
pub struct AprTensor {
    /// Name, as stored (GGUF-style `blk.0.attn_q.weight` or HF-style
    /// `model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; the last is the row length.
    pub dims: Vec<u64>,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Size in bytes.
    pub size: usize,
}

/// The CRC32 footer aprender's writers append after the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footer {
    /// Present, and equal to the CRC32 of every byte before it.
    Verified(u32),
    /// The file ends with its last tensor (files aprender wrote before its footer, and
    /// pv's first dialect).
    Absent,
}

/// A parsed APR file.
pub struct AprFile {
    bytes: Bytes,
    /// Format version (major, minor).
    pub version: (u8, u8),
    /// Header flags ([`flags`]).
    pub flags: u16,
    /// Which dialect the metadata speaks (and so how type ids were read).
    pub dialect: Dialect,
    /// The JSON metadata.
    pub metadata: serde_json::Value,
    /// The tensor index, sorted by name.
    pub tensors: Vec<AprTensor>,
    /// Byte offset of the JSON metadata (where errors in it are reported).
    pub metadata_offset: u64,
    /// The footer.
    pub footer: Footer,
    data_offset: usize,
}

fn m(field: impl Into<String>, offset: usize, reason: impl Into<String>) -> AprError {
    AprError::malformed(field, offset, reason)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The smallest index entry: name length, dtype, ndim, offset and size, no name, no dims.
const MIN_ENTRY: usize = 2 + 1 + 1 + 8 + 8;

/// CRC32 of `b`, in parallel for large files (pieces combined in order).
fn crc32(b: &[u8]) -> u32 {
    use rayon::prelude::*;
    const PIECE: usize = 64 << 20;
    if b.len() <= PIECE {
        return crc32fast::hash(b);
    }
    let parts: Vec<crc32fast::Hasher> = b
        .par_chunks(PIECE)
        .map(|c| {
            let mut h = crc32fast::Hasher::new();
            h.update(c);
            h
        })
        .collect();
    let mut all = crc32fast::Hasher::new();
    for p in &parts {
        all.combine(p);
    }
    all.finalize()
}

/// Why a type id is not one of the dialect's, with the likely mix-up named.
fn unknown_dtype(id: u8, dialect: Dialect) -> String {
    match (dialect, crate::quant::GgmlType::from_id(id as u32)) {
        (Dialect::Aprender, Some(t)) => format!(
            "unknown dtype {id}: GGML's id for {t}, which aprender's type table does not hold \
             (it holds F32, F16, BF16, F64, I32, I64, I8, U8, Q4_K, Q6_K, APR_Q4, APR_Q8)"
        ),
        _ => format!("unknown dtype {id}"),
    }
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

    /// The metadata section's bytes, as stored.
    pub fn metadata_bytes(&self) -> &[u8] {
        let b = self.bytes();
        let len = u32::from_le_bytes(b[20..24].try_into().expect("a checked header")) as usize;
        let at = self.metadata_offset as usize;
        &b[at..at + len]
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
        let flags = check_header(b)?;
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
        let dialect = Dialect::of(&metadata);
        let index = &b[index_off as usize..data_off as usize];
        let tensors = parse_index(index, index_off as usize, count, dialect, len - data_off)?;
        let footer = check_footer(b, data_off, &tensors)?;
        Ok(AprFile {
            version: (2, 0),
            flags,
            dialect,
            metadata,
            tensors,
            metadata_offset: meta_off,
            footer,
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

/// Magic, header CRC, version, reserved bytes and flags; returns the flags.
fn check_header(b: &[u8]) -> Result<u16, AprError> {
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
    let bits = u16::from_le_bytes([b[6], b[7]]);
    if let Some((_, why)) = flags::REFUSED.iter().find(|(f, _)| bits & f != 0) {
        return Err(m("flags", 6, format!("{bits:#06x}: {why}")));
    }
    let unknown = flags::unknown(bits);
    if unknown != 0 {
        return Err(m(
            "flags",
            6,
            format!("{bits:#06x}: bits {unknown:#06x} are no flag aprender defines"),
        ));
    }
    Ok(bits)
}

/// The tensor index: `count` entries in `index` (which starts at byte `at` of the file),
/// each checked against the data section of `data_len` bytes.
fn parse_index(
    index: &[u8],
    at: usize,
    count: usize,
    dialect: Dialect,
    data_len: u64,
) -> Result<Vec<AprTensor>, AprError> {
    if count > index.len() / MIN_ENTRY {
        return Err(m(
            "tensor_count",
            8,
            format!(
                "{count} entries cannot fit in the {}-byte index",
                index.len()
            ),
        ));
    }
    let max_ndim = match dialect {
        Dialect::Aprender => 8,
        Dialect::Pv => 4,
    };
    let mut tensors: Vec<AprTensor> = Vec::with_capacity(count);
    let mut pos = 0usize;
    for i in 0..count {
        let start = at + pos;
        let field = |f: &str| format!("tensor_index[{i}].{f}");
        let need = |pos: usize, n: usize, f: &str| -> Result<(), AprError> {
            if pos + n > index.len() {
                Err(m(field(f), at + pos, "runs past the end of the index"))
            } else {
                Ok(())
            }
        };
        need(pos, 2, "name_len")?;
        let name_len = u16::from_le_bytes([index[pos], index[pos + 1]]) as usize;
        pos += 2;
        need(pos, name_len + 2, "name")?;
        let name = std::str::from_utf8(&index[pos..pos + name_len])
            .map_err(|e| m(field("name"), at + pos, format!("not UTF-8: {e}")))?
            .to_string();
        pos += name_len;
        let id = index[pos];
        let dtype = DType::from_id(id, dialect)
            .ok_or_else(|| m(field("dtype"), at + pos, unknown_dtype(id, dialect)))?;
        let ndim = index[pos + 1] as usize;
        let min_ndim = usize::from(dtype.element_bytes().is_none());
        if !(min_ndim..=max_ndim).contains(&ndim) {
            return Err(m(
                field("ndim"),
                at + pos + 1,
                format!("{ndim} dimensions ({min_ndim} to {max_ndim} allowed for {dtype})"),
            ));
        }
        pos += 2;
        need(pos, 8 * ndim + 16, "dims")?;
        let dims: Vec<u64> = (0..ndim).map(|d| u64_at(index, pos + 8 * d)).collect();
        pos += 8 * ndim;
        let offset = u64_at(index, pos);
        let size = u64_at(index, pos + 8);
        pos += 16;
        let expected = dtype.tensor_bytes(&dims, dialect);
        if expected.map(|e| e as u64) != Some(size) {
            return Err(m(
                field("size"),
                start,
                format!(
                    "{size} bytes, but {dtype} with dims {dims:?} takes {}",
                    expected.map_or("no whole number of bytes".to_string(), |e| e.to_string())
                ),
            ));
        }
        if !offset.is_multiple_of(ALIGN as u64)
            || offset.checked_add(size).is_none_or(|e| e > data_len)
        {
            return Err(m(
                field("offset"),
                start,
                format!(
                    "[{offset}, +{size}) is unaligned or past the data section ({data_len} bytes)"
                ),
            ));
        }
        if let Some(prev) = tensors.last().map(|t| &t.name)
            && *prev >= name
        {
            return Err(m(
                field("name"),
                start,
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
            at,
            format!(
                "{} at [{}, +{}) overlaps {} at [{}, +{})",
                tb.name, tb.offset, tb.size, ta.name, ta.offset, ta.size
            ),
        ));
    }
    Ok(tensors)
}

/// Where the file must end: right after its last tensor (padded or not), or four bytes
/// later with aprender's CRC32 footer, which must then match.
fn check_footer(b: &[u8], data_off: u64, tensors: &[AprTensor]) -> Result<Footer, AprError> {
    let align = ALIGN as u64;
    let end = data_off
        + tensors
            .iter()
            .map(|t| t.offset + t.size as u64)
            .max()
            .unwrap_or(0);
    let padded = data_off
        + tensors
            .iter()
            .map(|t| t.offset + (t.size as u64).div_ceil(align) * align)
            .max()
            .unwrap_or(0);
    let len = b.len() as u64;
    if len == padded + 4 {
        let at = b.len() - 4;
        let stored = u32::from_le_bytes(b[at..].try_into().expect("4 bytes"));
        let crc = crc32(&b[..at]);
        if stored != crc {
            return Err(m(
                "footer_crc32",
                at,
                format!(
                    "footer checksum {stored:#010x}, computed {crc:#010x} over the {at} bytes before it"
                ),
            ));
        }
        return Ok(Footer::Verified(crc));
    }
    if (end..=padded).contains(&len) {
        return Ok(Footer::Absent);
    }
    Err(m(
        "footer",
        padded.min(len) as usize,
        format!(
            "the file is {len} bytes, but its tensors end at {padded}: it must be {padded} bytes, \
             or {} with aprender's CRC32 footer",
            padded + 4
        ),
    ))
}
