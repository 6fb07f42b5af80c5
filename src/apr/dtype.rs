//! Element types of APR tensors, and the byte each dialect stores for them.
//!
//! aprender's table (`apr-format` `TensorDType`) keeps the GGML ids for the types both
//! formats share (F32 0, F16 1, Q4_K 12, Q6_K 14, BF16 30), gives ids 3..7 to plain
//! numbers GGML has no use for (F64, I32, I64, I8, U8), and puts its own block formats at
//! 128 and up (APR_Q4, APR_Q8; 8 and 9 before aprender's GH-438, still read as those).
//! pv's first dialect stored every type under its GGML id, so 3 meant Q4_1 there and F64
//! here: the dialect, told by the metadata, decides how an id is read.

use crate::quant::GgmlType;

/// The element type of an APR tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// A GGML type: the plain floats F32, F16 and BF16, or a GGML block format (aprender
    /// files hold Q4_K and Q6_K; pv's first dialect any of them).
    Ggml(GgmlType),
    /// 64-bit float.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// aprender's 4-bit format: blocks of 32 values over the flattened tensor (a block may
    /// straddle two rows), each an f16 scale then 16 bytes of nibbles (value `i` in the low
    /// nibble of byte `i / 2` when `i` is even, the high one when odd), `value = (nibble -
    /// 8) * scale`. 18 bytes per block, the last block zero-padded.
    AprQ4,
    /// aprender's 8-bit format: one f32 scale for the whole tensor, then one `i8` per value,
    /// `value = q * scale`. `4 + n` bytes (none at all for an empty tensor).
    AprQ8,
}

/// One row of aprender's type table: the id it writes, the type, and the name aprender
/// prints.
struct Row {
    id: u8,
    dtype: DType,
    name: &'static str,
}

const fn row(id: u8, dtype: DType, name: &'static str) -> Row {
    Row { id, dtype, name }
}

/// aprender's ids, as `apr-format` 0.72.3 writes them (`TensorDType`).
const APRENDER: [Row; 12] = [
    row(0, DType::Ggml(GgmlType::F32), "F32"),
    row(1, DType::Ggml(GgmlType::F16), "F16"),
    row(3, DType::F64, "F64"),
    row(4, DType::I32, "I32"),
    row(5, DType::I64, "I64"),
    row(6, DType::I8, "I8"),
    row(7, DType::U8, "U8"),
    row(12, DType::Ggml(GgmlType::Q4_K), "Q4_K"),
    row(14, DType::Ggml(GgmlType::Q6_K), "Q6_K"),
    row(30, DType::Ggml(GgmlType::BF16), "BF16"),
    row(128, DType::AprQ4, "APR_Q4"),
    row(129, DType::AprQ8, "APR_Q8"),
];

/// Ids aprender reads but no longer writes: its block formats before GH-438 moved them
/// out of GGML's range.
const APRENDER_LEGACY: [(u8, DType); 2] = [(8, DType::AprQ4), (9, DType::AprQ8)];

/// How a file numbers its element types: told apart by its metadata
/// ([`Dialect::of`](super::Dialect::of)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// aprender's (`apr import`, `apr-format`'s `AprV2Writer`): flat typed metadata,
    /// aprender's type ids. What pv writes.
    Aprender,
    /// pv's first dialect: nested `hyperparameters` and `tokenizer` metadata, every type
    /// under its GGML id. Read for old files; never written.
    Pv,
}

impl DType {
    /// Every type aprender's table names, in id order.
    pub fn aprender_types() -> impl Iterator<Item = DType> {
        APRENDER.iter().map(|r| r.dtype)
    }

    /// The type stored as `id` in a file of `dialect`.
    pub fn from_id(id: u8, dialect: Dialect) -> Option<DType> {
        match dialect {
            Dialect::Aprender => APRENDER
                .iter()
                .map(|r| (r.id, r.dtype))
                .chain(APRENDER_LEGACY)
                .find(|&(i, _)| i == id)
                .map(|(_, t)| t),
            Dialect::Pv => GgmlType::from_id(id as u32).map(DType::Ggml),
        }
    }

    /// The id aprender writes for this type, or `None` for a GGML type aprender does not
    /// hold (Q4_0, Q8_0, ... : a file that stored one could only be misread).
    pub fn aprender_id(self) -> Option<u8> {
        APRENDER.iter().find(|r| r.dtype == self).map(|r| r.id)
    }

    /// The name aprender (or, for the types only GGML has, ggml) prints.
    pub fn name(self) -> &'static str {
        match APRENDER.iter().find(|r| r.dtype == self) {
            Some(r) => r.name,
            None => match self {
                DType::Ggml(t) => t.name(),
                _ => unreachable!("every non-GGML type has a row"),
            },
        }
    }

    /// Bytes of one value of a plain element type (`None` for block formats).
    pub fn element_bytes(self) -> Option<usize> {
        match self {
            DType::Ggml(t) if t.block_size() == 1 => Some(t.block_bytes()),
            DType::Ggml(_) | DType::AprQ4 | DType::AprQ8 => None,
            DType::F64 | DType::I64 => Some(8),
            DType::I32 => Some(4),
            DType::I8 | DType::U8 => Some(1),
        }
    }

    /// The size a tensor of this type and these dims must have in a file of `dialect`, or
    /// `None` when it cannot be stored (a GGML block format whose rows are not whole blocks,
    /// or a size that overflows). aprender pads each row of a K-quant matrix to whole
    /// super-blocks (its `quantize_q4_k_matrix`), which its readers undo; pv's first dialect
    /// held whole blocks only.
    pub fn tensor_bytes(self, dims: &[u64], dialect: Dialect) -> Option<usize> {
        let n = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())?;
        match self {
            DType::Ggml(t) if t.block_size() > 1 => {
                let cols = usize::try_from(*dims.last()?).ok()?;
                let rows = n.checked_div(cols).unwrap_or(0);
                let blocks = match dialect {
                    Dialect::Aprender => cols.div_ceil(t.block_size()),
                    Dialect::Pv if cols.is_multiple_of(t.block_size()) => cols / t.block_size(),
                    Dialect::Pv => return None,
                };
                rows.checked_mul(blocks)?.checked_mul(t.block_bytes())
            }
            DType::AprQ4 => n.div_ceil(32).checked_mul(18),
            DType::AprQ8 if n == 0 => Some(0),
            DType::AprQ8 => n.checked_add(4),
            _ => n.checked_mul(self.element_bytes()?),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_in_aprenders_table_and_ggml_types_outside_it_have_none() {
        for t in DType::aprender_types() {
            let id = t.aprender_id().unwrap();
            assert_eq!(DType::from_id(id, Dialect::Aprender), Some(t));
        }
        for t in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q5_K,
        ] {
            assert_eq!(DType::Ggml(t).aprender_id(), None);
        }
        // The same byte, two dialects.
        assert_eq!(DType::from_id(3, Dialect::Aprender), Some(DType::F64));
        assert_eq!(
            DType::from_id(3, Dialect::Pv),
            Some(DType::Ggml(GgmlType::Q4_1))
        );
        assert_eq!(DType::from_id(8, Dialect::Aprender), Some(DType::AprQ4));
        assert_eq!(DType::from_id(9, Dialect::Aprender), Some(DType::AprQ8));
        assert_eq!(DType::from_id(2, Dialect::Aprender), None);
        assert_eq!(DType::from_id(128, Dialect::Pv), None);
    }

    #[test]
    fn sizes_follow_each_layout() {
        let q4k = DType::Ggml(GgmlType::Q4_K);
        assert_eq!(q4k.tensor_bytes(&[2, 512], Dialect::Aprender), Some(576));
        // aprender pads each row to whole super-blocks; pv's first dialect did not.
        assert_eq!(q4k.tensor_bytes(&[2, 300], Dialect::Aprender), Some(576));
        assert_eq!(q4k.tensor_bytes(&[2, 300], Dialect::Pv), None);
        assert_eq!(
            DType::AprQ4.tensor_bytes(&[3, 11], Dialect::Aprender),
            Some(36)
        );
        assert_eq!(
            DType::AprQ8.tensor_bytes(&[3, 11], Dialect::Aprender),
            Some(37)
        );
        assert_eq!(
            DType::AprQ8.tensor_bytes(&[0, 11], Dialect::Aprender),
            Some(0)
        );
        assert_eq!(DType::F64.tensor_bytes(&[5], Dialect::Aprender), Some(40));
        assert_eq!(DType::I8.tensor_bytes(&[], Dialect::Aprender), Some(1));
        assert_eq!(
            DType::F64.tensor_bytes(&[u64::MAX, 2], Dialect::Aprender),
            None
        );
    }
}
