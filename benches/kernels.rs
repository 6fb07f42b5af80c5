//! Throughput of every fused dot product, in GB/s of weight data: one 4096-value row against
//! quantized activations, in llama.cpp's vec-dot order; and of the batched products' tiles
//! (four weight rows by 64 tokens), in multiply-adds per second; in every instruction set
//! the CPU has.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pv::quant::GgmlType;
use pv::quant::synth::{SplitMix, random_row};
use pv::quant::{FormatKernels, Isa, TilePanel, quantize};

fn kernels(c: &mut Criterion) {
    let n = 4096;
    let mut rng = SplitMix(1);
    let mut g = c.benchmark_group("fused_dot");
    for ty in GgmlType::WEIGHTS {
        let w = random_row(ty, n, 1.0, &mut rng);
        let x: Vec<f32> = (0..n).map(|_| rng.normal(1.0)).collect();
        let a = quantize(ty.vec_dot_type().unwrap(), &x).unwrap();
        g.throughput(Throughput::Bytes(w.len() as u64));
        // AVX-VNNI and AVX-512 VNNI share AVX2's single-row kernels.
        for isa in Isa::available().into_iter().take(2) {
            let f = FormatKernels::of(ty, isa).unwrap().vec.one;
            g.bench_function(format!("{}/{}", ty.name(), isa.name()), |b| {
                b.iter(|| f.call(std::hint::black_box(&w), std::hint::black_box(&a)))
            });
        }
    }
    g.finish();
}

fn tiles(c: &mut Criterion) {
    let n = 576; // SmolLM2's width: the tile's whole row stays in L1, as in a real product
    let mut rng = SplitMix(2);
    let tokens = 64; // a pp64 batch
    let mut g = c.benchmark_group("tile_4x64");
    g.throughput(Throughput::Elements(4 * tokens as u64 * n as u64));
    for ty in GgmlType::WEIGHTS {
        // Only the formats with tile kernels (the 32-value ones; 576 is no multiple of 256).
        let kernels: Vec<_> = Isa::available()
            .into_iter()
            .filter_map(|isa| Some((isa, FormatKernels::of(ty, isa)?.vec.tile?)))
            .collect();
        if kernels.is_empty() {
            continue;
        }
        let w: Vec<Vec<u8>> = (0..4).map(|_| random_row(ty, n, 1.0, &mut rng)).collect();
        let a: Vec<Vec<u8>> = (0..tokens)
            .map(|_| {
                let x: Vec<f32> = (0..n).map(|_| rng.normal(1.0)).collect();
                quantize(ty.vec_dot_type().unwrap(), &x).unwrap()
            })
            .collect();
        let ws = [&w[0][..], &w[1], &w[2], &w[3]];
        let xs: Vec<&[u8]> = a.iter().map(|r| &r[..]).collect();
        let mut out = vec![[0f32; 4]; tokens];
        let mut panel = TilePanel::default();
        for (isa, f) in kernels {
            g.bench_function(format!("{}/{isa:?}", ty.name()), |b| {
                b.iter(|| f.call(std::hint::black_box(&ws), &xs, &mut out, &mut panel))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, kernels, tiles);
criterion_main!(benches);
