//! Quantized matrix products: activations are quantized per block to the weight format's
//! activation type (as llama.cpp does), then each output is one fused dot product. Work is
//! split over output rows with rayon.

use rayon::prelude::*;

use crate::quant::GgmlType;
use crate::quant::{self, Flavor, MatrixKernels};

use super::weights::QMatrix;

/// Rows of `n` tokens quantized to one activation format.
///
/// # Shapes
/// `data` holds `n` rows of `row_bytes` bytes, each row encoding `width` values.
#[derive(Default)]
pub struct QuantizedActs {
    /// Activation format, `None` until first filled.
    pub ty: Option<GgmlType>,
    /// Bytes per token row.
    pub row_bytes: usize,
    /// Encoded rows.
    pub data: Vec<u8>,
}

impl QuantizedActs {
    /// Quantizes `n` rows of `x` (each `width` values) to `ty`, reusing the buffer.
    pub fn fill(&mut self, ty: GgmlType, x: &[f32], width: usize) {
        let row_bytes = ty.row_bytes(width).expect("widths are checked at load");
        let n = x.len() / width;
        self.data.resize(n * row_bytes, 0);
        let quantize = |(src, dst): (&[f32], &mut [u8])| {
            quant::quantize_row(ty, src, dst).expect("lengths match by construction")
        };
        if n > 1 {
            x.par_chunks_exact(width)
                .zip(self.data.par_chunks_exact_mut(row_bytes))
                .for_each(quantize);
        } else {
            quantize((x, &mut self.data));
        }
        self.ty = Some(ty);
        self.row_bytes = row_bytes;
    }
}

impl QuantizedActs {
    /// The encoded row of token `t`.
    #[inline]
    pub fn row(&self, t: usize) -> &[u8] {
        &self.data[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// `out[t][r] = w[r] · x[t]` for every token `t` and output row `r`.
///
/// # Shapes
/// `x`: `n` rows quantized to `w.act_ty`; `out`: `n * w.rows`, token-major. `scratch` is
/// reused between calls for the partial results of each block of rows when `n > 1`.
pub fn matmul(
    out: &mut [f32],
    x: &QuantizedActs,
    w: &QMatrix,
    file: &[u8],
    scratch: &mut Vec<f32>,
    flavor: Flavor,
) {
    matmul_many(&mut [(out, w)], x, file, scratch, flavor);
}

/// [`matmul`] of several matrices reading the same activations, in one parallel region:
/// one fork and join for q, k and v together, or gate and up, and one pool of tasks to
/// balance between the threads. A single token goes to [`matvec_many`].
pub fn matmul_many(
    outs: &mut [(&mut [f32], &QMatrix)],
    x: &QuantizedActs,
    file: &[u8],
    scratch: &mut Vec<f32>,
    flavor: Flavor,
) {
    let n = x.data.len() / x.row_bytes;
    if n == 1 {
        return matvec_many(outs, x, file, flavor);
    }
    let total: usize = outs.iter().map(|(_, w)| w.rows).sum();
    let chunk = rows_per_task(total, 16);
    // Each task computes a block of rows for every token, token-major within the block, so
    // that gathering the blocks into the outputs copies contiguous runs.
    scratch.resize(n * total, 0.0);
    let mut tasks = Vec::new();
    let mut rest = &mut scratch[..];
    for (m, (out, w)) in outs.iter().enumerate() {
        debug_assert_eq!(x.ty, Some(w.act_ty));
        debug_assert_eq!(out.len(), n * w.rows);
        let k = w.kernels(flavor);
        for r0 in (0..w.rows).step_by(chunk) {
            let rows = chunk.min(w.rows - r0);
            let (o, tail) = std::mem::take(&mut rest).split_at_mut(rows * n);
            rest = tail;
            tasks.push((m, r0, o, *w, k));
        }
    }
    // One panel per thread serves all its tasks: the activations' layouts a tile kernel
    // makes are made once per thread and product, not once per task.
    let batch = NEXT_BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tasks.par_iter_mut().for_each(|(_, r0, o, w, k)| {
        PANEL.with_borrow_mut(|panel| {
            panel.begin(batch);
            batch_rows(o, *r0, n, x, w, k, file, panel)
        })
    });
    // Gathered token by token in parallel, every matrix in one region (one fork and join,
    // not one a matrix): each output row takes its piece of every block of its matrix.
    let blocks: Vec<Vec<(usize, &[f32])>> = (0..outs.len())
        .map(|m| {
            tasks
                .iter()
                .filter(|task| task.0 == m)
                .map(|(_, r0, block, _, _)| (*r0, &**block))
                .collect()
        })
        .collect();
    let mut dsts: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(outs.len() * n);
    for (m, (out, w)) in outs.iter_mut().enumerate() {
        dsts.extend(
            out.chunks_mut(w.rows)
                .enumerate()
                .map(|(t, dst)| (m, t, dst)),
        );
    }
    dsts.par_iter_mut().for_each(|(m, t, dst)| {
        for &(r0, block) in &blocks[*m] {
            let rows = block.len() / n;
            dst[r0..r0 + rows].copy_from_slice(&block[*t * rows..(*t + 1) * rows]);
        }
    });
}

/// Partial results `o[t * rows + i] = w[r0 + i] · x[t]` for a batch of `n` tokens, in the
/// order `quant::path` picks for that batch size: four rows at a time against the whole
/// batch (their blocks decoded once into a panel) where the order has a tile kernel, then
/// one row at a time (four tokens at once where it has a four-token kernel).
#[allow(clippy::too_many_arguments)]
fn batch_rows(
    o: &mut [f32],
    r0: usize,
    n: usize,
    x: &QuantizedActs,
    w: &QMatrix,
    k: &MatrixKernels,
    file: &[u8],
    panel: &mut quant::TilePanel,
) {
    let order = k.for_batch(n);
    let rows = o.len() / n;
    let mut i = 0;
    if let Some(tile) = order.tile {
        let xs: Vec<&[u8]> = (0..n).map(|t| x.row(t)).collect();
        let mut res = vec![[0f32; 4]; n];
        while i + 4 <= rows {
            let ws = [0, 1, 2, 3].map(|j| w.row(file, r0 + i + j));
            for j in i + 4..(i + 8).min(rows) {
                quant::cpu::prefetch_l2(w.row(file, r0 + j));
            }
            tile.call(&ws, &xs, &mut res, panel);
            for (t, v) in res.iter().enumerate() {
                o[t * rows + i..][..4].copy_from_slice(v);
            }
            i += 4;
        }
    }
    for i in i..rows {
        let wr = w.row(file, r0 + i);
        let mut t = 0;
        if let Some(four) = order.four {
            while t + 4 <= n {
                let xs = [x.row(t), x.row(t + 1), x.row(t + 2), x.row(t + 3)];
                for (tt, v) in four.call(wr, &xs).into_iter().enumerate() {
                    o[(t + tt) * rows + i] = v;
                }
                t += 4;
            }
        }
        for tt in t..n {
            o[tt * rows + i] = order.one.call(wr, x.row(tt));
        }
    }
}

/// `o[i] = w[r0 + i] · x` for one token's activations: sixteen interleaved rows at a time
/// where the single-token order has a sixteen-row kernel and the matrix its interleaved
/// copy, then four rows at a time where it has a four-row kernel.
fn matvec_rows(o: &mut [f32], r0: usize, x: &[u8], w: &QMatrix, k: &MatrixKernels, file: &[u8]) {
    use quant::interleave::GROUP_ROWS;
    let order = k.for_batch(1);
    let mut i = 0;
    if let Some(rows16) = order.rows16
        && r0.is_multiple_of(GROUP_ROWS)
        && let Some(il) = w.interleaved(file)
    {
        while i + GROUP_ROWS <= o.len() {
            o[i..i + GROUP_ROWS].copy_from_slice(&rows16.call(il.group((r0 + i) / GROUP_ROWS), x));
            i += GROUP_ROWS;
        }
    }
    if let Some(rows4) = order.rows4 {
        while i + 4 <= o.len() {
            let ws = [
                w.row(file, r0 + i),
                w.row(file, r0 + i + 1),
                w.row(file, r0 + i + 2),
                w.row(file, r0 + i + 3),
            ];
            o[i..i + 4].copy_from_slice(&rows4.call(&ws, x));
            i += 4;
        }
    }
    for (v, r) in o[i..].iter_mut().zip(r0 + i..) {
        *v = order.one.call(w.row(file, r), x);
    }
}

/// Several matrices applied to one token's activations (all in the same activation format)
/// in a single parallel region: one fork and join for q, k and v together, or gate and up,
/// instead of one per matrix. The blocks of rows of all the matrices form one flat list of
/// tasks (a nested split would add joins, each a few microseconds of cross-thread wake-up).
pub fn matvec_many(
    outs: &mut [(&mut [f32], &QMatrix)],
    x: &QuantizedActs,
    file: &[u8],
    flavor: Flavor,
) {
    let total: usize = outs.iter().map(|(_, w)| w.rows).sum();
    let chunk = rows_per_task(total, 4);
    let mut tasks = Vec::new();
    for (out, w) in outs.iter_mut() {
        debug_assert_eq!(x.ty, Some(w.act_ty));
        let k = w.kernels(flavor);
        if k.for_batch(1).rows16.is_some() {
            // Made here, before the parallel region, not by the first task to need it.
            w.interleaved(file);
        }
        for (c, o) in out.chunks_mut(chunk).enumerate() {
            tasks.push((o, c * chunk, &**w, k));
        }
    }
    tasks
        .into_par_iter()
        .for_each(|(o, r0, w, k)| matvec_rows(o, r0, &x.data, w, k, file));
}

thread_local! {
    /// Each thread's tile panel, kept between products ([`quant::TilePanel::begin`]).
    static PANEL: std::cell::RefCell<quant::TilePanel> = std::cell::RefCell::default();
}

/// The number of the next batch of activations [`matmul_many`] multiplies.
static NEXT_BATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Rows a task for `per_thread` tasks a thread: enough tasks to even out a thread that
/// falls behind, few enough that the splitting costs little. A batch takes 16 a thread
/// (its tasks are long, and the last one left decides when the product ends: pp64 gained
/// 2-5% over 4 with 2 threads); a single token 4 (measured on tg32 with 2 threads).
fn rows_per_task(rows: usize, per_thread: usize) -> usize {
    let tasks = rayon::current_num_threads() * per_thread;
    // A multiple of 16, so that interleaved groups of rows are never split.
    rows.div_ceil(tasks).next_multiple_of(16).clamp(16, 512)
}
