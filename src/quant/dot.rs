//! Choosing the fused dot product for a weight format: the activation format it pairs with
//! (as llama.cpp pairs them) and the fastest kernel this CPU runs.

use crate::gguf::GgmlType;

use super::{dot_avx2 as avx2, dot_avx512 as avx512, dot_scalar as scalar};

/// A fused dot product over whole blocks: weight row bytes, activation row bytes.
pub type DotFn = fn(&[u8], &[u8]) -> f32;

/// A fused dot product of one weight row with four activation rows at once (the weight
/// blocks decoded once); each result equals the single-row [`DotFn`]'s bit for bit.
pub type Dot4Fn = fn(&[u8], &[&[u8]; 4]) -> [f32; 4];

/// Four weight rows against one activation row (independent chains in flight, for
/// single-token generation); each result equals the single-row [`DotFn`]'s bit for bit.
pub type DotRows4Fn = fn(&[&[u8]; 4], &[u8]) -> [f32; 4];

/// Four weight rows against every activation row of a batch: `out[t][r] = w[r] · a[t]`
/// for `t < a.len()`, the weights decoded once into the reusable `panel`; each result equals
/// the single-row [`DotFn`]'s bit for bit.
pub type DotTileFn = fn(&[&[u8]; 4], &[&[u8]], &mut [[f32; 4]], &mut TilePanel);

/// Reusable room for a [`DotTileFn`]'s decoded weight blocks, and the block scales of the
/// batch of activations it serves, converted to f32 by the first tile call and reused by
/// the next ones (one panel per worker and batch).
#[derive(Default)]
pub struct TilePanel {
    /// The 32-value formats' blocks.
    pub(super) legacy: Vec<avx2::PanelBlock>,
    /// Repacked Q4_K blocks, four rows per block.
    pub(super) kquant: Vec<avx512::KPanelBlock>,
    /// Each Q4_K block's `d` and `dmin`.
    pub(super) kscales: Vec<[f32; 2]>,
    /// The activations' block scales (`d`, and `s` where the format has it), token-major.
    pub(super) act_scales: Vec<[f32; 2]>,
    /// Which batch `act_scales` belongs to: its first row's address and its shape.
    pub(super) act_key: (usize, usize, usize),
}

/// Which llama.cpp CPU build's arithmetic to reproduce: its element-wise functions and
/// reductions, and which matrices it repacks (Q2_K only with AVX-512).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// An AVX-512 build (16-lane reductions, AVX-512 `exp`): the machine kind the shared
    /// llama.cpp reference figures come from.
    #[default]
    Avx512,
    /// An AVX2 build (8-lane reductions, AVX2 `exp`).
    Avx2,
}

impl Flavor {
    /// Every flavour, in [`Flavor::index`] order.
    pub const ALL: [Flavor; 2] = [Flavor::Avx512, Flavor::Avx2];

    /// Position in [`Flavor::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Flavor::Avx512 => 0,
            Flavor::Avx2 => 1,
        }
    }

    /// SIMD lanes of the reductions this build performs.
    pub const fn lanes(self) -> usize {
        match self {
            Flavor::Avx512 => 16,
            Flavor::Avx2 => 8,
        }
    }
}

/// Which implementation of the fused kernels to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2 + FMA (+ F16C).
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU supports (checked once per call; cheap).
    pub fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            return Kernel::Avx2;
        }
        Kernel::Scalar
    }

    /// Every kernel this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::Scalar];
        if Kernel::best() == Kernel::Avx2 {
            v.push(Kernel::Avx2);
        }
        v
    }

    /// Lower-case name, as benchmarks print it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
        }
    }
}

/// The activation format a weight format's fused dot product consumes.
pub fn vec_dot_type(weight: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    Some(match weight {
        Q4_0 | Q5_0 | Q8_0 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Q8_K,
        F32 | F16 | BF16 => F32,
        Q8_1 | Q8_K => return None,
    })
}

macro_rules! avx2_wrappers {
    ($($name:ident),*) => {
        /// Safe entry points to the AVX2 kernels; handed out by [`dot_fn`] only when
        /// [`Kernel::best`] detected AVX2, FMA and F16C.
        mod avx2_safe {
            $(
                pub fn $name(w: &[u8], a: &[u8]) -> f32 {
                    // SAFETY: only reachable through `dot_fn(_, Kernel::Avx2)`, which callers
                    // obtain from `Kernel::best()`/`available()` after runtime detection.
                    unsafe { super::avx2::$name(w, a) }
                }
            )*
        }
    };
}
avx2_wrappers!(
    dot_q4_0_q8_0,
    dot_q4_1_q8_1,
    dot_q5_0_q8_0,
    dot_q5_1_q8_1,
    dot_q8_0_q8_0,
    dot_q2_k_q8_k,
    dot_q3_k_q8_k,
    dot_q4_k_q8_k,
    dot_q5_k_q8_k,
    dot_q6_k_q8_k,
    dot_f32_f32,
    dot_f16_f32,
    tiled_q2_k,
    tiled_q3_k,
    tiled_q4_k,
    tiled_q5_k,
    tiled_q6_k,
    gemv_q4_k,
    gemv_q2_k,
    repacked_q4_0
);

macro_rules! avx2_wrappers4 {
    ($($name:ident),*) => {
        /// Safe entry points to the AVX2 four-activation-row kernels (see [`avx2_safe`]).
        mod avx2_safe4 {
            $(
                pub fn $name(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
                    // SAFETY: only reachable through `matrix_kernels(_, _, Kernel::Avx2, _)`,
                    // which hands them out after runtime detection of AVX2, FMA and F16C.
                    unsafe { super::avx2::$name(w, a) }
                }
            )*
        }
    };
}

macro_rules! avx2_wrappers_rows4 {
    ($($name:ident),*) => {
        /// Safe entry points to the AVX2 four-weight-row kernels (see [`avx2_safe`]).
        mod avx2_safe_rows4 {
            $(
                pub fn $name(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
                    // SAFETY: only reachable through `dot_rows4_fn`/`matrix_kernels` with
                    // `Kernel::Avx2`, handed out after runtime detection of AVX2, FMA, F16C.
                    unsafe { super::avx2::$name(w, a) }
                }
            )*
        }
    };
}
avx2_wrappers_rows4!(gemv_rows4_q4_k, gemv_rows4_q2_k, repacked_rows4_q4_0);
avx2_wrappers4!(
    tiled4_q2_k,
    tiled4_q3_k,
    tiled4_q4_k,
    tiled4_q5_k,
    tiled4_q6_k,
    gemm4_q4_k,
    gemm4_q2_k,
    dot4_q4_0_q8_0,
    dot4_q4_1_q8_1,
    dot4_q5_0_q8_0,
    dot4_q5_1_q8_1,
    dot4_q8_0_q8_0,
    repacked4_q4_0
);

macro_rules! isa_wrappers {
    ($($isa:ident $module:ident { $($ty:ident => $t:ident, $r:ident;)* })*) => {
        /// Safe entry points to the 32-value formats' tile and four-row kernels, one list
        /// per instruction set.
        mod isa_safe {
            $($(
                pub fn $t(
                    w: &[&[u8]; 4],
                    a: &[&[u8]],
                    out: &mut [[f32; 4]],
                    panel: &mut super::TilePanel,
                ) {
                    // SAFETY: only reachable through `tile_kernel`, called with an
                    // instruction set from `TileIsa::available` (runtime detection).
                    unsafe { super::$module::$t(w, a, out, panel) }
                }

                pub fn $r(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
                    // SAFETY: as above, through `rows4_kernel`.
                    unsafe { super::$module::$r(w, a) }
                }
            )*)*
        }

        /// The tile kernel for `weight` in instruction set `isa`, if the format has one.
        fn tile_kernel(weight: GgmlType, isa: TileIsa) -> Option<DotTileFn> {
            use GgmlType::*;
            Some(match (isa, weight) {
                $($((TileIsa::$isa, $ty) => isa_safe::$t as DotTileFn,)*)*
                _ => return None,
            })
        }

        /// The four-weight-row kernel for `weight` in instruction set `isa`.
        fn rows4_kernel(weight: GgmlType, isa: TileIsa) -> Option<DotRows4Fn> {
            use GgmlType::*;
            Some(match (isa, weight) {
                $($((TileIsa::$isa, $ty) => isa_safe::$r as DotRows4Fn,)*)*
                _ => return None,
            })
        }
    };
}
isa_wrappers! {
    Avx2 avx2 {
        Q4_0 => tile_q4_0, dot_rows4_q4_0_q8_0;
        Q5_0 => tile_q5_0, dot_rows4_q5_0_q8_0;
        Q5_1 => tile_q5_1, dot_rows4_q5_1_q8_1;
        Q8_0 => tile_q8_0, dot_rows4_q8_0_q8_0;
        Q4_1 => tile_q4_1, dot_rows4_q4_1_q8_1;
    }
    Avx512Vnni avx512 {
        Q4_0 => tile_q4_0_zmm, rows4_q4_0_zmm;
        Q5_0 => tile_q5_0_zmm, rows4_q5_0_zmm;
        Q5_1 => tile_q5_1_zmm, rows4_q5_1_zmm;
        Q8_0 => tile_q8_0_zmm, rows4_q8_0_zmm;
        Q4_1 => tile_q4_1_zmm, rows4_q4_1_zmm;
    }
    AvxVnni avx2 {
        Q4_0 => tile_q4_0_avxvnni, rows4_q4_0_avxvnni;
        Q5_0 => tile_q5_0_avxvnni, rows4_q5_0_avxvnni;
        Q5_1 => tile_q5_1_avxvnni, rows4_q5_1_avxvnni;
        Q8_0 => tile_q8_0_avxvnni, rows4_q8_0_avxvnni;
        Q4_1 => tile_q4_1_avxvnni, rows4_q4_1_avxvnni;
    }
}

/// The repacked Q4_K tile (gemm order for whole groups of four tokens, gemv order after).
fn tile_q4_k_repacked(w: &[&[u8]; 4], a: &[&[u8]], out: &mut [[f32; 4]], panel: &mut TilePanel) {
    // SAFETY: handed out by `matrix_kernels` only when `TileIsa::Avx512Vnni` is available
    // (runtime detection of AVX-512 F, BW and VNNI).
    unsafe { avx512::tile_q4_k_zmm(w, a, out, &mut panel.kquant, &mut panel.kscales) }
}

/// The repacked Q4_0 tile (one FMA per block by `dx * dy`, every batch size).
fn tile_q4_0_repacked(w: &[&[u8]; 4], a: &[&[u8]], out: &mut [[f32; 4]], panel: &mut TilePanel) {
    // SAFETY: as `tile_q4_k_repacked`.
    unsafe { avx512::tile_repacked_q4_0_zmm(w, a, out, panel) }
}

/// The Q6_K tile (tiled order from `TILED_MIN_BATCH` tokens, vec-dot order below).
fn tile_q6_k_tiled(w: &[&[u8]; 4], a: &[&[u8]], out: &mut [[f32; 4]], panel: &mut TilePanel) {
    // SAFETY: as `tile_q4_k_repacked`.
    unsafe { avx512::tile_q6_k_zmm(w, a, out, &mut panel.kquant, &mut panel.kscales) }
}

/// The instruction sets the tile kernels are compiled for. They compute the same integers
/// (see `dot_avx2::legacy_tile`), so the choice changes speed, never results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileIsa {
    /// AVX2 `maddubs` + `madd`.
    Avx2,
    /// AVX-512 VNNI on 512-bit vectors, two weight rows per register (`dot_avx512`).
    Avx512Vnni,
    /// AVX-VNNI (`vpdpbusd`, VEX).
    AvxVnni,
}

impl TileIsa {
    /// The instruction sets this CPU runs, fastest first as measured on a CPU with all
    /// three (`cargo bench --bench kernels -- tile`); empty without AVX2.
    pub fn available() -> Vec<TileIsa> {
        let mut v = Vec::new();
        if Kernel::best() != Kernel::Avx2 {
            return v;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                v.push(TileIsa::Avx512Vnni);
            }
            if std::is_x86_feature_detected!("avxvnni") {
                v.push(TileIsa::AvxVnni);
            }
        }
        v.push(TileIsa::Avx2);
        v
    }

    /// The fastest set this CPU runs for `kernel`; `None` for the scalar kernel or a CPU
    /// without AVX2.
    pub fn best(kernel: Kernel) -> Option<TileIsa> {
        (kernel == Kernel::Avx2)
            .then(|| TileIsa::available().first().copied())
            .flatten()
    }

    /// Lower-case name, as `pv bench` prints it.
    pub fn name(self) -> &'static str {
        match self {
            TileIsa::Avx2 => "avx2",
            TileIsa::Avx512Vnni => "avx512-vnni",
            TileIsa::AvxVnni => "avx-vnni",
        }
    }

    /// `self` if this CPU runs it.
    pub fn if_available(self) -> Option<TileIsa> {
        TileIsa::available().contains(&self).then_some(self)
    }
}

/// The four-by-four tile kernel for `weight` with `kernel` on this CPU (the fastest
/// instruction set it has), or `None` where the format has none (K-quants, floats) or the
/// kernel is scalar.
pub fn tile_fn(weight: GgmlType, kernel: Kernel) -> Option<DotTileFn> {
    tile_kernel(weight, TileIsa::best(kernel)?)
}

/// [`tile_fn`] in a given instruction set (for tests: every set the CPU has gives the same
/// results); `None` if the CPU lacks it or the format has no tile.
pub fn tile_fn_in(weight: GgmlType, isa: TileIsa) -> Option<DotTileFn> {
    tile_kernel(weight, isa.if_available()?)
}

/// The fused dot product for `weight` blocks with `kernel`, or `None` when the format is not
/// a weight format (Q8_1, Q8_K). A `Kernel::Avx2` request on a CPU without AVX2 falls back
/// to the scalar kernel.
pub fn dot_fn(weight: GgmlType, kernel: Kernel) -> Option<DotFn> {
    use GgmlType::*;
    let simd = kernel == Kernel::Avx2 && Kernel::best() == Kernel::Avx2;
    macro_rules! pick {
        ($name:ident) => {
            if simd {
                avx2_safe::$name as DotFn
            } else {
                scalar::$name as DotFn
            }
        };
        ($name:ident, $portable:ident) => {
            if simd {
                avx2_safe::$name as DotFn
            } else {
                kscalar::$portable as DotFn
            }
        };
    }
    Some(match weight {
        Q4_0 => pick!(dot_q4_0_q8_0),
        Q4_1 => pick!(dot_q4_1_q8_1),
        Q5_0 => pick!(dot_q5_0_q8_0),
        Q5_1 => pick!(dot_q5_1_q8_1),
        Q8_0 => pick!(dot_q8_0_q8_0),
        Q2_K => pick!(dot_q2_k_q8_k, vec_q2_k),
        Q3_K => pick!(dot_q3_k_q8_k, vec_q3_k),
        Q4_K => pick!(dot_q4_k_q8_k, vec_q4_k),
        Q5_K => pick!(dot_q5_k_q8_k, vec_q5_k),
        Q6_K => pick!(dot_q6_k_q8_k, vec_q6_k),
        F32 => pick!(dot_f32_f32),
        F16 => pick!(dot_f16_f32),
        BF16 => scalar::dot_bf16_f32,
        Q8_1 | Q8_K => return None,
    })
}

/// Formats llama.cpp's x86 CPU backend repacks at load into interleaved blocks of 8 rows
/// (`ggml-cpu/repack.cpp`, matrices whose row count is a multiple of 8), with the builds that
/// do. A repacked matrix runs its own kernels at every batch size, with their own
/// accumulation order ([`korder`]); no other path touches it.
pub const REPACKED: [(GgmlType, &[Flavor]); 3] = [
    (GgmlType::Q4_0, &[Flavor::Avx512, Flavor::Avx2]),
    (GgmlType::Q4_K, &[Flavor::Avx512, Flavor::Avx2]),
    (GgmlType::Q2_K, &[Flavor::Avx512]),
];

/// The K-quant weight formats: their batches of at least [`TILED_MIN_BATCH`] rows go through
/// llama.cpp's tiled product when the matrix is not repacked.
pub const TILED: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The batch size from which llama.cpp's tiled K-quant product takes over.
pub const TILED_MIN_BATCH: usize = 8;

/// Whether llama.cpp (in `flavor`) repacks a `weight` matrix of `rows` rows.
pub fn is_repacked(weight: GgmlType, rows: usize, flavor: Flavor) -> bool {
    rows.is_multiple_of(8)
        && REPACKED
            .iter()
            .any(|(ty, fl)| *ty == weight && fl.contains(&flavor))
}

/// The kernels for one weight matrix, chosen as llama.cpp's x86 CPU backend chooses its
/// code path, so that each product is computed in llama.cpp's order.
#[derive(Clone, Copy, Debug)]
pub struct MatrixKernels {
    /// One activation row, and the rows left after groups of four.
    pub dot: DotFn,
    /// Each full group of four activation rows, where it differs from `dot` or is faster.
    pub dot4: Option<Dot4Fn>,
    /// Every activation row of a batch of at least [`TILED_MIN_BATCH`], where it differs.
    pub dot_batch: Option<DotFn>,
    /// `dot_batch` for four activation rows at once, where a faster kernel exists.
    pub dot_batch4: Option<Dot4Fn>,
    /// Four weight rows against one activation row, where a faster kernel exists.
    pub dot_rows4: Option<DotRows4Fn>,
    /// Four weight rows against a whole batch, where a faster kernel exists.
    pub dot_tile: Option<DotTileFn>,
}

/// The kernels for a `weight` matrix of `rows` rows reproducing llama.cpp's `flavor` build,
/// implemented by `kernel`; `None` for formats that are not weight formats.
pub fn matrix_kernels(
    weight: GgmlType,
    rows: usize,
    kernel: Kernel,
    flavor: Flavor,
) -> Option<MatrixKernels> {
    let simd = kernel == Kernel::Avx2 && Kernel::best() == Kernel::Avx2;
    let mut k = MatrixKernels {
        dot: dot_fn(weight, kernel)?,
        dot4: dot4_fn(weight, kernel),
        dot_batch: None,
        dot_batch4: None,
        dot_rows4: dot_rows4_fn(weight, kernel),
        dot_tile: tile_fn(weight, kernel),
    };
    if is_repacked(weight, rows, flavor) {
        use GgmlType::*;
        let (dot, dot4, dot_rows4): (DotFn, Option<Dot4Fn>, Option<DotRows4Fn>) =
            match (weight, simd) {
                (Q4_0, true) => (
                    avx2_safe::repacked_q4_0,
                    Some(avx2_safe4::repacked4_q4_0),
                    Some(avx2_safe_rows4::repacked_rows4_q4_0),
                ),
                (Q4_0, false) => (kscalar::repacked_q4_0, None, None),
                (Q4_K, true) => (
                    avx2_safe::gemv_q4_k,
                    Some(avx2_safe4::gemm4_q4_k),
                    Some(avx2_safe_rows4::gemv_rows4_q4_k),
                ),
                (Q4_K, false) => (kscalar::gemv_q4_k, Some(kscalar::gemm4_q4_k), None),
                (Q2_K, true) => (
                    avx2_safe::gemv_q2_k,
                    Some(avx2_safe4::gemm4_q2_k),
                    Some(avx2_safe_rows4::gemv_rows4_q2_k),
                ),
                (Q2_K, false) => (kscalar::gemv_q2_k, Some(kscalar::gemm4_q2_k), None),
                _ => unreachable!("REPACKED lists these formats"),
            };
        let tile_isa = TileIsa::best(kernel);
        k = MatrixKernels {
            dot,
            dot4,
            dot_batch: None,
            dot_batch4: None,
            dot_rows4,
            dot_tile: match (weight, tile_isa) {
                (Q4_K, Some(TileIsa::Avx512Vnni)) => Some(tile_q4_k_repacked as DotTileFn),
                (Q4_0, Some(TileIsa::Avx512Vnni)) => Some(tile_q4_0_repacked as DotTileFn),
                _ => None,
            },
        };
    } else if TILED.contains(&weight) {
        k.dot_batch = Some(tiled_fn(weight, simd));
        k.dot_batch4 = simd.then(|| tiled4_fn(weight));
        k.dot_tile = (weight == GgmlType::Q6_K
            && TileIsa::best(kernel) == Some(TileIsa::Avx512Vnni))
        .then_some(tile_q6_k_tiled as DotTileFn);
    }
    Some(k)
}

fn tiled_fn(weight: GgmlType, simd: bool) -> DotFn {
    use GgmlType::*;
    match (weight, simd) {
        (Q2_K, false) => kscalar::tiled_q2_k,
        (Q3_K, false) => kscalar::tiled_q3_k,
        (Q4_K, false) => kscalar::tiled_q4_k,
        (Q5_K, false) => kscalar::tiled_q5_k,
        (Q6_K, false) => kscalar::tiled_q6_k,
        (Q2_K, true) => avx2_safe::tiled_q2_k,
        (Q3_K, true) => avx2_safe::tiled_q3_k,
        (Q4_K, true) => avx2_safe::tiled_q4_k,
        (Q5_K, true) => avx2_safe::tiled_q5_k,
        (Q6_K, true) => avx2_safe::tiled_q6_k,
        _ => unreachable!("TILED lists the K-quants"),
    }
}

fn tiled4_fn(weight: GgmlType) -> Dot4Fn {
    use GgmlType::*;
    match weight {
        Q2_K => avx2_safe4::tiled4_q2_k,
        Q3_K => avx2_safe4::tiled4_q3_k,
        Q4_K => avx2_safe4::tiled4_q4_k,
        Q5_K => avx2_safe4::tiled4_q5_k,
        _ => avx2_safe4::tiled4_q6_k,
    }
}

/// The portable K-quant kernels of each llama.cpp order, as plain function pointers.
mod kscalar {
    use super::super::korder;
    use crate::gguf::GgmlType::*;

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

/// The four-activation-row kernel for `weight`, where one exists for this kernel choice
/// (AVX2 for the 32-value formats); otherwise callers use the single-row kernel four times.
pub fn dot4_fn(weight: GgmlType, kernel: Kernel) -> Option<Dot4Fn> {
    if kernel != Kernel::Avx2 || Kernel::best() != Kernel::Avx2 {
        return None;
    }
    use GgmlType::*;
    Some(match weight {
        Q4_0 => avx2_safe4::dot4_q4_0_q8_0,
        Q4_1 => avx2_safe4::dot4_q4_1_q8_1,
        Q5_0 => avx2_safe4::dot4_q5_0_q8_0,
        Q5_1 => avx2_safe4::dot4_q5_1_q8_1,
        Q8_0 => avx2_safe4::dot4_q8_0_q8_0,
        _ => return None,
    })
}

/// The four-weight-row kernel for `weight`, where one exists (AVX2 for the 32-value
/// formats).
pub fn dot_rows4_fn(weight: GgmlType, kernel: Kernel) -> Option<DotRows4Fn> {
    rows4_kernel(weight, TileIsa::best(kernel)?)
}

/// [`dot_rows4_fn`] in a given instruction set (for tests); `None` if the CPU lacks it or
/// the format has no four-row kernel.
pub fn dot_rows4_fn_in(weight: GgmlType, isa: TileIsa) -> Option<DotRows4Fn> {
    rows4_kernel(weight, isa.if_available()?)
}
