//! Which code path a matrix product takes: the one decision pv's bit-identity with
//! llama.cpp rests on, made here and nowhere else.
//!
//! llama.cpp's x86 CPU backend picks, per weight matrix and batch size:
//! - **repacked** (`ggml-cpu/repack.cpp`): a matrix of a format its build repacks
//!   ([`Format::repacked`]) whose row count is a multiple of 8 takes the repacked order at
//!   every batch size, and no other;
//! - **tiled** (`ggml-cpu/tiled`): otherwise, a K-quant matrix takes the tiled order for
//!   batches of at least [`TILED_MIN_BATCH`] rows;
//! - **vec-dot** (`ggml_vec_dot_*`): everything else.
//!
//! The kernels of each order come from the instruction set's table (`quant::kernels`);
//! a kernel never decides which order it computes.
//!
//! [`Format::repacked`]: super::format::Format::repacked

use super::cpu::Isa;
use super::format::{Family, Flavor, GgmlType};
use super::kernels::{FormatKernels, Order};

/// The batch size from which llama.cpp's tiled K-quant product takes over.
pub const TILED_MIN_BATCH: usize = 8;

/// Whether llama.cpp (in `flavor`) repacks a `weight` matrix of `rows` rows.
pub fn is_repacked(weight: GgmlType, rows: usize, flavor: Flavor) -> bool {
    rows.is_multiple_of(8) && weight.format().repacked.contains(&flavor)
}

/// The kernels for one weight matrix: the order its small batches (and single tokens)
/// take, and the order of batches of at least [`TILED_MIN_BATCH`] where that differs.
#[derive(Clone, Copy, Debug)]
pub struct MatrixKernels {
    small: Order,
    batch: Option<Order>,
}

impl MatrixKernels {
    /// The kernels for a `weight` matrix of `rows` rows reproducing llama.cpp's `flavor`
    /// build, from instruction set `isa` (the portable set when this CPU lacks it); `None`
    /// for formats that hold no weights.
    pub fn new(weight: GgmlType, rows: usize, isa: Isa, flavor: Flavor) -> Option<Self> {
        let k =
            FormatKernels::of(weight, isa).or_else(|| FormatKernels::of(weight, Isa::Portable))?;
        if is_repacked(weight, rows, flavor) {
            let repacked = k
                .repacked
                .expect("the kernel tables cover every repacked format");
            return Some(MatrixKernels {
                small: repacked,
                batch: None,
            });
        }
        let batch = match weight.format().family {
            Family::KQuant => Some(k.tiled.expect("the kernel tables cover every K-quant")),
            Family::Legacy | Family::Float => None,
        };
        Some(MatrixKernels {
            small: k.vec,
            batch,
        })
    }

    /// The kernels a batch of `n` activation rows takes (`n == 1`: a single token).
    #[inline]
    pub fn for_batch(&self, n: usize) -> &Order {
        match &self.batch {
            Some(batch) if n >= TILED_MIN_BATCH => batch,
            _ => &self.small,
        }
    }
}
