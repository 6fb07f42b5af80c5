//! Parsing a GGUF file (v2 and v3) into metadata and a tensor table over a memory map.
//!
//! Every count, length and offset is checked against the bytes that remain before it is used,
//! so a malformed or hostile file yields a [`GgufError::Malformed`] naming the field and its
//! byte offset, never a panic or an allocation sized by an unchecked number.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::GgufError;
use super::value::{Array, Value, ValueType};
use crate::quant::GgmlType;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_NESTING: usize = 4;

/// The bytes of a GGUF file: a read-only memory map, or an owned buffer (tests, writers).
pub enum Bytes {
    /// A read-only mapping of a file on disk.
    Mapped(memmap2::Mmap),
    /// Bytes held in memory.
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// One entry of the tensor-info table, validated against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.ffn_gate.weight`.
    pub name: String,
    /// Dimensions as GGUF stores them: `dims[0]` is the contiguous (row) length.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data, relative to the start of the data section.
    pub offset: u64,
    /// Size in bytes of the data.
    pub size: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Length of one row (`dims[0]`) and number of rows (product of the other dims).
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = self.dims.first().copied().unwrap_or(1) as usize;
        let rows = self.dims.iter().skip(1).product::<u64>() as usize;
        (rows, cols)
    }
}

/// A parsed GGUF file: header, metadata, tensor table, and the bytes behind them.
pub struct GgufFile {
    bytes: Bytes,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: BTreeMap<String, usize>,
    /// Tensor table in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: BTreeMap<String, usize>,
    /// Alignment of the data section (from `general.alignment`).
    pub alignment: usize,
    /// Byte offset of the data section.
    pub data_offset: usize,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                GgufError::malformed(
                    field(),
                    self.pos,
                    format!(
                        "needs {n} bytes but only {} remain",
                        self.buf.len() - self.pos
                    ),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A count read from the file, bounded by how many items of at least `min_item_bytes`
    /// could still fit in the file.
    fn count(
        &mut self,
        min_item_bytes: usize,
        field: &dyn Fn() -> String,
    ) -> Result<usize, GgufError> {
        let at = self.pos;
        let n = self.u64(field)?;
        let fits = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > fits {
            return Err(GgufError::malformed(
                field(),
                at,
                format!(
                    "count {n} cannot fit in the {} bytes that remain",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, field: &dyn Fn() -> String) -> Result<String, GgufError> {
        let at = self.pos;
        let len = self.count(1, field)?;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| GgufError::malformed(field(), at, format!("string is not UTF-8: {e}")))
    }

    fn value(
        &mut self,
        ty: ValueType,
        depth: usize,
        field: &dyn Fn() -> String,
    ) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(field)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(field)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            ValueType::U32 => Value::U32(self.u32(field)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            ValueType::U64 => Value::U64(self.u64(field)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>(field)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(GgufError::malformed(
                            field(),
                            at,
                            format!("bool byte is {b}, not 0 or 1"),
                        ));
                    }
                }
            }
            ValueType::String => Value::String(self.string(field)?),
            ValueType::Array => {
                let at = self.pos;
                if depth >= MAX_ARRAY_NESTING {
                    return Err(GgufError::malformed(
                        field(),
                        at,
                        "arrays nested too deeply",
                    ));
                }
                let id = self.u32(field)?;
                let elem = ValueType::from_id(id).ok_or_else(|| {
                    GgufError::malformed(field(), at, format!("unknown array element type {id}"))
                })?;
                let n = self.count(elem.min_encoded_bytes(), field)?;
                // Compact storage: a fixed-width array is one copy of its bytes, strings share
                // one buffer; nothing costs much more than the bytes it was read from.
                let array = match elem {
                    ValueType::String => {
                        let mut text = String::new();
                        let mut ends = Vec::with_capacity(n);
                        for i in 0..n {
                            let f = || format!("{}[{i}]", field());
                            text.push_str(&self.string(&f)?);
                            ends.push(text.len());
                        }
                        Array::Strings { text, ends }
                    }
                    ValueType::Array => {
                        let mut items = Vec::with_capacity(n);
                        for i in 0..n {
                            let f = || format!("{}[{i}]", field());
                            match self.value(elem, depth + 1, &f)? {
                                Value::Array(a) => items.push(a),
                                _ => unreachable!("an array element of type array is an array"),
                            }
                        }
                        Array::Nested(items)
                    }
                    ty => {
                        let w = ty.width().expect("fixed-width type");
                        let start = self.pos;
                        let bytes = self.take(n * w, field)?;
                        if ty == ValueType::Bool
                            && let Some(i) = bytes.iter().position(|&b| b > 1)
                        {
                            return Err(GgufError::malformed(
                                format!("{}[{i}]", field()),
                                start + i,
                                format!("bool byte is {}, not 0 or 1", bytes[i]),
                            ));
                        }
                        Array::Scalars {
                            ty,
                            bytes: bytes.to_vec(),
                        }
                    }
                };
                Value::Array(array)
            }
        })
    }
}

/// Magic, version and the two counts; returns (version, tensor count, key-value count).
fn read_header(c: &mut Cursor) -> Result<(u32, usize, usize), GgufError> {
    let magic = c.array::<4>(&|| "magic".into())?;
    if &magic != GGUF_MAGIC {
        // An APR file (pv's other format) given where GGUF is read: say so.
        let what = if &magic == b"APR\0" {
            " (an APR file, not GGUF)"
        } else {
            ""
        };
        return Err(GgufError::malformed(
            "magic",
            0,
            format!("expected \"GGUF\", found {magic:02x?}{what}"),
        ));
    }
    let version = c.u32(&|| "version".into())?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::malformed(
            "version",
            4,
            format!("version {version} is not supported (2 or 3)"),
        ));
    }
    // A tensor-info entry takes at least 8 (name) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    let n_tensors = c.count(24, &|| "tensor_count".into())?;
    // A key-value pair takes at least 8 (key) + 4 (type) + 1 (value) bytes.
    let n_kv = c.count(13, &|| "metadata_kv_count".into())?;
    Ok((version, n_tensors, n_kv))
}

/// The metadata's key-value pairs in file order, and an index from key to position.
type Metadata = (Vec<(String, Value)>, BTreeMap<String, usize>);

/// `n_kv` key-value pairs; a duplicate key is refused (which of the two a reader would take
/// is not defined).
fn read_metadata(c: &mut Cursor, n_kv: usize) -> Result<Metadata, GgufError> {
    let mut metadata = Vec::with_capacity(n_kv);
    let mut index = BTreeMap::new();
    for i in 0..n_kv {
        let key_at = c.pos;
        let key = c.string(&|| format!("metadata[{i}].key"))?;
        let f = || format!("metadata[{key:?}]");
        let ty_at = c.pos;
        let ty_id = c.u32(&f)?;
        let ty = ValueType::from_id(ty_id).ok_or_else(|| {
            GgufError::malformed(f(), ty_at, format!("unknown value type {ty_id}"))
        })?;
        let value = c.value(ty, 0, &f)?;
        if index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::malformed(
                format!("metadata[{i}].key"),
                key_at,
                format!("duplicate key {key:?}"),
            ));
        }
        metadata.push((key, value));
    }
    Ok((metadata, index))
}

/// `general.alignment`, or the default when absent: a power of two up to 2^20.
fn alignment_of(
    metadata: &[(String, Value)],
    index: &BTreeMap<String, usize>,
) -> Result<usize, GgufError> {
    let Some(v) = index.get("general.alignment").map(|&i| &metadata[i].1) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match v.as_u64() {
        Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => Ok(a as usize),
        _ => Err(GgufError::Metadata {
            key: "general.alignment".into(),
            reason: format!("must be a power of two up to 2^20, found {v}"),
        }),
    }
}

/// Where a tensor-info entry's fields were read, for errors found after it.
struct InfoAt {
    /// The entry's `n_dims` field (duplicate names are reported here).
    name: usize,
    /// The entry's `offset` field.
    offset: usize,
}

/// Entry `i` of the tensor-info table: dims within MAX_DIMS, a known type, a size that fits
/// in memory with whole blocks per row, an aligned offset. Bounds against the data section
/// are checked once the section's start is known ([`check_data_section`]).
fn read_tensor_info(
    c: &mut Cursor,
    i: usize,
    alignment: usize,
) -> Result<(TensorInfo, InfoAt), GgufError> {
    let name = c.string(&|| format!("tensor_info[{i}].name"))?;
    let f = |field: &str| format!("tensor_info[{i}] ({name}).{field}");
    let nd_at = c.pos;
    let n_dims = c.u32(&|| f("n_dims"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::malformed(
            f("n_dims"),
            nd_at,
            format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(c.u64(&|| f(&format!("dims[{d}]")))?);
    }
    let ty_at = c.pos;
    let ty_id = c.u32(&|| f("type"))?;
    let ggml_type = GgmlType::from_id(ty_id).ok_or_else(|| {
        GgufError::malformed(
            f("type"),
            ty_at,
            format!("unsupported GGML type id {ty_id}"),
        )
    })?;
    let off_at = c.pos;
    let offset = c.u64(&|| f("offset"))?;
    let n_el = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let size = n_el
        .and_then(|n| usize::try_from(n).ok())
        .filter(|_| (dims[0] as usize).is_multiple_of(ggml_type.block_size()))
        .and_then(|n| (n / ggml_type.block_size()).checked_mul(ggml_type.block_bytes()))
        .ok_or_else(|| {
            GgufError::malformed(
                f("dims"),
                nd_at + 4,
                format!(
                    "dims {dims:?} overflow or row length is not a multiple of {}'s block size {}",
                    ggml_type,
                    ggml_type.block_size()
                ),
            )
        })?;
    if offset % alignment as u64 != 0 {
        return Err(GgufError::malformed(
            f("offset"),
            off_at,
            format!("offset {offset} is not a multiple of the alignment {alignment}"),
        ));
    }
    let info = TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        size,
    };
    Ok((
        info,
        InfoAt {
            name: nd_at,
            offset: off_at,
        },
    ))
}

/// Every tensor's data within the data section of `data_len` bytes, and no two tensors
/// sharing bytes; `infos` pairs each entry with where its offset field was read.
fn check_data_section(
    infos: Vec<(TensorInfo, usize)>,
    data_len: usize,
) -> Result<Vec<TensorInfo>, GgufError> {
    let offset_field = |i: usize, t: &TensorInfo| format!("tensor_info[{i}] ({}).offset", t.name);
    for (i, (t, off_at)) in infos.iter().enumerate() {
        if t.offset
            .checked_add(t.size as u64)
            .is_none_or(|e| e > data_len as u64)
        {
            return Err(GgufError::malformed(
                offset_field(i, t),
                *off_at,
                format!(
                    "data [{}, +{}) runs past the end of the data section ({data_len} bytes)",
                    t.offset, t.size
                ),
            ));
        }
    }
    if let Some((a, b)) = first_overlap(
        infos
            .iter()
            .map(|(t, _)| (t.offset, t.offset + t.size as u64)),
    ) {
        let ((ta, _), (tb, at_b)) = (&infos[a], &infos[b]);
        return Err(GgufError::malformed(
            offset_field(b, tb),
            *at_b,
            format!(
                "data [{}, +{}) overlaps tensor_info[{a}] ({}) at [{}, +{})",
                tb.offset, tb.size, ta.name, ta.offset, ta.size
            ),
        ));
    }
    Ok(infos.into_iter().map(|(t, _)| t).collect())
}

/// The first pair of indices (earlier-starting first) whose `[start, end)` ranges overlap;
/// empty ranges overlap nothing. Tensor data that two tensors share would let a change to one
/// silently change the other, so readers refuse it.
pub(crate) fn first_overlap(ranges: impl Iterator<Item = (u64, u64)>) -> Option<(usize, usize)> {
    let mut order: Vec<(u64, u64, usize)> = ranges
        .enumerate()
        .filter(|(_, (s, e))| e > s)
        .map(|(i, (s, e))| (s, e, i))
        .collect();
    order.sort_unstable();
    let mut reach: Option<(u64, usize)> = None;
    for (s, e, i) in order {
        if let Some((end, j)) = reach
            && s < end
        {
            return Some((j, i));
        }
        if reach.is_none_or(|(end, _)| e > end) {
            reach = Some((e, i));
        }
    }
    None
}

impl GgufFile {
    /// Opens and memory-maps a GGUF file, then parses it.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::fsutil::open_regular(path).map_err(io)?;
        // SAFETY: the mapping is read-only and pv never writes to model files while they are
        // open; a concurrent external truncation is the documented hazard of any mmap reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(Bytes::Mapped(map))
    }

    /// Parses GGUF bytes already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(Bytes::Owned(bytes))
    }

    /// Header, metadata, tensor table, then the data section they point into: each step
    /// checks what it reads before the next one trusts it.
    fn parse(bytes: Bytes) -> Result<Self, GgufError> {
        let mut c = Cursor {
            buf: &bytes,
            pos: 0,
        };
        let (version, n_tensors, n_kv) = read_header(&mut c)?;
        let (metadata, index) = read_metadata(&mut c, n_kv)?;
        let alignment = alignment_of(&metadata, &index)?;
        let mut infos = Vec::with_capacity(n_tensors);
        let mut tensor_index = BTreeMap::new();
        for i in 0..n_tensors {
            let (info, at) = read_tensor_info(&mut c, i, alignment)?;
            if tensor_index
                .insert(info.name.clone(), infos.len())
                .is_some()
            {
                return Err(GgufError::malformed(
                    format!("tensor_info[{i}] ({}).name", info.name),
                    at.name,
                    format!("duplicate tensor name {:?}", info.name),
                ));
            }
            infos.push((info, at.offset));
        }
        let data_offset = c.pos.div_ceil(alignment) * alignment;
        let tensors = check_data_section(infos, bytes.len().saturating_sub(data_offset))?;
        Ok(GgufFile {
            bytes,
            version,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A required metadata string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| GgufError::Metadata {
            key: key.into(),
            reason: format!("expected a string, found {}", v.summary()),
        })
    }

    /// A metadata value that must be present.
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::Metadata {
            key: key.into(),
            reason: "required key is missing".into(),
        })
    }

    /// A tensor's info by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (zero-copy view into the mapping); bounds were checked at
    /// parse time.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_offset + info.offset as usize;
        &self.bytes[start..start + info.size]
    }

    /// The whole file as bytes (tensor data included).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Total size of the file in bytes.
    pub fn file_len(&self) -> usize {
        self.bytes.len()
    }
}
