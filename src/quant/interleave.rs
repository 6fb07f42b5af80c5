//! Weight matrices interleaved sixteen rows at a time, laid out once (on a matrix's first
//! single-token product, `model::weights::QMatrix::interleaved`), for the single-token
//! kernels that give each output its own lane (`Rows16`), as llama.cpp's repacked gemv does
//! with the copies it makes at load time.
//!
//! Reading rows in place, a kernel must gather each row's block into the lanes it owns on
//! every token (pv's four-row kernels spend more instructions on that than on the
//! products); laid out once, a group's block is four aligned-size loads away from its
//! sixteen outputs. The copy holds the same bytes as the file, rearranged: generation reads
//! it instead of the mapped rows, so it costs memory, not bandwidth.
//!
//! **Q4_0, sixteen rows** ([`Q4_0X16_BYTES`] per block of the group): the rows' sixteen f16
//! scales (row `r` at bytes `2r..2r + 2`), then four 64-byte steps, step `g` holding dword
//! `g` of each row's 16 packed bytes (row `r` at bytes `4r..4r + 4`: the low nibbles are
//! quants `4g..4g + 4`, the high nibbles quants `16 + 4g..16 + 4g + 4`).
//!
//! **Q8_0, sixteen rows** ([`Q8_0X16_BYTES`] per block): the sixteen f16 scales, then each
//! row's 32 quants in turn, offset by 128 (`q ^ 0x80`, unsigned, as `vpdpbusd` multiplies
//! them; the offset comes off through the activations' sums).

use std::sync::Arc;

use super::format::GgmlType;

/// Rows per interleaved group.
pub const GROUP_ROWS: usize = 16;

/// Bytes of one block of a Q4_0 group: sixteen scales and four steps of sixteen dwords.
pub const Q4_0X16_BYTES: usize = 2 * GROUP_ROWS + 4 * 4 * GROUP_ROWS;

/// A matrix's interleaved copy, shared by the clones of its matrix (a tied output head is a
/// clone of the embedding). `Debug` shows its size, not its bytes.
#[derive(Clone)]
pub struct Interleaved {
    bytes: Arc<[u8]>,
    group_bytes: usize,
}

impl Interleaved {
    /// The layout of `rows` ([`interleave16`]), `None` where there is none.
    pub fn new(ty: GgmlType, rows: &[&[u8]]) -> Option<Interleaved> {
        let bytes: Arc<[u8]> = interleave16(ty, rows)?.into();
        let group_bytes = bytes.len() / (rows.len() / GROUP_ROWS);
        Some(Interleaved { bytes, group_bytes })
    }

    /// The bytes of the group holding rows `16 g .. 16 g + 16`.
    #[inline]
    pub fn group(&self, g: usize) -> &[u8] {
        &self.bytes[g * self.group_bytes..(g + 1) * self.group_bytes]
    }
}

impl std::fmt::Debug for Interleaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interleaved({} bytes)", self.bytes.len())
    }
}

/// Bytes of one block of a Q8_0 group: sixteen scales and sixteen rows of 32 quants.
pub const Q8_0X16_BYTES: usize = 2 * GROUP_ROWS + 32 * GROUP_ROWS;

/// The interleaved layout of `rows` (each a whole row of `ty`), groups one after another:
/// `None` when `ty` has no interleaved layout or the row count is not a multiple of
/// [`GROUP_ROWS`] or the rows differ in length.
pub fn interleave16(ty: GgmlType, rows: &[&[u8]]) -> Option<Vec<u8>> {
    let wb = ty.block_bytes();
    let row_bytes = rows.first()?.len();
    let group_block = match ty {
        GgmlType::Q4_0 => Q4_0X16_BYTES,
        GgmlType::Q8_0 => Q8_0X16_BYTES,
        _ => return None,
    };
    if !rows.len().is_multiple_of(GROUP_ROWS)
        || !row_bytes.is_multiple_of(wb)
        || rows.iter().any(|r| r.len() != row_bytes)
    {
        return None;
    }
    let nb = row_bytes / wb;
    // Sized once and filled in place: a model's output head is hundreds of megabytes.
    let mut out = vec![0u8; rows.len() / GROUP_ROWS * nb * group_block];
    let blocks = out.chunks_exact_mut(group_block);
    let sources = rows
        .chunks_exact(GROUP_ROWS)
        .flat_map(|group| (0..nb).map(move |b| (group, b)));
    for (dst, (group, b)) in blocks.zip(sources) {
        let block = |r: usize| &group[r][wb * b..wb * (b + 1)];
        let (scales, quants) = dst.split_at_mut(2 * GROUP_ROWS);
        for (r, d) in scales.chunks_exact_mut(2).enumerate() {
            d.copy_from_slice(&block(r)[..2]);
        }
        if ty == GgmlType::Q4_0 {
            for (i, d) in quants.chunks_exact_mut(4).enumerate() {
                let (g, r) = (i / GROUP_ROWS, i % GROUP_ROWS);
                d.copy_from_slice(&block(r)[2 + 4 * g..6 + 4 * g]);
            }
        } else {
            for (r, d) in quants.chunks_exact_mut(32).enumerate() {
                for (q, &x) in d.iter_mut().zip(&block(r)[2..]) {
                    *q = x ^ 0x80;
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_groups_put_each_rows_dwords_in_its_own_lane() {
        const WB: usize = GgmlType::Q4_0.block_bytes();
        // Byte `i` of row `r`'s block `b` is `r * 64 + b * 18 + i` (mod 256): every byte
        // says where it came from.
        let rows: Vec<Vec<u8>> = (0..32)
            .map(|r| (0..2 * WB).map(|i| (r * 64 + i) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = rows.iter().map(|r| &r[..]).collect();
        let il = interleave16(GgmlType::Q4_0, &refs).unwrap();
        assert_eq!(il.len(), 2 * 2 * Q4_0X16_BYTES);
        for (group, b, r) in
            (0..2).flat_map(|gr| (0..2).flat_map(move |b| (0..16).map(move |r| (gr, b, r))))
        {
            let block = &il[(group * 2 + b) * Q4_0X16_BYTES..][..Q4_0X16_BYTES];
            let src = &rows[16 * group + r][WB * b..WB * (b + 1)];
            assert_eq!(&block[2 * r..2 * r + 2], &src[..2]);
            for g in 0..4 {
                assert_eq!(
                    &block[32 + 64 * g + 4 * r..][..4],
                    &src[2 + 4 * g..6 + 4 * g]
                );
            }
        }
        assert!(interleave16(GgmlType::Q4_0, &refs[..8]).is_none());
        assert!(interleave16(GgmlType::Q5_0, &refs[..16]).is_none());
    }

    #[test]
    fn q8_0_groups_keep_each_rows_quants_together_offset_by_128() {
        const WB: usize = GgmlType::Q8_0.block_bytes();
        let rows: Vec<Vec<u8>> = (0..16)
            .map(|r| (0..3 * WB).map(|i| (r * 7 + i) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = rows.iter().map(|r| &r[..]).collect();
        let il = interleave16(GgmlType::Q8_0, &refs).unwrap();
        assert_eq!(il.len(), 3 * Q8_0X16_BYTES);
        for (b, r) in (0..3).flat_map(|b| (0..16).map(move |r| (b, r))) {
            let block = &il[b * Q8_0X16_BYTES..][..Q8_0X16_BYTES];
            let src = &rows[r][WB * b..WB * (b + 1)];
            assert_eq!(&block[2 * r..2 * r + 2], &src[..2]);
            let q: Vec<u8> = src[2..].iter().map(|&v| v ^ 0x80).collect();
            assert_eq!(&block[32 + 32 * r..][..32], &q[..]);
        }
    }
}
