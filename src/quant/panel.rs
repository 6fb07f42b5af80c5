//! Reusable room for the tile kernels: each worker decodes four weight rows once into a
//! panel and serves a whole batch of activations from it.

/// Four weight rows' block `b`, decoded once for a whole batch of tokens (a panel of the
/// 32-value formats' tiles): the quants as bytes, an auxiliary vector that depends on the
/// instruction set, and the scales and mins as f32. (AVX2's tile of the signed formats
/// keeps each row's quants as i16 pairs instead, the first 32 bytes in `q`, the rest in
/// `aux`, as [`ActWords`] lays out the activations.)
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

/// One activation block's 32 quants as the legacy tiles multiply them (AVX-512 and AVX-VNNI:
/// offset by 128 where the weights are signed; AVX2: as quantized), aligned for one load.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct ActQuants(pub(super) [u8; 32]);

/// One activation block's 32 signed quants as i16 pairs, for the AVX2 tile of signed
/// formats (`vpmaddwd` instead of the sign trick): `0[0]` holds quants `4i, 4i + 1` in dword
/// `i`, `0[1]` quants `4i + 2, 4i + 3`, so that the two products' dword `i` sum to the same
/// four products as the byte kernels' lane `i`.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct ActWords(pub(super) [[i16; 16]; 2]);

/// Four Q4_0 weight rows' block laid out for one output per lane (the repacked Q4_0 tile):
/// `q[g]` holds, in 128-bit chunk `r`, row `r`'s quants `4g..4g+4` (the unsigned nibbles,
/// 0..=15) repeated in the chunk's four lanes; `d` holds row `r`'s scale in the lanes of
/// chunk `r` (lane `4r + t`: token `t`).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct LaneBlock {
    pub(super) q: [[u8; 64]; 8],
    pub(super) d: [f32; 16],
}

impl LaneBlock {
    pub(crate) const ZERO: LaneBlock = LaneBlock {
        q: [[0; 64]; 8],
        d: [0.0; 16],
    };
}

/// Four activation rows' Q8_0 block in the layout [`LaneBlock`] multiplies, broadcast to
/// every chunk when used: `y[g]` holds token `t`'s quants `4g..4g+4` in dword `t`; `corr`
/// each token's `-8 * Σy` (the nibbles' offset of 8); `d` each token's scale. A `vpdpbusd`
/// of the weights' `q[g]` and `y[g]` then adds step `g` of output (row `r`, token `t`) into
/// lane `4r + t`.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct LaneActs {
    pub(super) y: [[u8; 16]; 8],
    pub(super) corr: [i32; 4],
    pub(super) d: [f32; 4],
}

impl LaneActs {
    pub(crate) const ZERO: LaneActs = LaneActs {
        y: [[0; 16]; 8],
        corr: [0; 4],
        d: [0.0; 4],
    };
}

/// Four K-quant weight rows' block laid out for one output per lane (the lane tiles of
/// `quant::lanes`; lane `4r + t`: row `r`, token `t`): `q[g]` holds, in 128-bit chunk `r`,
/// row `r`'s byte weights `4g..4g+4` (Q2_K: scale times quant; Q3_K: quant plus 4; Q4_K:
/// quant) repeated in the chunk's four lanes; `scales[j]` and `mins[j]` row `r`'s scales and
/// mins of 16-value groups `2j, 2j+1` as an i16 pair (zero where the format has none or
/// folds them in), repeated the same way; `d` and `dmin` the rows' block scales in the
/// lanes of their chunks.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct KLaneBlock {
    pub(super) q: [[u8; 64]; 64],
    pub(super) scales: [[u8; 64]; 8],
    pub(super) mins: [[u8; 64]; 8],
    pub(super) d: [f32; 16],
    pub(super) dmin: [f32; 16],
}

impl KLaneBlock {
    pub(crate) const ZERO: KLaneBlock = KLaneBlock {
        q: [[0; 64]; 64],
        scales: [[0; 64]; 8],
        mins: [[0; 64]; 8],
        d: [0.0; 16],
        dmin: [0.0; 16],
    };
}

/// Four activation rows' Q8_K block in the layout [`KLaneBlock`] multiplies, broadcast to
/// every chunk when used: `y[g]` holds token `t`'s quants `4g..4g+4` in dword `t`;
/// `bsums[j]` its block sums `2j, 2j+1` the same way; `d` each token's scale.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct KLaneActs {
    pub(super) y: [[u8; 16]; 64],
    pub(super) bsums: [[u8; 16]; 8],
    pub(super) d: [f32; 4],
}

impl KLaneActs {
    pub(crate) const ZERO: KLaneActs = KLaneActs {
        y: [[0; 16]; 64],
        bsums: [[0; 16]; 8],
        d: [0.0; 4],
    };
}

/// Reusable room for a tile kernel's decoded weight blocks, and the block scales of the
/// batch of activations it serves, converted to f32 by the first tile call and reused by
/// the next ones (one panel per worker and batch).
#[derive(Default)]
pub struct TilePanel {
    /// The 32-value formats' blocks.
    pub(super) legacy: Vec<PanelBlock>,
    /// The activations' block scales (`d`, and `s` where the format has it), block-major
    /// (`dot_avx2::fill_acts`).
    pub(super) act_scales: Vec<[f32; 2]>,
    /// Which batch `act_scales`, `act_quants` and `act_dy4` belong to: its first row's
    /// address, its shape, and whether the quants are offset by 128.
    pub(super) act_key: (usize, usize, usize, bool),
    /// The batch's activation quants for the legacy tiles, block-major.
    pub(super) act_quants: Vec<ActQuants>,
    /// `act_quants` as i16 pairs ([`ActWords`]), for the AVX2 tile of signed formats.
    pub(super) act_words: Vec<ActWords>,
    /// The `act_key` `act_words` was made for.
    pub(super) words_key: (usize, usize, usize, bool),
    /// The activations' block scales again, block-major, each repeated four times.
    pub(super) act_dy4: Vec<[f32; 4]>,
    /// The legacy tiles' scale products for a group of tokens, block-major.
    pub(super) prods: Vec<[f32; 4]>,
    /// The lane-per-output weight blocks (repacked Q4_0).
    pub(super) lanes: Vec<LaneBlock>,
    /// The batch's activations for them, four tokens per entry, quad-major (the last quad
    /// padded with zero tokens).
    pub(super) lane_acts: Vec<LaneActs>,
    /// Which batch `lane_acts` belongs to: its first row's address and its shape.
    pub(super) lane_key: (usize, usize),
    /// The lane-per-output K-quant blocks (repacked Q2_K and Q4_K, tiled Q3_K and Q6_K).
    pub(super) klanes: Vec<KLaneBlock>,
    /// The batch's Q8_K activations for them, as `lane_acts` for Q8_0.
    pub(super) klane_acts: Vec<KLaneActs>,
    /// Which batch `klane_acts` belongs to.
    pub(super) klane_key: (usize, usize),
    /// The batch the cached activation layouts were made for ([`TilePanel::begin`]).
    batch: u64,
}

impl TilePanel {
    /// Starts serving batch `batch`, a number the caller never gives two different sets of
    /// activations: the activation layouts cached for another batch are dropped (their
    /// keys hold addresses, which a later batch may reuse for other values), those of the
    /// same batch kept, so that one panel per thread serves every task of a product.
    pub fn begin(&mut self, batch: u64) {
        if self.batch != batch {
            self.batch = batch;
            // The buffers keep their room (refilled, not regrown, by the next batch).
            self.act_key = (0, 0, 0, false);
            self.words_key = (0, 0, 0, false);
            self.lane_key = (0, 0);
            self.klane_key = (0, 0);
        }
    }
}
