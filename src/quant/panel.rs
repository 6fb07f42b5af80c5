//! Reusable room for the tile kernels: each worker decodes four weight rows once into a
//! panel and serves a whole batch of activations from it.

/// Four weight rows' block `b`, decoded once for a whole batch of tokens (a panel of the
/// 32-value formats' tiles): the quants as bytes, an auxiliary vector that depends on the
/// instruction set, and the scales and mins as f32.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct PanelBlock {
    pub(super) q: [[u8; 32]; 4],
    pub(super) aux: [[u8; 32]; 4],
    pub(super) d: [f32; 4],
    pub(super) m: [f32; 4],
}

impl PanelBlock {
    pub(crate) const ZERO: PanelBlock = PanelBlock {
        q: [[0; 32]; 4],
        aux: [[0; 32]; 4],
        d: [0.0; 4],
        m: [0.0; 4],
    };
}

/// One Q4_K or Q6_K block of one weight row, decoded for the 512-bit K-quant tiles: per
/// 64-value step `g`, the quants of its two 32-value sub-blocks as 64 bytes and their scales
/// as 32 i16 lanes (each sub-block's scale for the 16 `maddubs` pairs it yields); the mins
/// per 16 values.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct KPanelBlock {
    pub(super) q: [[u8; 64]; 4],
    pub(super) sc: [[i16; 32]; 4],
    pub(super) mins: [i16; 16],
}

impl KPanelBlock {
    pub(crate) const ZERO: KPanelBlock = KPanelBlock {
        q: [[0; 64]; 4],
        sc: [[0; 32]; 4],
        mins: [0; 16],
    };
}

/// Reusable room for a tile kernel's decoded weight blocks, and the block scales of the
/// batch of activations it serves, converted to f32 by the first tile call and reused by
/// the next ones (one panel per worker and batch).
#[derive(Default)]
pub struct TilePanel {
    /// The 32-value formats' blocks.
    pub(super) legacy: Vec<PanelBlock>,
    /// Repacked Q4_K or tiled Q6_K blocks, four rows per block.
    pub(super) kquant: Vec<KPanelBlock>,
    /// Each K-quant block's `d` and `dmin`.
    pub(super) kscales: Vec<[f32; 2]>,
    /// The activations' block scales (`d`, and `s` where the format has it), token-major.
    pub(super) act_scales: Vec<[f32; 2]>,
    /// Which batch `act_scales` belongs to: its first row's address and its shape.
    pub(super) act_key: (usize, usize, usize),
}
