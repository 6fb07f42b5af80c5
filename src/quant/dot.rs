//! Choosing the fused dot product for a weight format: the activation format it pairs with
//! (as llama.cpp pairs them) and the fastest kernel this CPU runs.

use crate::gguf::GgmlType;

use super::{dot_avx2 as avx2, dot_scalar as scalar};

/// A fused dot product over whole blocks: weight row bytes, activation row bytes.
pub type DotFn = fn(&[u8], &[u8]) -> f32;

/// A fused dot product of one weight row with four activation rows at once (the weight
/// blocks decoded once); each result equals the single-row [`DotFn`]'s bit for bit.
pub type Dot4Fn = fn(&[u8], &[&[u8]; 4]) -> [f32; 4];

/// Four weight rows against one activation row (independent chains in flight, for
/// single-token generation); each result equals the single-row [`DotFn`]'s bit for bit.
pub type DotRows4Fn = fn(&[&[u8]; 4], &[u8]) -> [f32; 4];

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
    dot_f16_f32
);

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
    }
    Some(match weight {
        Q4_0 => pick!(dot_q4_0_q8_0),
        Q4_1 => pick!(dot_q4_1_q8_1),
        Q5_0 => pick!(dot_q5_0_q8_0),
        Q5_1 => pick!(dot_q5_1_q8_1),
        Q8_0 => pick!(dot_q8_0_q8_0),
        Q2_K => pick!(dot_q2_k_q8_k),
        Q3_K => pick!(dot_q3_k_q8_k),
        Q4_K => pick!(dot_q4_k_q8_k),
        Q5_K => pick!(dot_q5_k_q8_k),
        Q6_K => pick!(dot_q6_k_q8_k),
        F32 => pick!(dot_f32_f32),
        F16 => pick!(dot_f16_f32),
        BF16 => scalar::dot_bf16_f32,
        Q8_1 | Q8_K => return None,
    })
}

/// The four-row kernel for `weight`, where one exists for this kernel choice (AVX2 for Q4_1
/// and Q8_0); otherwise callers use the single-row kernel four times.
/// The dot product llama.cpp uses for a matrix of `rows` rows of format `weight`: on x86 it
/// repacks Q4_K matrices whose row count is a multiple of 8 into interleaved blocks with their
/// own accumulation order ([`scalar::dot_q4_k_q8_k_8x8`]); every other matrix uses the
/// format's fused dot product ([`dot_fn`]).
pub fn matrix_dot_fn(weight: GgmlType, rows: usize, kernel: Kernel) -> Option<DotFn> {
    if weight == GgmlType::Q4_K && rows.is_multiple_of(8) {
        return Some(scalar::dot_q4_k_q8_k_8x8);
    }
    dot_fn(weight, kernel)
}

/// The four-activation-row dot product llama.cpp uses for a matrix of `rows` rows of format
/// `weight` (see [`matrix_dot_fn`]): the repacked Q4_K four-row kernel, or the format's own.
pub fn matrix_dot4_fn(weight: GgmlType, rows: usize, kernel: Kernel) -> Option<Dot4Fn> {
    if weight == GgmlType::Q4_K && rows.is_multiple_of(8) {
        return Some(scalar::dot4_q4_k_q8_k_8x8_gemm);
    }
    dot4_fn(weight, kernel)
}

/// The dot product llama.cpp uses for every activation row of a batch of at least
/// [`TILED_MIN_BATCH`] rows, where it differs from [`matrix_dot_fn`]: its tiled K-quant
/// product for Q6_K matrices (Q4_K matrices are repacked instead; the other K-quants' tiled
/// arithmetic is not reproduced yet).
pub fn matrix_batch_dot_fn(weight: GgmlType) -> Option<DotFn> {
    match weight {
        GgmlType::Q6_K => Some(scalar::dot_q6_k_q8_k_tiled),
        _ => None,
    }
}

/// The batch size from which llama.cpp's tiled K-quant product takes over.
pub const TILED_MIN_BATCH: usize = 8;

pub fn dot4_fn(weight: GgmlType, kernel: Kernel) -> Option<Dot4Fn> {
    if kernel != Kernel::Avx2 || Kernel::best() != Kernel::Avx2 {
        return None;
    }
    fn q4_1(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        // SAFETY: returned only after AVX2, FMA and F16C were detected just above.
        unsafe { avx2::dot4_q4_1_q8_1(w, a) }
    }
    fn q8_0(w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        // SAFETY: returned only after AVX2, FMA and F16C were detected just above.
        unsafe { avx2::dot4_q8_0_q8_0(w, a) }
    }
    match weight {
        GgmlType::Q4_1 => Some(q4_1),
        GgmlType::Q8_0 => Some(q8_0),
        _ => None,
    }
}

/// The four-weight-row kernel for `weight`, where one exists (AVX2 for Q4_1 and Q8_0).
pub fn dot_rows4_fn(weight: GgmlType, kernel: Kernel) -> Option<DotRows4Fn> {
    if kernel != Kernel::Avx2 || Kernel::best() != Kernel::Avx2 {
        return None;
    }
    fn q4_1(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
        // SAFETY: returned only after AVX2, FMA and F16C were detected just above.
        unsafe { avx2::dot_rows4_q4_1_q8_1(w, a) }
    }
    fn q8_0(w: &[&[u8]; 4], a: &[u8]) -> [f32; 4] {
        // SAFETY: returned only after AVX2, FMA and F16C were detected just above.
        unsafe { avx2::dot_rows4_q8_0_q8_0(w, a) }
    }
    match weight {
        GgmlType::Q4_1 => Some(q4_1),
        GgmlType::Q8_0 => Some(q8_0),
        _ => None,
    }
}
