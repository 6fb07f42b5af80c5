//! A seeded structural fuzzer, on stable Rust: mutated GGUF files, APR files (bytes, and
//! metadata rebuilt with boundary values), YAML contracts and evidence records go through
//! pv's own readers and engines in-process. Every case must end in a clean `Ok` or a typed
//! `Err`: no panic, and no allocation beyond a ceiling proportional to the input (a counting
//! allocator measures each case's peak). Random text goes through both tokenizers (byte-level
//! BPE and SentencePiece), which must give ids inside the vocabulary and decode text without
//! special tokens back to itself.
//!
//! CI runs it for `PV_FUZZ_SECONDS` (default 40) split across the six targets;
//! `PV_FUZZ_CASES=N` runs exactly N cases per target instead (`scripts/fuzz.sh`), and
//! `PV_FUZZ_SEED` picks the seed. The counts are printed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pv::apr::{AprFile, AprWriter};
use pv::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use pv::quant::synth::SplitMix;

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on to System.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from this allocator (hence System) with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: ptr and layout are the caller's, valid for System as for dealloc.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What one case may allocate: a fixed allowance for the engines' buffers plus a multiple
/// of the input (a valid model's weights decode to f32: at most 8x a 4-bit file).
fn ceiling(input_len: usize) -> usize {
    (64 << 20) + 16 * input_len
}

/// Outcome counts of one target.
#[derive(Default)]
struct Tally {
    cases: u64,
    accepted: u64,
    refused: u64,
    peak: usize,
}

/// Runs `case` on `input` under the panic and memory checks.
fn run_case(
    target: &str,
    seed: u64,
    input_len: usize,
    tally: &mut Tally,
    case: impl FnOnce() -> bool,
) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = catch_unwind(AssertUnwindSafe(case));
    let used = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    match r {
        Ok(true) => tally.accepted += 1,
        Ok(false) => tally.refused += 1,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{target} case seed {seed}: panicked: {msg}");
        }
    }
    assert!(
        used <= ceiling(input_len),
        "{target} case seed {seed}: allocated {used} bytes for a {input_len}-byte input"
    );
    tally.peak = tally.peak.max(used);
    tally.cases += 1;
}

/// Values that break counts and sizes.
const BOUNDARY: [u64; 10] = [
    0,
    1,
    2,
    63,
    255,
    1 << 24,
    (1 << 32) - 1,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// Structural mutations of a byte string, confined to `hot` bytes at the front (the header,
/// where the structure is) except for truncation: flips, boundary values at known count
/// fields or anywhere, splices, insertions, and truncation.
fn mutate(rng: &mut SplitMix, bytes: &mut Vec<u8>, hot: usize, counts: &[usize]) {
    let n = 1 + rng.next_u64() % 4;
    for _ in 0..n {
        let hot = hot.min(bytes.len()).max(1);
        let at = (rng.next_u64() % hot as u64) as usize;
        match rng.next_u64() % 7 {
            0 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << (rng.next_u64() % 8);
                }
            }
            1 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b = rng.next_u64() as u8;
                }
            }
            2 | 3 => {
                let v = BOUNDARY[(rng.next_u64() % BOUNDARY.len() as u64) as usize];
                let at = match counts {
                    [] => at,
                    c if rng.next_u64().is_multiple_of(2) => {
                        c[(rng.next_u64() % c.len() as u64) as usize]
                    }
                    _ => at,
                };
                let width = if rng.next_u64().is_multiple_of(2) {
                    8
                } else {
                    4
                };
                if at + width <= bytes.len() {
                    bytes[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                }
            }
            4 => {
                let len = (rng.next_u64() % 32) as usize;
                let from = (rng.next_u64() % hot as u64) as usize;
                let chunk: Vec<u8> = bytes[from..(from + len).min(bytes.len())].to_vec();
                let end = (at + chunk.len()).min(bytes.len());
                bytes.splice(at..end, chunk);
            }
            5 => {
                let len = (rng.next_u64() % 16) as usize;
                let ins: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                bytes.splice(at..at, ins);
            }
            _ => {
                let cut = (rng.next_u64() % (bytes.len() as u64 + 1)) as usize;
                bytes.truncate(cut);
            }
        }
    }
}

/// Tokens YAML treats specially, spliced into contract text.
const YAML_TOKENS: [&str; 14] = [
    "&a ",
    "*a",
    "<<: *a",
    "{",
    "[",
    "]",
    "}",
    ": ",
    "- ",
    "\n  ",
    "!!binary ",
    "'",
    "\"",
    "~",
];

fn mutate_text(rng: &mut SplitMix, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    if rng.next_u64().is_multiple_of(2) {
        for _ in 0..1 + rng.next_u64() % 3 {
            let at = (rng.next_u64() % (bytes.len() as u64 + 1)) as usize;
            let t = YAML_TOKENS[(rng.next_u64() % YAML_TOKENS.len() as u64) as usize];
            bytes.splice(at..at, t.bytes());
        }
    } else {
        let len = bytes.len();
        mutate(rng, &mut bytes, len, &[]);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A hyper-parameter or tokenizer field set to a value that breaks it.
fn hostile_json(rng: &mut SplitMix) -> serde_json::Value {
    use serde_json::json;
    match rng.next_u64() % 9 {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(BOUNDARY[(rng.next_u64() % BOUNDARY.len() as u64) as usize]),
        3 => json!(1e300),
        4 => json!(-0.0),
        5 => json!(null),
        6 => json!("7"),
        7 => json!([]),
        _ => json!(63),
    }
}

/// How many targets share the time budget.
const TARGETS: usize = 6;

fn budget() -> (Option<u64>, Duration) {
    let cases = std::env::var("PV_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok());
    let secs: f64 = std::env::var("PV_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40.0);
    (cases, Duration::from_secs_f64(secs / TARGETS as f64))
}

/// Runs `one(seed)` until the budget for a target is spent.
fn drive(target: &str, seed0: u64, mut one: impl FnMut(u64, &mut Tally)) -> Tally {
    let (cases, time) = budget();
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut i = 0u64;
    while match cases {
        Some(n) => i < n,
        None => start.elapsed() < time,
    } {
        one(seed0.wrapping_add(i), &mut tally);
        i += 1;
    }
    // Written to the stderr handle itself, which the test harness does not capture: CI's log
    // shows the counts of every run.
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {target}: {} cases ({} accepted, {} refused with a typed error), peak {:.1} MiB, {:.1} s",
        tally.cases,
        tally.accepted,
        tally.refused,
        tally.peak as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64()
    );
    tally
}

/// A loaded model's forward pass over two tokens: errors are fine, panics are not.
fn run_gguf(file: GgufFile) -> bool {
    let _ = pv::model::ModelConfig::try_from(&file);
    let _ = pv::tokenizer::Tokenizer::from_gguf(&file);
    match pv::model::OwnedQuantizedModel::from_mapped(file) {
        Ok(m) => m.forward(&[1, 2]).is_ok(),
        Err(_) => false,
    }
}

/// `apr`'s tensors under names `rename` gives (in any order: the writer sorts them) with
/// `meta`; a rename that collides is left out.
fn rebuild_apr(
    apr: &AprFile,
    meta: &serde_json::Value,
    rename: impl Fn(&str) -> String,
) -> Vec<u8> {
    let mut w = AprWriter::new(meta).unwrap();
    let mut seen = std::collections::HashSet::new();
    for t in &apr.tensors {
        let name = rename(&t.name);
        if seen.insert(name.clone()) {
            w.tensor(&name, t.dtype, &t.dims, apr.tensor_data(t).to_vec())
                .unwrap();
        }
    }
    w.to_bytes().unwrap()
}

fn run_apr(file: AprFile) -> bool {
    match pv::model::AprTransformer::load(file) {
        Ok(m) => {
            let _ = m
                .tokenizer
                .as_ref()
                .map(pv::tokenizer::Tokenizer::from_spec);
            pv::trace::TracedForward::forward_traced(&m, &[1, 2]).is_ok()
        }
        Err(_) => false,
    }
}

/// A small Llama-2-style SentencePiece tokenizer: control tokens, every byte, a few pieces.
fn spm_tokenizer() -> pv::tokenizer::Tokenizer {
    let pieces = ["▁", "a", "b", "ab", "▁a", "▁ab", "ba", "é", "▁▁"];
    let scored: Vec<(&str, f32)> = pieces
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, -(i as f32) / 100.0 - 2.6))
        .collect();
    let (file, _) = common::spm_vocabulary(&scored);
    pv::tokenizer::Tokenizer::from_gguf(&file).unwrap()
}

#[test]
fn hostile_inputs_never_panic_or_allocate_out_of_proportion() {
    let seed: u64 = std::env::var("PV_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    pv::model::with_threads(1, || {
        let gguf = common::synthetic_model("llama", GgmlType::Q4_1, None);
        let gguf_bytes = gguf.bytes().to_vec();
        let gguf_hot = gguf.data_offset;
        let apr_bytes = pv::model::gguf_to_apr(&gguf, pv::model::AprDtype::F32)
            .unwrap()
            .to_bytes()
            .unwrap();

        // GGUF bytes: header, metadata and tensor table mutated.
        let tally = drive("gguf-bytes", seed, |s, tally| {
            let mut rng = SplitMix(s);
            let mut b = gguf_bytes.clone();
            mutate(&mut rng, &mut b, gguf_hot, &[8, 16]);
            let len = b.len();
            run_case("gguf-bytes", s, len, tally, || {
                match GgufFile::from_bytes(b) {
                    Ok(f) => run_gguf(f),
                    Err(_) => false,
                }
            });
        });

        // GGUF metadata values replaced by hostile ones, the file rebuilt consistently.
        reaches_past_the_first_check("gguf-bytes", &tally);
        let tally = drive("gguf-metadata", seed, |s, tally| {
            let mut rng = SplitMix(s);
            let mut meta = gguf.metadata.clone();
            let i = (rng.next_u64() % meta.len() as u64) as usize;
            let v = BOUNDARY[(rng.next_u64() % BOUNDARY.len() as u64) as usize];
            meta[i].1 = match rng.next_u64() % 5 {
                0 => Value::U32(v as u32),
                1 => Value::U64(v),
                2 => Value::F32(f32::from_bits(v as u32)),
                3 => Value::I32(-(v as i32).abs()),
                _ => Value::array(pv::gguf::ValueType::String, vec![]),
            };
            let mut w = GgufWriter::new();
            for (k, v) in &meta {
                w.meta(k, v.clone());
            }
            for t in &gguf.tensors {
                w.tensor(&t.name, &t.dims, t.ggml_type, gguf.tensor_data(t).to_vec())
                    .unwrap();
            }
            let b = w.to_bytes();
            let len = b.len();
            run_case(
                "gguf-metadata",
                s,
                len,
                tally,
                || match GgufFile::from_bytes(b) {
                    Ok(f) => run_gguf(f),
                    Err(_) => false,
                },
            );
        });
        reaches_past_the_first_check("gguf-metadata", &tally);

        // APR, three dialects of one model: pv's conversion (aprender's dialect, GGUF
        // names, an lm_head copy), the same weights under Hugging Face names in aprender's
        // own block formats (APR_Q8, APR_Q4) and padded K-quant rows, and a file of pv's first
        // dialect (GGML type ids). Bytes mutated (the header and footer checksums recomputed
        // most of the time, so the mutation reaches the fields; the flags set to any
        // combination of aprender's), or metadata keys set to hostile values or removed, or a
        // tensor renamed.
        let legacy = common::fixture("apr/legacy-llama.keep.apr");
        let bases: [(&str, Vec<u8>); 3] = [
            ("pv", apr_bytes.clone()),
            ("aprender-quantized", common::aprender_quantized(&gguf)),
            ("legacy", legacy),
        ];
        let parsed: Vec<AprFile> = bases
            .iter()
            .map(|(_, b)| AprFile::from_bytes(b.clone()).unwrap())
            .collect();
        for (f, (name, _)) in parsed.iter().zip(&bases) {
            assert!(
                run_apr(AprFile::from_bytes(f.bytes().to_vec()).unwrap()),
                "{name} runs"
            );
        }
        let tally = drive("apr", seed, |s, tally| {
            let mut rng = SplitMix(s);
            let which = (rng.next_u64() % bases.len() as u64) as usize;
            let (base, apr) = (&bases[which].1, &parsed[which]);
            // pv's first dialect cannot be rewritten (its Q8_0 has no aprender id): bytes only.
            let mode = if bases[which].0 == "legacy" {
                0
            } else {
                rng.next_u64() % 4
            };
            let b = match mode {
                0 | 1 => {
                    let mut b = base.clone();
                    let hot =
                        apr.tensors.iter().map(|t| t.offset).min().unwrap_or(0) as usize + 4096;
                    if rng.next_u64().is_multiple_of(3) && b.len() >= 8 {
                        let bits = (rng.next_u64() as u16) & (1 << (rng.next_u64() % 16));
                        b[6..8].copy_from_slice(&(bits | 0x0400).to_le_bytes());
                    } else {
                        mutate(&mut rng, &mut b, hot, &[8, 12, 20, 24, 32]);
                    }
                    if !rng.next_u64().is_multiple_of(5) && b.len() >= 64 && &b[..4] == b"APR\0" {
                        let mut c = crc32fast::Hasher::new();
                        c.update(&b[..40]);
                        c.update(&b[44..64]);
                        let crc = c.finalize().to_le_bytes();
                        b[40..44].copy_from_slice(&crc);
                    }
                    if !rng.next_u64().is_multiple_of(4) && b.len() >= 68 {
                        let at = b.len() - 4;
                        let crc = crc32fast::hash(&b[..at]).to_le_bytes();
                        b[at..].copy_from_slice(&crc);
                    }
                    b
                }
                2 => {
                    // A metadata value (top level in aprender's dialect, nested in pv's).
                    let mut meta = apr.metadata.clone();
                    let nested = ["hyperparameters", "tokenizer"][(rng.next_u64() % 2) as usize];
                    let obj = match meta.get_mut(nested).and_then(|v| v.as_object_mut()) {
                        Some(o) => o,
                        None => meta.as_object_mut().unwrap(),
                    };
                    let keys: Vec<String> = obj.keys().cloned().collect();
                    let k = &keys[(rng.next_u64() % keys.len() as u64) as usize];
                    if rng.next_u64().is_multiple_of(4) {
                        obj.remove(k);
                    } else {
                        obj.insert(k.clone(), hostile_json(&mut rng));
                    }
                    rebuild_apr(apr, &meta, |n| n.to_string())
                }
                _ => {
                    // One tensor renamed: to an unknown name, to the other naming's spelling
                    // of another tensor, or with a layer number spelled oddly.
                    let i = (rng.next_u64() % apr.tensors.len() as u64) as usize;
                    let victim = apr.tensors[i].name.clone();
                    let to = match rng.next_u64() % 3 {
                        0 => format!("{victim}.x"),
                        1 => apr.tensors[(i + 1) % apr.tensors.len()]
                            .name
                            .replace("blk.", "model.layers."),
                        _ => victim.replace(".0.", ".00."),
                    };
                    rebuild_apr(apr, &apr.metadata, |n| {
                        if n == victim {
                            to.clone()
                        } else {
                            n.to_string()
                        }
                    })
                }
            };
            let len = b.len();
            run_case("apr", s, len, tally, || match AprFile::from_bytes(b) {
                Ok(f) => run_apr(f),
                Err(_) => false,
            });
        });
        reaches_past_the_first_check("apr", &tally);

        // Tokenizers: random text (spaces, tabs, newlines, accents, CJK, emoji, control
        // characters, special-token texts and fragments of them) through byte-level BPE and
        // SentencePiece. Ids stay inside the vocabulary; text without '<' decodes to itself.
        let bpe = pv::tokenizer::Tokenizer::from_gguf(&gguf).unwrap();
        let spm = spm_tokenizer();
        const PIECES: [&str; 16] = [
            "a",
            "b",
            "ab",
            " ",
            "  ",
            "\t",
            "\n",
            "é",
            "東",
            "🙂",
            "\u{1}",
            "<s>",
            "</s>",
            "<|im_start|>",
            "<|im_",
            "9",
        ];
        drive("tokenizer", seed, |s, tally| {
            let mut rng = SplitMix(s);
            let n = rng.next_u64() % 24;
            let text: String = (0..n)
                .map(|_| PIECES[(rng.next_u64() % PIECES.len() as u64) as usize])
                .collect();
            let len = text.len();
            run_case("tokenizer", s, len, tally, || {
                // The synthetic BPE vocabulary spells only printable ASCII and the space (a
                // real byte-level vocabulary has all 256 bytes); SentencePiece falls back to
                // bytes for anything.
                let ascii = text.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
                for (t, lossless) in [(&bpe, ascii), (&spm, true)] {
                    let ids = t.encode(&text).unwrap();
                    assert!(
                        ids.iter().all(|&id| (id as usize) < t.vocab_size()),
                        "{text:?}: {ids:?}"
                    );
                    let back = t.decode(&ids).unwrap();
                    if lossless && !text.contains('<') {
                        assert_eq!(back, text, "round trip of {text:?} via {ids:?}");
                    }
                    for &id in &ids {
                        let _ = t.piece(id);
                    }
                }
                true
            });
        });

        // YAML contracts.
        let contract = std::fs::read_to_string(
            common::root().join("contracts/trace-ffn-sub-block-gguf-v1.yaml"),
        )
        .unwrap();
        let tally = drive("contract", seed, |s, tally| {
            let mut rng = SplitMix(s);
            let text = mutate_text(&mut rng, &contract);
            let len = text.len();
            run_case("contract", s, len, tally, || {
                pv::contract::parse_text("fuzz.yaml", &text).is_ok()
            });
        });
        reaches_past_the_first_check("contract", &tally);

        // Evidence records: the envelope (parsed, verified against the repository's keys) and
        // the statement inside (parsed, then judged by its checker as verify would).
        let record_path = common::root().join("evidence/trace-ffn-sub-block-gguf-v1/FFN-GGUF-003");
        let record = std::fs::read_dir(&record_path)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".dsse.json"))
            .max()
            .map(|p| std::fs::read(p).unwrap())
            .expect("a committed FFN-GGUF-003 record");
        let keys: Vec<_> = pv::evidence::keys::trusted_keys(&common::root().join("keys"))
            .unwrap()
            .into_iter()
            .map(|k| k.key)
            .collect();
        let env: pv::evidence::dsse::Envelope = serde_json::from_slice(&record).unwrap();
        let (body, _) = pv::evidence::dsse::verify(&env, keys.iter()).unwrap();
        let tally = drive("evidence", seed, |s, tally| {
            let mut rng = SplitMix(s);
            let inner = rng.next_u64().is_multiple_of(2);
            let mut b = if inner { body.clone() } else { record.clone() };
            let len = b.len();
            mutate(&mut rng, &mut b, len, &[]);
            let len = b.len();
            run_case("evidence", s, len, tally, || {
                let statement = if inner {
                    b
                } else {
                    let Ok(env) = serde_json::from_slice::<pv::evidence::dsse::Envelope>(&b) else {
                        return false;
                    };
                    match pv::evidence::dsse::verify(&env, keys.iter()) {
                        Ok((body, _)) => body,
                        Err(_) => return false,
                    }
                };
                let Ok(st) = serde_json::from_slice::<pv::evidence::record::Statement>(&statement)
                else {
                    return false;
                };
                let p = &st.predicate;
                match pv::checkers::find(&p.checker) {
                    Some(c) => (c.judge)(&pv::checkers::Judged {
                        contract_id: &p.contract_id,
                        params: &p.params,
                        measurements: &p.measurements,
                    })
                    .is_ok(),
                    None => false,
                }
            });
        });
        reaches_past_the_first_check("evidence", &tally);
    });
}

/// A target whose every case is refused by its first check tests only that check: some
/// mutated inputs must get through to the code behind it (a GGUF file to a forward pass, a
/// contract to a parsed value, a record to its checker's judge).
fn reaches_past_the_first_check(target: &str, tally: &Tally) {
    assert!(
        tally.cases < 20 || tally.accepted > 0,
        "fuzz {target}: none of {} mutated inputs got past the first check",
        tally.cases
    );
}
