//! `pv bench MODEL`: prompt-processing and generation speed, measured the way llama-bench
//! measures them (pp: one batch of N tokens; tg: N single-token steps from an empty context).

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::{CliError, Format, emit, print_json};
use crate::model::{LogitsFor, NoopObserver, OwnedQuantizedModel, with_threads};
use crate::quant::{Isa, synth::SplitMix};
use crate::trace::{TraceOptions, TracedForward};

/// Arguments of `pv bench`.
#[derive(clap::Args)]
#[command(
    after_help = "Compare with llama.cpp: llama-bench -m MODEL -t 2 -p 64 -n 32\n\nExample:\n  pv bench models/SmolLM2-135M-Instruct.Q4_1.gguf --threads 2 --format json"
)]
pub struct Args {
    /// The GGUF model to measure.
    model: PathBuf,
    /// Tokens in the prompt-processing batch (pp).
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// Tokens generated one at a time (tg).
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    /// Timed repetitions of each test (after one warm-up).
    #[arg(long, short = 'r', default_value_t = 3)]
    repetitions: usize,
    /// Also measure the traced forward pass against the plain one on the prompt batch
    /// (both computing every position's logits): the cost of statistics.
    #[arg(long)]
    trace_overhead: bool,
    /// Also measure this machine's memory read bandwidth (the threads summing a 1 GiB
    /// buffer, best of three) and report generation as a share of it: each generated token
    /// reads every weight matrix once, so tg x (weight bytes per token) cannot exceed it.
    /// And its int8 peak (the widest int8 dot-product instruction of the kernels in use,
    /// back to back on every thread) with prompt processing as a share of it: each prompt
    /// token multiplies every weight matrix once.
    #[arg(long)]
    roofline: bool,
    /// Which llama.cpp build's arithmetic to reproduce (its orders decide which kernels
    /// run: an AVX2 build repacks Q4_0 and Q4_K, an AVX-512 build Q4_0, Q4_K and Q2_K).
    /// Measure against an AVX2 build of llama.cpp with `--flavor avx2`, and with
    /// `PV_CPU=avx2` in the environment to keep pv to the kernels an AVX2 CPU has.
    #[arg(long, value_enum, default_value_t)]
    flavor: crate::quant::Flavor,
    /// Output format: text or json (`pp_tokens_per_s`, `tg_tokens_per_s` and the settings).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn mean_std(x: &[f64]) -> (f64, f64) {
    let m = x.iter().sum::<f64>() / x.len() as f64;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64;
    (m, v.sqrt())
}

/// Runs `pv bench`.
pub fn run(a: Args) -> Result<(), CliError> {
    if a.prompt_tokens == 0 || a.gen_tokens == 0 || a.repetitions == 0 {
        return Err(CliError::input(
            "--prompt-tokens, --gen-tokens and --repetitions must be at least 1",
        ));
    }
    let mut model = OwnedQuantizedModel::open(&a.model)?;
    model.flavor = a.flavor;
    let vocab = model.config.vocab_size as u64;
    let mut rng = SplitMix(42);
    let prompt: Vec<u32> = (0..a.prompt_tokens)
        .map(|_| (rng.next_u64() % vocab) as u32)
        .collect();
    let threads = if a.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.threads
    };

    let (pp, tg) = with_threads(threads, || -> Result<_, CliError> {
        let pp_once = || -> Result<f64, CliError> {
            let mut cache = model.new_cache();
            let t = Instant::now();
            model.forward_with_cache(&prompt, &mut cache, LogitsFor::Last, &mut NoopObserver)?;
            Ok(a.prompt_tokens as f64 / t.elapsed().as_secs_f64())
        };
        let tg_once = || -> Result<f64, CliError> {
            let mut cache = model.new_cache();
            let t = Instant::now();
            for i in 0..a.gen_tokens {
                model.forward_with_cache(
                    &[prompt[i % prompt.len()]],
                    &mut cache,
                    LogitsFor::Last,
                    &mut NoopObserver,
                )?;
            }
            Ok(a.gen_tokens as f64 / t.elapsed().as_secs_f64())
        };
        pp_once()?;
        tg_once()?;
        let pp: Vec<f64> = (0..a.repetitions)
            .map(|_| pp_once())
            .collect::<Result<_, _>>()?;
        let tg: Vec<f64> = (0..a.repetitions)
            .map(|_| tg_once())
            .collect::<Result<_, _>>()?;
        Ok((mean_std(&pp), mean_std(&tg)))
    })?;
    let overhead = if a.trace_overhead {
        Some(with_threads(threads, || -> Result<f64, CliError> {
            let opts = TraceOptions::default();
            let time = |traced: bool| -> Result<f64, CliError> {
                let t = Instant::now();
                if traced {
                    model.forward_traced_with(&prompt, &opts)?;
                } else {
                    model.forward(&prompt)?;
                }
                Ok(t.elapsed().as_secs_f64())
            };
            time(false)?;
            time(true)?;
            // Interleaved, so drift on a shared machine hits both alike; medians.
            let (mut plain, mut traced) = (Vec::new(), Vec::new());
            for _ in 0..a.repetitions.max(5) {
                plain.push(time(false)?);
                traced.push(time(true)?);
            }
            plain.sort_by(f64::total_cmp);
            traced.sort_by(f64::total_cmp);
            Ok(traced[traced.len() / 2] / plain[plain.len() / 2])
        })?)
    } else {
        None
    };

    // The instruction set whose kernel table the engine runs.
    let isa = Isa::best().name();
    let weight_bytes = weight_bytes_per_token(&model);
    let roofline = if a.roofline {
        let gbs = with_threads(threads, read_bandwidth);
        let share = tg.0 * weight_bytes as f64 / (gbs * 1e9);
        Some((gbs, share))
    } else {
        None
    };
    // Prompt processing against the int8 arithmetic peak: each prompt token multiplies
    // every weight matrix but the embedding (and the output projection, which only the
    // last token's logits need) once.
    let macs = macs_per_prompt_token(&model);
    let peak = if a.roofline {
        crate::quant::peak::int8_macs_per_s(Isa::best(), threads)
            .map(|p| (p, pp.0 * macs as f64 / p))
    } else {
        None
    };
    match a.format {
        Format::Json => print_json(&json!({
            "model": a.model,
            "pp_tokens_per_s": pp.0,
            "pp_std": pp.1,
            "tg_tokens_per_s": tg.0,
            "tg_std": tg.1,
            "prompt_tokens": a.prompt_tokens,
            "gen_tokens": a.gen_tokens,
            "threads": threads,
            "repetitions": a.repetitions,
            "isa": isa,
            "flavor": a.flavor,
            "weight_bytes_per_token": weight_bytes,
            "read_gb_per_s": roofline.map(|r| r.0),
            "tg_share_of_read_bandwidth": roofline.map(|r| r.1),
            "int8_macs_per_prompt_token": macs,
            "int8_peak_macs_per_s": peak.map(|p| p.0),
            "pp_share_of_int8_peak": peak.map(|p| p.1),
            "trace_overhead": overhead,
        })),
        Format::Text => emit(
            &(format!(
                "{} ({} threads, {} kernels, {:?} flavor, {} repetitions)\n  pp{:<4} {:>9.2} ± {:.2} tokens/s\n  tg{:<4} {:>9.2} ± {:.2} tokens/s\n",
                a.model.display(),
                threads,
                isa,
                a.flavor,
                a.repetitions,
                a.prompt_tokens,
                pp.0,
                pp.1,
                a.gen_tokens,
                tg.0,
                tg.1
            ) + &overhead.map_or(String::new(), |r| {
                format!(
                    "  traced/plain forward time on pp{}: {r:.3}x\n",
                    a.prompt_tokens
                )
            }) + &roofline.map_or(String::new(), |(gbs, share)| {
                format!(
                    "  memory read {gbs:.1} GB/s; tg reads {:.1} MB of weights a token: {:.0}% of it\n",
                    weight_bytes as f64 / 1e6,
                    100.0 * share
                )
            }) + &peak.map_or(String::new(), |(p, share)| {
                format!(
                    "  int8 peak {:.0} G multiply-adds/s ({isa}); pp does {:.1} M a token: {:.0}% of it\n",
                    p / 1e9,
                    macs as f64 / 1e6,
                    100.0 * share
                )
            })),
        ),
    }
}

/// Bytes of weights one generated token reads: every tensor but the token embedding, of
/// which it reads one row (unless the output projection is the embedding itself).
fn weight_bytes_per_token(model: &OwnedQuantizedModel) -> u64 {
    let tensors = &model.file().tensors;
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    tensors
        .iter()
        .filter(|t| tied || t.name != "token_embd.weight")
        .map(|t| t.size as u64)
        .sum()
}

/// Multiply-accumulates one prompt token's weight products take: the elements of every
/// matrix but the token embedding and the output projection (a tied output is the
/// embedding).
fn macs_per_prompt_token(model: &OwnedQuantizedModel) -> u64 {
    model
        .file()
        .tensors
        .iter()
        .filter(|t| t.dims.len() == 2 && t.name != "token_embd.weight" && t.name != "output.weight")
        .map(|t| t.dims.iter().product::<u64>())
        .sum()
}

/// This machine's memory read bandwidth in GB/s with the current pool's threads: the
/// best of three passes summing a 1 GiB buffer (far beyond any cache), each thread its
/// own contiguous part.
fn read_bandwidth() -> f64 {
    use rayon::prelude::*;
    let buf = vec![1u64; 1 << 27];
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let chunk = buf.len().div_ceil(rayon::current_num_threads());
        let sum: u64 = buf
            .par_chunks(chunk)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .sum();
        std::hint::black_box(sum);
        best = best.max((buf.len() * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}
