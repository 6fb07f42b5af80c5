//! The fused dot-product kernels, one table per instruction set ([`Isa`]): for each weight
//! format, the kernels of each accumulation order llama.cpp has for it (vec-dot, tiled,
//! repacked). Which order a product takes is not decided here but in `quant::path`.
//!
//! SIMD kernels are `#[target_feature] unsafe fn`s; the tables hold them as `unsafe fn`
//! pointers wrapped in [`Dot`], [`Dot4`], [`Rows4`] and [`Tile`], which only
//! [`FormatKernels::of`] makes, and only for a set this CPU runs ([`Isa::is_available`]).
//! Their `call` methods are therefore the one place a kernel is invoked.

use super::cpu::Isa;
use super::format::GgmlType;
use super::panel::TilePanel;
use super::{dot_avx2 as avx2, dot_avx512 as avx512, dot_scalar as scalar, korder, lanes};

type DotPtr = unsafe fn(&[u8], &[u8]) -> f32;
type Dot4Ptr = unsafe fn(&[u8], &[&[u8]; 4]) -> [f32; 4];
type Rows4Ptr = unsafe fn(&[&[u8]; 4], &[u8]) -> [f32; 4];
type TilePtr = unsafe fn(&[&[u8]; 4], &[&[u8]], &mut [[f32; 4]], &mut TilePanel);
type Rows16Ptr = unsafe fn(&[u8], &[u8]) -> [f32; 16];

/// One weight row · one activation row (bytes of whole blocks).
#[derive(Clone, Copy, Debug)]
pub struct Dot(DotPtr);

/// One weight row · four activation rows (the weight blocks decoded once); each result
/// equals the same order's [`Dot`] bit for bit.
#[derive(Clone, Copy, Debug)]
pub struct Dot4(Dot4Ptr);

/// Four weight rows · one activation row (four chains in flight, for generation); each
/// result equals the same order's [`Dot`] bit for bit.
#[derive(Clone, Copy, Debug)]
pub struct Rows4(Rows4Ptr);

/// Sixteen weight rows interleaved on a matrix's first single-token product
/// ([`interleave16`](super::interleave::interleave16)) · one activation row, one output per lane (for generation); each result equals the same
/// order's [`Dot`] on the row in place, bit for bit.
#[derive(Clone, Copy, Debug)]
pub struct Rows16(Rows16Ptr);

/// Four weight rows · every activation row of a batch, `out[t][r] = w[r] · a[t]`, the
/// weights decoded once into the reusable panel; each result equals the same order's
/// [`Dot`] bit for bit.
#[derive(Clone, Copy, Debug)]
pub struct Tile(TilePtr);

// SAFETY (all five `call`s): a kernel value is made only inside this module's tables, and
// the tables are reached only through `FormatKernels::of`, which refuses an instruction set
// `cpu()` did not detect; so the target features the pointed-to function was compiled for
// are present. The kernels check nothing else: lengths are whole blocks by construction
// (`QMatrix` rows and `QuantizedActs` rows of the format's own row length).
impl Dot {
    /// `w · a`.
    #[inline]
    pub fn call(self, w: &[u8], a: &[u8]) -> f32 {
        // SAFETY: see above.
        unsafe { (self.0)(w, a) }
    }
}

impl Dot4 {
    /// `[w · a[0], .., w · a[3]]`.
    #[inline]
    pub fn call(self, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        // SAFETY: see above.
        unsafe { (self.0)(w, a) }
    }
}

impl Rows4 {
    /// `[w[0] · a, .., w[3] · a]`.
    #[inline]
    pub fn call(self, w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
        // SAFETY: see above.
        unsafe { (self.0)(w, a) }
    }
}

impl Rows16 {
    /// `[w's row 0 · a, .., w's row 15 · a]` for one interleaved group `w`.
    #[inline]
    pub fn call(self, w: &[u8], a: &[u8]) -> [f32; 16] {
        // SAFETY: see above.
        unsafe { (self.0)(w, a) }
    }
}

impl Tile {
    /// `out[t][r] = w[r] · a[t]` for `t < a.len()`.
    #[inline]
    pub fn call(self, w: &[&[u8]; 4], a: &[&[u8]], out: &mut [[f32; 4]], panel: &mut TilePanel) {
        // SAFETY: see above.
        unsafe { (self.0)(w, a, out, panel) }
    }
}

/// The kernels of one accumulation order: one row, and the faster shapes where the
/// instruction set has them (each equal to `one`, row by row, bit for bit).
#[derive(Clone, Copy, Debug)]
pub struct Order {
    /// One weight row · one activation row.
    pub one: Dot,
    /// One weight row · four activation rows.
    pub four: Option<Dot4>,
    /// Four weight rows · one activation row.
    pub rows4: Option<Rows4>,
    /// Sixteen interleaved weight rows · one activation row.
    pub rows16: Option<Rows16>,
    /// Four weight rows · a whole batch.
    pub tile: Option<Tile>,
}

impl Order {
    const fn one(one: DotPtr) -> Order {
        Order {
            one: Dot(one),
            four: None,
            rows4: None,
            rows16: None,
            tile: None,
        }
    }
}

/// What one instruction set has for one weight format, per llama.cpp order.
#[derive(Clone, Copy, Debug)]
pub struct FormatKernels {
    /// llama.cpp's `ggml_vec_dot_*` order (every weight format).
    pub vec: Order,
    /// Its tiled order (`ggml-cpu/tiled`), for the K-quants.
    pub tiled: Option<Order>,
    /// Its repacked order (`ggml-cpu/repack.cpp`), for the formats it repacks.
    pub repacked: Option<Order>,
}

impl FormatKernels {
    /// The kernels of `isa` for `weight`; `None` when `weight` is not a weight format or
    /// this CPU does not run `isa`.
    pub fn of(weight: GgmlType, isa: Isa) -> Option<FormatKernels> {
        if !isa.is_available() {
            return None;
        }
        match isa {
            Isa::Portable => portable(weight),
            Isa::Avx2 => avx2(weight),
            Isa::AvxVnni => avx_vnni(weight),
            Isa::Avx512Vnni => avx512_vnni(weight),
            Isa::Avx512VnniWide => avx512_vnni_wide(weight),
        }
    }
}

/// The portable table: plain Rust, the reference of every order.
fn portable(weight: GgmlType) -> Option<FormatKernels> {
    use GgmlType::*;
    use portable_orders as p;
    let vec = Order::one(match weight {
        Q4_0 => scalar::dot_q4_0_q8_0,
        Q4_1 => scalar::dot_q4_1_q8_1,
        Q5_0 => scalar::dot_q5_0_q8_0,
        Q5_1 => scalar::dot_q5_1_q8_1,
        Q8_0 => scalar::dot_q8_0_q8_0,
        Q2_K => p::vec_q2_k,
        Q3_K => p::vec_q3_k,
        Q4_K => p::vec_q4_k,
        Q5_K => p::vec_q5_k,
        Q6_K => p::vec_q6_k,
        F32 => scalar::dot_f32_f32,
        F16 => scalar::dot_f16_f32,
        BF16 => scalar::dot_bf16_f32,
        Q8_1 | Q8_K => return None,
    });
    let tiled = match weight {
        Q2_K => Some(Order::one(p::tiled_q2_k)),
        Q3_K => Some(Order::one(p::tiled_q3_k)),
        Q4_K => Some(Order::one(p::tiled_q4_k)),
        Q5_K => Some(Order::one(p::tiled_q5_k)),
        Q6_K => Some(Order::one(p::tiled_q6_k)),
        _ => None,
    };
    let repacked = match weight {
        Q4_0 => Some(Order::one(p::repacked_q4_0)),
        Q4_K => Some(Order {
            four: Some(Dot4(p::gemm4_q4_k)),
            ..Order::one(p::gemv_q4_k)
        }),
        Q2_K => Some(Order {
            four: Some(Dot4(p::gemm4_q2_k)),
            ..Order::one(p::gemv_q2_k)
        }),
        _ => None,
    };
    Some(FormatKernels {
        vec,
        tiled,
        repacked,
    })
}

/// The AVX2 table (FMA and F16C too): every order, one row and four at once, the tiles of
/// the 32-value formats and of repacked Q4_0, and repacked Q4_0's sixteen-row generation
/// kernel.
fn avx2(weight: GgmlType) -> Option<FormatKernels> {
    use GgmlType::*;
    let legacy = |one: DotPtr, four: Dot4Ptr, rows4: Rows4Ptr, tile: TilePtr| Order {
        one: Dot(one),
        four: Some(Dot4(four)),
        rows4: Some(Rows4(rows4)),
        rows16: None,
        tile: Some(Tile(tile)),
    };
    let vec = match weight {
        Q4_0 => legacy(
            avx2::dot_q4_0_q8_0,
            avx2::dot4_q4_0_q8_0,
            avx2::dot_rows4_q4_0_q8_0,
            avx2::tile_q4_0,
        ),
        Q4_1 => legacy(
            avx2::dot_q4_1_q8_1,
            avx2::dot4_q4_1_q8_1,
            avx2::dot_rows4_q4_1_q8_1,
            avx2::tile_q4_1,
        ),
        Q5_0 => legacy(
            avx2::dot_q5_0_q8_0,
            avx2::dot4_q5_0_q8_0,
            avx2::dot_rows4_q5_0_q8_0,
            avx2::tile_q5_0,
        ),
        Q5_1 => legacy(
            avx2::dot_q5_1_q8_1,
            avx2::dot4_q5_1_q8_1,
            avx2::dot_rows4_q5_1_q8_1,
            avx2::tile_q5_1,
        ),
        Q8_0 => legacy(
            avx2::dot_q8_0_q8_0,
            avx2::dot4_q8_0_q8_0,
            avx2::dot_rows4_q8_0_q8_0,
            avx2::tile_q8_0,
        ),
        Q2_K => Order::one(avx2::dot_q2_k_q8_k),
        Q3_K => Order::one(avx2::dot_q3_k_q8_k),
        Q4_K => Order::one(avx2::dot_q4_k_q8_k),
        Q5_K => Order::one(avx2::dot_q5_k_q8_k),
        Q6_K => Order::one(avx2::dot_q6_k_q8_k),
        F32 => Order::one(avx2::dot_f32_f32),
        F16 => Order::one(avx2::dot_f16_f32),
        BF16 => Order::one(scalar::dot_bf16_f32),
        Q8_1 | Q8_K => return None,
    };
    let tiled = |one: DotPtr, four: Dot4Ptr| Order {
        four: Some(Dot4(four)),
        ..Order::one(one)
    };
    let tiled = match weight {
        Q2_K => Some(tiled(avx2::tiled_q2_k, avx2::tiled4_q2_k)),
        Q3_K => Some(tiled(avx2::tiled_q3_k, avx2::tiled4_q3_k)),
        Q4_K => Some(tiled(avx2::tiled_q4_k, avx2::tiled4_q4_k)),
        Q5_K => Some(tiled(avx2::tiled_q5_k, avx2::tiled4_q5_k)),
        Q6_K => Some(tiled(avx2::tiled_q6_k, avx2::tiled4_q6_k)),
        _ => None,
    };
    let repacked = |one: DotPtr, four: Dot4Ptr, rows4: Rows4Ptr| Order {
        one: Dot(one),
        four: Some(Dot4(four)),
        rows4: Some(Rows4(rows4)),
        rows16: None,
        tile: None,
    };
    let repacked = match weight {
        Q4_0 => Some(Order {
            rows16: Some(Rows16(avx2::rows16_q4_0)),
            tile: Some(Tile(avx2::tile_repacked_q4_0)),
            ..repacked(
                avx2::repacked_q4_0,
                avx2::repacked4_q4_0,
                avx2::repacked_rows4_q4_0,
            )
        }),
        Q4_K => Some(repacked(
            avx2::gemv_q4_k,
            avx2::gemm4_q4_k,
            avx2::gemv_rows4_q4_k,
        )),
        Q2_K => Some(repacked(
            avx2::gemv_q2_k,
            avx2::gemm4_q2_k,
            avx2::gemv_rows4_q2_k,
        )),
        _ => None,
    };
    Some(FormatKernels {
        vec,
        tiled,
        repacked,
    })
}

/// The AVX-VNNI table: AVX2's, with `vpdpbusd` tiles and four-row kernels for the 32-value
/// formats.
fn avx_vnni(weight: GgmlType) -> Option<FormatKernels> {
    use GgmlType::*;
    let mut k = avx2(weight)?;
    let (rows4, tile): (Rows4Ptr, TilePtr) = match weight {
        Q4_0 => (avx2::rows4_q4_0_avxvnni, avx2::tile_q4_0_avxvnni),
        Q4_1 => (avx2::rows4_q4_1_avxvnni, avx2::tile_q4_1_avxvnni),
        Q5_0 => (avx2::rows4_q5_0_avxvnni, avx2::tile_q5_0_avxvnni),
        Q5_1 => (avx2::rows4_q5_1_avxvnni, avx2::tile_q5_1_avxvnni),
        Q8_0 => (avx2::rows4_q8_0_avxvnni, avx2::tile_q8_0_avxvnni),
        _ => return Some(k),
    };
    k.vec.rows4 = Some(Rows4(rows4));
    k.vec.tile = Some(Tile(tile));
    Some(k)
}

/// The AVX-512 VNNI table: AVX2's, with 512-bit tiles (two weight rows per register) and
/// four-row kernels for the 32-value formats, the repacked Q4_0, Q4_K and Q2_K tiles, the
/// tiled-order Q3_K and Q6_K tiles, and the sixteen-row generation kernels of repacked Q4_0
/// and Q8_0.
fn avx512_vnni(weight: GgmlType) -> Option<FormatKernels> {
    use GgmlType::*;
    let mut k = avx2(weight)?;
    let legacy: Option<(Rows4Ptr, TilePtr)> = match weight {
        Q4_0 => Some((avx512::rows4_q4_0_zmm, avx512::tile_q4_0_zmm)),
        Q4_1 => Some((avx512::rows4_q4_1_zmm, avx512::tile_q4_1_zmm)),
        Q5_0 => Some((avx512::rows4_q5_0_zmm, avx512::tile_q5_0_zmm)),
        Q5_1 => Some((avx512::rows4_q5_1_zmm, avx512::tile_q5_1_zmm)),
        Q8_0 => Some((avx512::rows4_q8_0_zmm, avx512::tile_q8_0_zmm)),
        _ => None,
    };
    if let Some((rows4, tile)) = legacy {
        k.vec.rows4 = Some(Rows4(rows4));
        k.vec.tile = Some(Tile(tile));
    }
    if weight == Q8_0 {
        k.vec.rows16 = Some(Rows16(avx512::rows16_q8_0_zmm));
    }
    let repacked_tile: Option<TilePtr> = match weight {
        Q4_0 => Some(avx512::tile_repacked_q4_0_zmm),
        Q4_K => Some(lanes::tile_repacked_q4_k_zmm),
        Q2_K => Some(lanes::tile_repacked_q2_k_zmm),
        _ => None,
    };
    if let (Some(r), Some(t)) = (k.repacked.as_mut(), repacked_tile) {
        r.tile = Some(Tile(t));
    }
    if let (Q4_0, Some(r)) = (weight, k.repacked.as_mut()) {
        r.rows4 = Some(Rows4(avx512::repacked_rows4_q4_0_zmm));
        r.rows16 = Some(Rows16(avx512::rows16_q4_0_zmm));
    }
    let tiled_tile: Option<TilePtr> = match weight {
        Q3_K => Some(lanes::tile_q3_k_zmm),
        Q6_K => Some(lanes::tile_q6_k_zmm),
        _ => None,
    };
    if let (Some(t), Some(tile)) = (k.tiled.as_mut(), tiled_tile) {
        t.tile = Some(Tile(tile));
    }
    Some(k)
}

/// The AVX-512 VNNI table for cores that run 512-bit operations at full width: the same,
/// with the 32-value formats' tiles two rows per 512-bit register (one `vpdpbusd`,
/// conversion, scale product and FMA for two outputs), which there beat one output per
/// 256-bit register (`cargo bench --bench kernels -- tile`).
fn avx512_vnni_wide(weight: GgmlType) -> Option<FormatKernels> {
    use GgmlType::*;
    let mut k = avx512_vnni(weight)?;
    let tile: TilePtr = match weight {
        Q4_0 => avx512::tile_q4_0_pairs,
        Q4_1 => avx512::tile_q4_1_pairs,
        Q5_0 => avx512::tile_q5_0_pairs,
        Q5_1 => avx512::tile_q5_1_pairs,
        Q8_0 => avx512::tile_q8_0_pairs,
        _ => return Some(k),
    };
    k.vec.tile = Some(Tile(tile));
    Some(k)
}

/// The portable K-quant kernels of each llama.cpp order, as plain functions of the
/// kernel signatures.
mod portable_orders {
    use super::korder;
    use crate::quant::format::GgmlType::*;

    macro_rules! orders {
        ($($name:ident => $f:ident($($arg:expr),*);)*) => {
            $(pub fn $name(w: &[u8], a: &[u8]) -> f32 { korder::$f($($arg,)* w, a) })*
        };
    }
    orders! {
        vec_q2_k => vec_dot(Q2_K);
        vec_q3_k => vec_dot(Q3_K);
        vec_q4_k => vec_dot(Q4_K);
        vec_q5_k => vec_dot(Q5_K);
        vec_q6_k => vec_dot(Q6_K);
        tiled_q2_k => tiled(Q2_K);
        tiled_q3_k => tiled(Q3_K);
        tiled_q4_k => tiled(Q4_K);
        tiled_q5_k => tiled(Q5_K);
        tiled_q6_k => tiled(Q6_K);
        gemv_q4_k => repacked(Q4_K, 256);
        gemm_q4_k => repacked(Q4_K, 64);
        gemv_q2_k => repacked(Q2_K, 256);
        gemm_q2_k => repacked(Q2_K, 128);
    }

    pub fn repacked_q4_0(w: &[u8], a: &[u8]) -> f32 {
        korder::repacked_q4_0(w, a)
    }

    pub fn gemm4_q4_k(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        a.map(|a| gemm_q4_k(w, a))
    }

    pub fn gemm4_q2_k(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        a.map(|a| gemm_q2_k(w, a))
    }
}
