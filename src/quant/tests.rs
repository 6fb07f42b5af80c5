use super::synth::{SplitMix, random_row};
use super::*;
use proptest::prelude::*;

const WEIGHTS: [GgmlType; 13] = GgmlType::WEIGHTS;

/// Fused dot product against the f64 dot of the dequantized rows: the kernels compute the
/// same sum, apart from f32 rounding and (for Q8_1) the f16 rounding of the stored block sum.
#[test]
fn fused_dot_equals_dot_of_dequantized_rows() {
    let mut rng = SplitMix(7);
    for ty in WEIGHTS {
        let act = vec_dot_type(ty).unwrap();
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
            for k in Kernel::available() {
                let got = dot_fn(ty, k).unwrap()(&w, &a) as f64;
                let tol = 1e-5 * mag + s_term + 1e-6;
                assert!(
                    (got - exact).abs() <= tol,
                    "{ty} {k:?}: {got} vs {exact} (tol {tol})"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Every kernel of every path llama.cpp takes (vec-dot, repacked gemv and gemm, tiled),
    /// in both flavours, equals its portable emulation bit for bit for the block formats
    /// (the integer parts are exact in both and the float steps are the same operations in
    /// the same order); the float formats, whose order pv does not pin, within 1e-5 of the
    /// sum of term magnitudes.
    #[test]
    fn simd_equals_portable_order(seed: u64, blocks in 1usize..5, scale in 0.01f32..100.0) {
        let mut rng = SplitMix(seed);
        for ty in WEIGHTS {
            let n = blocks * 256;
            let act = vec_dot_type(ty).unwrap();
            let w = random_row(ty, n, scale, &mut rng);
            let acts: Vec<Vec<u8>> = (0..4)
                .map(|_| {
                    let x: Vec<f32> = (0..n).map(|_| rng.normal(scale)).collect();
                    quantize(act, &x).unwrap()
                })
                .collect();
            let a = &acts[0];
            let four = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
            let wf = dequantize(ty, &w, n).unwrap();
            let af = dequantize(act, a, n).unwrap();
            let mag: f32 = wf.iter().zip(&af).map(|(p, q)| (p * q).abs()).sum();
            let exact = !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
            for flavor in Flavor::ALL {
                for rows in [8, 12] {
                    let s = matrix_kernels(ty, rows, Kernel::Scalar, flavor).unwrap();
                    for k in Kernel::available() {
                        let m = matrix_kernels(ty, rows, k, flavor).unwrap();
                        let (v, r) = ((m.dot)(&w, a), (s.dot)(&w, a));
                        if exact {
                            prop_assert_eq!(v.to_bits(), r.to_bits(), "{} {:?} {:?} dot: {} vs {}", ty, k, flavor, v, r);
                        } else {
                            prop_assert!((v - r).abs() <= 1e-5 * mag + 1e-30, "{} {:?}: {} vs {}", ty, k, v, r);
                        }
                        prop_assert_eq!(m.dot_batch.is_some(), s.dot_batch.is_some());
                        if let (Some(b), Some(sb)) = (m.dot_batch, s.dot_batch) {
                            prop_assert_eq!(b(&w, a).to_bits(), sb(&w, a).to_bits(), "{} {:?} batch", ty, flavor);
                        }
                        // The four-row kernel, where there is one, is the scalar path's
                        // order for each row (its own order when repacked).
                        let want = s.dot4.map_or_else(|| four.map(|a| (s.dot)(&w, a)), |d4| d4(&w, &four));
                        if let Some(d4) = m.dot4 {
                            let got = d4(&w, &four);
                            for t in 0..4 {
                                if exact {
                                    prop_assert_eq!(got[t].to_bits(), want[t].to_bits(), "{} {:?} dot4 row {}", ty, flavor, t);
                                }
                            }
                        }
                        if let (Some(b4), Some(sb)) = (m.dot_batch4, s.dot_batch) {
                            let got = b4(&w, &four);
                            for t in 0..4 {
                                prop_assert_eq!(got[t].to_bits(), sb(&w, four[t]).to_bits(), "{} {:?} batch4 row {}", ty, flavor, t);
                            }
                        }
                        if let Some(r4) = m.dot_rows4 {
                            let ws: Vec<Vec<u8>> = (0..4).map(|_| random_row(ty, n, scale, &mut rng)).collect();
                            let got = r4(&[&ws[0][..], &ws[1][..], &ws[2][..], &ws[3][..]], a);
                            for r in 0..4 {
                                let want = (s.dot)(&ws[r], a);
                                if exact {
                                    prop_assert_eq!(got[r].to_bits(), want.to_bits(), "{} {:?} rows4 row {}", ty, flavor, r);
                                }
                            }
                        }
                        // The tile, where there is one, is `matmul`'s per-token path: from
                        // TILED_MIN_BATCH tokens the batch order where the format has one,
                        // otherwise whole groups of four tokens through the four-token order
                        // and the rest one by one (6 and 14 tokens: below and above the batch
                        // threshold, with tokens left over after the groups).
                        if let Some(tile) = m.dot_tile {
                            let ws: Vec<Vec<u8>> = (0..4).map(|_| random_row(ty, n, scale, &mut rng)).collect();
                            let ws = [&ws[0][..], &ws[1][..], &ws[2][..], &ws[3][..]];
                            for tokens in [6, 14] {
                                let xs: Vec<&[u8]> = (0..tokens).map(|t| &acts[t % 4][..]).collect();
                                let mut got = vec![[0f32; 4]; xs.len()];
                                tile(&ws, &xs, &mut got, &mut TilePanel::default());
                                let batch = s.dot_batch.filter(|_| tokens >= TILED_MIN_BATCH);
                                for (r, wr) in ws.iter().enumerate() {
                                    for (t, x) in xs.iter().enumerate() {
                                        let want = match (batch, s.dot4) {
                                            (Some(b), _) => b(wr, x),
                                            (None, Some(d4)) if t < tokens / 4 * 4 => d4(wr, &four)[t % 4],
                                            _ => (s.dot)(wr, x),
                                        };
                                        prop_assert_eq!(got[t][r].to_bits(), want.to_bits(), "{} {:?} tile r{} t{} of {}", ty, flavor, r, t, tokens);
                                    }
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The four-row kernels (four activations or four weight rows) give each row exactly
    /// what the single-row kernel gives.
    #[test]
    fn multi_row_kernels_equal_dot_bit_for_bit(seed: u64, blocks in 1usize..40) {
        let mut rng = SplitMix(seed);
        for ty in GgmlType::WEIGHTS {
            for k in Kernel::available() {
                let Some(dot4) = dot4_fn(ty, k) else { continue };
                let n = blocks * 256;
                let w = random_row(ty, n, 1.0, &mut rng);
                let acts: Vec<Vec<u8>> = (0..4)
                    .map(|_| quantize(vec_dot_type(ty).unwrap(), &(0..n).map(|_| rng.normal(1.0)).collect::<Vec<_>>()).unwrap())
                    .collect();
                let got = dot4(&w, &[&acts[0], &acts[1], &acts[2], &acts[3]]);
                for (t, a) in acts.iter().enumerate() {
                    prop_assert_eq!(got[t].to_bits(), dot_fn(ty, k).unwrap()(&w, a).to_bits());
                }
                let rows: Vec<Vec<u8>> = (0..4).map(|_| random_row(ty, n, 1.0, &mut rng)).collect();
                let rows4 = dot_rows4_fn(ty, k).expect("formats with dot4 have dot_rows4");
                let got = rows4(&[&rows[0], &rows[1], &rows[2], &rows[3]], &acts[0]);
                for (r, wr) in rows.iter().enumerate() {
                    prop_assert_eq!(got[r].to_bits(), dot_fn(ty, k).unwrap()(wr, &acts[0]).to_bits());
                }
                for isa in TileIsa::available() {
                    let Some(rows4) = dot_rows4_fn_in(ty, isa) else { continue };
                    let got = rows4(&[&rows[0], &rows[1], &rows[2], &rows[3]], &acts[1]);
                    for (r, wr) in rows.iter().enumerate() {
                        prop_assert_eq!(got[r].to_bits(), dot_fn(ty, k).unwrap()(wr, &acts[1]).to_bits(), "{} {:?} rows4", ty, isa);
                    }
                }
                // Every tile kernel this CPU runs (AVX2, AVX-512 VNNI, AVX-VNNI), on weight
                // rows of arbitrary bytes but for the scales (quants of -128 included).
                for isa in TileIsa::available() {
                    let Some(tile) = tile_fn_in(ty, isa) else { continue };
                    let mut raw = rows.clone();
                    let wb = ty.row_bytes(32).unwrap();
                    for row in &mut raw {
                        for block in row.chunks_exact_mut(wb) {
                            let keep = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) { 4 } else { 2 };
                            for b in &mut block[keep..] {
                                *b = rng.next_u64() as u8;
                            }
                        }
                    }
                    // Fifteen tokens: whole groups of every kernel's size, then one at a time.
                    let xs: Vec<&[u8]> = (0..15).map(|t| &acts[t % 4][..]).collect();
                    let mut got = vec![[0f32; 4]; xs.len()];
                    tile(&[&raw[0], &raw[1], &raw[2], &raw[3]], &xs, &mut got, &mut TilePanel::default());
                    for (r, wr) in raw.iter().enumerate() {
                        for (t, a) in xs.iter().enumerate() {
                            let want = dot_fn(ty, k).unwrap()(wr, a);
                            prop_assert_eq!(got[t][r].to_bits(), want.to_bits(), "{} {:?} r{} t{}", ty, isa, r, t);
                        }
                    }
                }
            }
        }
    }
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
