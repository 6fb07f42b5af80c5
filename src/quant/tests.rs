use super::synth::{SplitMix, random_row};
use super::*;
use proptest::prelude::*;

/// Fused dot product against the f64 dot of the dequantized rows: the kernels compute the
/// same sum, apart from f32 rounding and (for Q8_1) the f16 rounding of the stored block sum.
#[test]
fn fused_dot_equals_dot_of_dequantized_rows() {
    let mut rng = SplitMix(7);
    for ty in GgmlType::WEIGHTS {
        let act = ty.vec_dot_type().unwrap();
        for _ in 0..20 {
            let n = 512;
            let w = random_row(ty, n, 1.0, &mut rng);
            let x: Vec<f32> = (0..n).map(|_| rng.normal(1.0)).collect();
            let a = quantize(act, &x).unwrap();
            let wf = dequantize(ty, &w, n).unwrap();
            let af = dequantize(act, &a, n).unwrap();
            let exact: f64 = wf.iter().zip(&af).map(|(p, q)| *p as f64 * *q as f64).sum();
            let mag: f64 = wf
                .iter()
                .zip(&af)
                .map(|(p, q)| (*p as f64 * *q as f64).abs())
                .sum();
            // Q8_1 stores its block sum `s` as f16 (relative error 2^-11), which the min term
            // m * s carries; |m| is at most twice the block's largest weight.
            let s_term: f64 = if act == GgmlType::Q8_1 {
                wf.chunks(32)
                    .zip(af.chunks(32))
                    .map(|(bw, ba)| {
                        let m = bw.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
                        2.0 * m * ba.iter().map(|&v| v as f64).sum::<f64>().abs() / 2048.0
                    })
                    .sum()
            } else {
                0.0
            };
            for isa in Isa::available() {
                let k = FormatKernels::of(ty, isa).unwrap();
                let got = k.vec.one.call(&w, &a) as f64;
                let tol = 1e-5 * mag + s_term + 1e-6;
                assert!(
                    (got - exact).abs() <= tol,
                    "{ty} {isa:?}: {got} vs {exact} (tol {tol})"
                );
            }
        }
    }
}

/// Weight rows for a kernel test: valid random blocks, and for the 32-value formats every
/// byte but the scales random too (so quants of -128 and every nibble occur).
fn kernel_rows(
    ty: GgmlType,
    n: usize,
    scale: f32,
    count: usize,
    rng: &mut SplitMix,
) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            let mut row = random_row(ty, n, scale, rng);
            if ty.format().family == Family::Legacy {
                let keep = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    4
                } else {
                    2
                };
                for block in row.chunks_exact_mut(ty.block_bytes()) {
                    for b in &mut block[keep..] {
                        *b = rng.next_u64() as u8;
                    }
                }
            }
            row
        })
        .collect()
}

/// The orders of one format in one instruction set, by name.
fn orders(k: &FormatKernels) -> [(&'static str, Option<Order>); 3] {
    [
        ("vec", Some(k.vec)),
        ("tiled", k.tiled),
        ("repacked", k.repacked),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Every instruction set's kernels of every llama.cpp order (vec-dot, tiled, repacked)
    /// equal the portable kernels of that order bit for bit for the block formats (the
    /// integer parts are exact in both and the float steps are the same operations in the
    /// same order), in every shape: one row, four activation rows, four weight rows, sixteen
    /// interleaved weight rows, and a tile over a batch (6 and 15 tokens: whole groups of four through the four-token
    /// kernel, then one by one, as `matmul` calls them). The float formats, whose order pv
    /// does not pin, agree within 1e-5 of the sum of term magnitudes.
    #[test]
    fn every_isa_equals_the_portable_kernels(seed: u64, blocks in 1usize..5, scale in 0.01f32..100.0) {
        let mut rng = SplitMix(seed);
        for ty in GgmlType::WEIGHTS {
            let n = blocks * 256;
            let act = ty.vec_dot_type().unwrap();
            let ws = kernel_rows(ty, n, scale, 4, &mut rng);
            let ws = [&ws[0][..], &ws[1][..], &ws[2][..], &ws[3][..]];
            let acts: Vec<Vec<u8>> = (0..4)
                .map(|_| quantize(act, &(0..n).map(|_| rng.normal(scale)).collect::<Vec<_>>()).unwrap())
                .collect();
            let four = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
            let wf = dequantize(ty, ws[0], n).unwrap();
            let af = dequantize(act, four[0], n).unwrap();
            let mag: f32 = wf.iter().zip(&af).map(|(p, q)| (p * q).abs()).sum();
            let exact = ty.format().family != Family::Float;
            let portable = FormatKernels::of(ty, Isa::Portable).unwrap();
            for isa in Isa::available() {
                let k = FormatKernels::of(ty, isa).unwrap();
                for ((name, o), (_, p)) in orders(&k).into_iter().zip(orders(&portable)) {
                    prop_assert_eq!(o.is_some(), p.is_some(), "{} {:?} {}", ty, isa, name);
                    let (Some(o), Some(p)) = (o, p) else { continue };
                    // What the portable order gives row `w` and activation `t` of a group.
                    let want = |w: &[u8], t: usize, grouped: bool| match (p.four, grouped) {
                        (Some(p4), true) => p4.call(w, &four)[t % 4],
                        _ => p.one.call(w, four[t % 4]),
                    };
                    let same = |got: f32, want: f32| {
                        if exact { got.to_bits() == want.to_bits() } else { (got - want).abs() <= 1e-5 * mag + 1e-30 }
                    };
                    for (t, a) in four.iter().enumerate() {
                        let (got, w) = (o.one.call(ws[0], a), want(ws[0], t, false));
                        prop_assert!(same(got, w), "{} {:?} {} one: {} vs {}", ty, isa, name, got, w);
                    }
                    if let Some(o4) = o.four {
                        for (t, got) in o4.call(ws[0], &four).into_iter().enumerate() {
                            prop_assert!(same(got, want(ws[0], t, true)), "{} {:?} {} four, row {}", ty, isa, name, t);
                        }
                    }
                    if let Some(r4) = o.rows4 {
                        let got = r4.call(&ws, four[1]);
                        for r in 0..4 {
                            prop_assert!(same(got[r], want(ws[r], 1, false)), "{} {:?} {} rows4, row {}", ty, isa, name, r);
                        }
                    }
                    if let Some(r16) = o.rows16 {
                        let rows = kernel_rows(ty, n, scale, 32, &mut rng);
                        let rows: Vec<&[u8]> = rows.iter().map(|r| &r[..]).collect();
                        let il = crate::quant::interleave::Interleaved::new(ty, &rows).unwrap();
                        for g in 0..2 {
                            let got = r16.call(il.group(g), four[1]);
                            for r in 0..16 {
                                let w = want(rows[16 * g + r], 1, false);
                                prop_assert!(same(got[r], w), "{} {:?} {} rows16, row {}: {} vs {}", ty, isa, name, 16 * g + r, got[r], w);
                            }
                        }
                    }
                    if let Some(tile) = o.tile {
                        let mut panel = TilePanel::default();
                        // 6 to 9 and 15: every remainder of the five-token and eight-token groups.
                        for tokens in [6, 7, 8, 9, 15] {
                            let xs: Vec<&[u8]> = (0..tokens).map(|t| four[t % 4]).collect();
                            let mut got = vec![[0f32; 4]; tokens];
                            tile.call(&ws, &xs, &mut got, &mut panel);
                            for r in 0..4 {
                                for (t, g) in got.iter().enumerate() {
                                    let w = want(ws[r], t, t < tokens / 4 * 4);
                                    prop_assert!(same(g[r], w), "{} {:?} {} tile r{} t{} of {}: {} vs {}", ty, isa, name, r, t, tokens, g[r], w);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// dequantize(quantize(x)) stays within each format's step: the bound is the largest
    /// quantization step of the block, derived from the format's bit width.
    #[test]
    fn roundtrip_error_within_format_bound(seed: u64, scale in 0.001f32..1000.0) {
        let mut rng = SplitMix(seed);
        let n = 512;
        let x: Vec<f32> = (0..n).map(|_| rng.normal(scale)).collect();
        for (ty, block, levels) in [
            (GgmlType::Q4_0, 32, 8.0), (GgmlType::Q4_1, 32, 15.0), (GgmlType::Q5_0, 32, 16.0),
            (GgmlType::Q5_1, 32, 31.0), (GgmlType::Q8_0, 32, 127.0), (GgmlType::Q8_1, 32, 127.0),
            (GgmlType::Q8_K, 256, 127.0), (GgmlType::Q4_K, 32, 15.0), (GgmlType::Q6_K, 16, 31.0),
        ] {
            let y = dequantize(ty, &quantize(ty, &x).unwrap(), n).unwrap();
            for (bx, by) in x.chunks(block).zip(y.chunks(block)) {
                let lo = bx.iter().copied().fold(0.0f32, f32::min);
                let hi = bx.iter().copied().fold(0.0f32, f32::max);
                // One full step of the block's range, plus the f16/6-bit rounding of scales.
                let step = (hi - lo) / levels;
                let bound = step * 1.1 + 1e-3 * (hi - lo);
                for (a, b) in bx.iter().zip(by) {
                    prop_assert!((a - b).abs() <= bound, "{}: {} -> {} (bound {})", ty, a, b, bound);
                }
            }
        }
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let y = dequantize(ty, &quantize(ty, &x).unwrap(), n).unwrap();
            let rel = match ty { GgmlType::F32 => 0.0, GgmlType::F16 => 1.0 / 2048.0, _ => 1.0 / 256.0 };
            for (a, b) in x.iter().zip(&y) {
                prop_assert!((a - b).abs() <= a.abs() * rel + 6e-8 * scale.min(1.0));
            }
        }
    }
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let mut out = [0f32; 32];
    assert!(dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut out).is_err());
    assert!(dequantize_row(GgmlType::Q4_K, &[0u8; 144], &mut out).is_err());
    assert!(quantize(GgmlType::Q8_0, &[0.0; 33]).is_err());
    assert!(quantize(GgmlType::Q2_K, &[0.0; 256]).is_err());
}

#[test]
fn q8_1_block_sum_matches_quants() {
    let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
    let b = quantize(GgmlType::Q8_1, &x).unwrap();
    let d = float::f16_at(&b);
    let s: i32 = b[4..36].iter().map(|&q| q as i8 as i32).sum();
    assert!((float::f16_at(&b[2..]) - d * s as f32).abs() <= (d * s as f32).abs() / 1000.0);
}

#[test]
fn round_even_small_is_round_half_to_even() {
    for i in -3000..3000 {
        let x = i as f32 * 0.25;
        assert_eq!(float::round_even_small(x), x.round_ties_even(), "{x}");
    }
    for x in [0.49999997f32, -0.49999997, 126.5, -127.5, 127.49999] {
        assert_eq!(float::round_even_small(x), x.round_ties_even(), "{x}");
    }
}

/// `quant::path` takes llama.cpp's order for each matrix and batch size: repacked for a
/// format the build repacks when the rows are a multiple of 8 (every batch size), else the
/// tiled order for K-quant batches from `TILED_MIN_BATCH` rows, else vec-dot.
#[test]
fn path_takes_llamas_order_for_each_matrix_and_batch() {
    let id = |o: &Order| format!("{o:?}");
    for isa in Isa::available() {
        for ty in GgmlType::WEIGHTS {
            let k = FormatKernels::of(ty, isa).unwrap();
            for flavor in Flavor::ALL {
                for rows in [8, 12, 64] {
                    let m = MatrixKernels::new(ty, rows, isa, flavor).unwrap();
                    let repacked = rows % 8 == 0 && ty.format().repacked.contains(&flavor);
                    for n in [1, 2, 4, 7, 8, 9, 64] {
                        let want = if repacked {
                            k.repacked.unwrap()
                        } else if ty.format().family == Family::KQuant && n >= TILED_MIN_BATCH {
                            k.tiled.unwrap()
                        } else {
                            k.vec
                        };
                        assert_eq!(
                            id(m.for_batch(n)),
                            id(&want),
                            "{ty} {isa:?} {flavor:?} rows {rows} n {n}"
                        );
                    }
                }
            }
        }
    }
    // Q2_K is repacked by the AVX-512 build only; Q6_K never.
    assert!(is_repacked(GgmlType::Q2_K, 64, Flavor::Avx512));
    assert!(!is_repacked(GgmlType::Q2_K, 64, Flavor::Avx2));
    assert!(!is_repacked(GgmlType::Q4_K, 12, Flavor::Avx2));
    assert!(!is_repacked(GgmlType::Q6_K, 64, Flavor::Avx512));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Q8_0/Q8_1 activation blocks quantize to the same bytes and sums whichever code path
    /// the CPU takes (vectors with AVX2, portable otherwise): random blocks at any scale,
    /// with exact zeros, ties and, now and then, a NaN or an infinity.
    #[test]
    fn q8_blocks_equal_portable_code(seed: u64, scale in -30i32..30, special in 0usize..40) {
        let mut rng = SplitMix(seed);
        let mut x: Vec<f32> = (0..32).map(|_| rng.normal(2f32.powi(scale))).collect();
        x[3] = 0.0;
        x[7] = -x[9];
        if special < 32 && seed % 3 == 0 {
            x[special] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][(seed % 9 / 3) as usize];
        }
        let mut fast = [0u8; 32];
        let mut slow = [0u8; 32];
        let (d0, s0) = legacy::q8_block_for_tests(&x, &mut fast);
        let (d1, s1) = legacy::q8_block_portable(&x, &mut slow);
        prop_assert_eq!(fast, slow);
        prop_assert_eq!(d0.to_bits(), d1.to_bits());
        prop_assert_eq!(s0, s1);
    }
}
