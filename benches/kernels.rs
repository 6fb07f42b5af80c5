//! Throughput of every fused dot product, in GB/s of weight data: one 4096-value row against
//! quantized activations, scalar and SIMD.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pv::gguf::GgmlType;
use pv::quant::synth::{SplitMix, random_row};
use pv::quant::{Kernel, dot_fn, quantize, vec_dot_type};

fn kernels(c: &mut Criterion) {
    let n = 4096;
    let mut rng = SplitMix(1);
    let mut g = c.benchmark_group("fused_dot");
    for ty in GgmlType::WEIGHTS {
        let w = random_row(ty, n, 1.0, &mut rng);
        let x: Vec<f32> = (0..n).map(|_| rng.normal(1.0)).collect();
        let a = quantize(vec_dot_type(ty).unwrap(), &x).unwrap();
        g.throughput(Throughput::Bytes(w.len() as u64));
        for k in Kernel::available() {
            let f = dot_fn(ty, k).unwrap();
            g.bench_function(format!("{}/{}", ty.name(), k.name()), |b| {
                b.iter(|| f(std::hint::black_box(&w), std::hint::black_box(&a)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
