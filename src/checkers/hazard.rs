//! `engine_loader_hazard`: does an external engine refuse an APR file that is broken in one
//! known way, or does it run on it? A loader that fills a missing weight with zeros, or
//! reads past malformed metadata, gives numbers from a model nobody shipped; the only
//! honest answer to such a file is an error.
//!
//! The checker makes the broken file itself from the test's intact APR reference, so the
//! hazard is exactly one defect (everything else, the CRC32 footer included, made right),
//! and checks both ends of the claim:
//! - pv's own reader refuses the broken file (else it is not broken, and nothing is judged);
//! - the engine runs the intact file (else a refusal says nothing about the defect);
//! - then the engine is given the broken file: refused (exit 2) or failed (any other
//!   non-zero exit) is the verdict's pass; a trace is its fail.

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::context::{CheckError, Context, Measured, file_input, model_path, typed_params};
use super::judge::{Judged, Judgement};
use super::load::apr_path;
use super::params::{Hazard, HazardParams};
use crate::apr::{AprFile, AprWriter, Footer};
use crate::trace::{TraceOptions, TracedForward};

/// What an engine did with a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
enum Outcome {
    /// It answered with a trace: it ran the model.
    Ran {
        /// The engine as its trace names itself.
        engine: String,
        /// The argmax of the last position's logits.
        top1: u32,
        /// Whether every logit was finite.
        finite: bool,
    },
    /// It exited 2, naming the problem.
    Refused {
        /// Its last line on stderr.
        message: String,
    },
    /// It failed otherwise (a crash, a panic, another exit code, a broken answer).
    Failed {
        /// What pv saw.
        message: String,
    },
}

/// What `engine_loader_hazard` records.
#[derive(Serialize, Deserialize)]
struct HazardMeasurements {
    /// The token ids given to the engine.
    tokens: Vec<u32>,
    /// The defect, as made.
    made: String,
    /// The broken file's sha256.
    broken_sha256: String,
    /// pv's own reader on the broken file (its error; the file is broken).
    pv_reader: String,
    /// The engine on the intact reference.
    intact: Outcome,
    /// The engine on the broken file.
    broken: Outcome,
}

/// The intact file's bytes with one defect: what was done, and the bytes.
fn make_broken(intact: &AprFile, hazard: &Hazard) -> Result<(String, Vec<u8>), CheckError> {
    let err = |e: crate::apr::AprError| CheckError::Input(e.to_string());
    let rewrite = |metadata: Vec<u8>, drop: Option<&str>| -> Result<Vec<u8>, CheckError> {
        let mut w = AprWriter::with_metadata_bytes(metadata).map_err(err)?;
        for t in intact
            .tensors
            .iter()
            .filter(|t| Some(t.name.as_str()) != drop)
        {
            w.tensor(&t.name, t.dtype, &t.dims, intact.tensor_data(t).to_vec())
                .map_err(err)?;
        }
        w.to_bytes().map_err(err)
    };
    let meta = intact.metadata_bytes().to_vec();
    Ok(match hazard {
        Hazard::MissingTensor { tensor } => {
            if intact.tensor(tensor).is_none() {
                return Err(CheckError::Params(format!(
                    "hazard: the reference has no tensor {tensor:?} to leave out"
                )));
            }
            (
                format!("tensor {tensor} left out (index, data and footer rewritten)"),
                rewrite(meta, Some(tensor))?,
            )
        }
        Hazard::MalformedMetadata => {
            // Cut inside the JSON: an object that never closes.
            let cut = meta.len() / 2;
            (
                format!(
                    "metadata cut to its first {cut} of {} bytes (not JSON; footer rewritten)",
                    meta.len()
                ),
                rewrite(meta[..cut].to_vec(), None)?,
            )
        }
        Hazard::ChecksumMismatch => {
            if intact.footer == Footer::Absent {
                return Err(CheckError::Params(
                    "hazard checksum_mismatch: the reference has no CRC32 footer to contradict"
                        .into(),
                ));
            }
            let last = intact
                .tensors
                .iter()
                .max_by_key(|t| t.offset)
                .ok_or_else(|| CheckError::Params("the reference holds no tensor".into()))?;
            let range = intact.tensor_range(last);
            let at = range.start + range.len() / 2;
            let mut b = intact.bytes().to_vec();
            b[at] ^= 0x40;
            (
                format!(
                    "one bit of tensor {} flipped at byte {at}; the CRC32 footer left as it was",
                    last.name
                ),
                b,
            )
        }
    })
}

/// Runs `m` on `tokens` and says what happened.
fn outcome(m: &crate::trace::engine::ExternalModel, tokens: &[u32]) -> Outcome {
    match m.forward_traced_with(tokens, &TraceOptions::default()) {
        Ok(t) => {
            let last = t.logits.last();
            Outcome::Ran {
                engine: t.trace.engine,
                top1: crate::model::argmax(last) as u32,
                finite: last.iter().all(|x| x.is_finite()),
            }
        }
        Err(crate::model::ModelError::Engine {
            refused: true,
            message,
        }) => Outcome::Refused { message },
        Err(e) => Outcome::Failed {
            message: e.to_string(),
        },
    }
}

/// `engine_loader_hazard`: the engine on the intact reference and on a copy broken one way.
pub fn loader_hazard(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: HazardParams = typed_params(p)?;
    p.check().map_err(CheckError::Params)?;
    let name = p.engine.external().expect("checked: an external engine");
    let gguf = model_path(ctx, &p.model.file)?;
    let (gguf_input, _) = file_input(&gguf)?;
    let file = crate::gguf::GgufFile::open(&gguf).map_err(|e| CheckError::Input(e.to_string()))?;
    let tokens = crate::tokenizer::Tokenizer::from_gguf(&file)?.encode(&p.prompt)?;
    drop(file);
    let reference = apr_path(ctx, &p.model, Some(&p.reference), &gguf)?;
    let (ref_input, _) = file_input(&reference)?;
    let intact = AprFile::open(&reference).map_err(|e| CheckError::Input(e.to_string()))?;
    let (made, bytes) = make_broken(&intact, &p.hazard)?;
    drop(intact);
    let pv_reader = match AprFile::from_bytes(bytes.clone()) {
        Ok(f) => match crate::model::AprTransformer::load(f) {
            Ok(_) => {
                return Err(CheckError::Input(format!(
                    "the broken file ({made}) loads in pv's own APR engine: it is not broken"
                )));
            }
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    let dir = std::env::temp_dir().join(format!("pv-hazard-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CheckError::Input(format!("{}: {e}", dir.display())))?;
    let broken = dir.join(&p.reference.file);
    crate::fsutil::atomic_write(&broken, &bytes)
        .map_err(|e| CheckError::Input(format!("{}: {e}", broken.display())))?;
    let broken_sha256 = crate::fsutil::sha256_hex(&bytes);
    drop(bytes);
    let (on_intact, engine_input) = super::load::external(ctx, name, &reference)?;
    let (on_broken, _) = super::load::external(ctx, name, &broken)?;
    (ctx.progress)(&format!("{name} on the intact reference"));
    let intact = outcome(&on_intact, &tokens);
    (ctx.progress)(&format!("{name} on the broken copy ({made})"));
    let broken_outcome = outcome(&on_broken, &tokens);
    let _ = std::fs::remove_dir_all(&dir);
    let m = HazardMeasurements {
        tokens,
        made,
        broken_sha256,
        pv_reader,
        intact,
        broken: broken_outcome,
    };
    Ok(Measured {
        measurements: serde_json::to_value(m).map_err(|e| CheckError::Input(e.to_string()))?,
        inputs: vec![gguf_input, ref_input, engine_input],
    })
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Ran {
            engine,
            top1,
            finite,
        } => format!(
            "ran ({engine}): top-1 token {top1}, logits {}",
            if *finite { "finite" } else { "NOT finite" }
        ),
        Outcome::Refused { message } => format!("refused: {message}"),
        Outcome::Failed { message } => format!("failed: {message}"),
    }
}

/// `engine_loader_hazard`'s judge: the engine ran the intact file and did not run the
/// broken one.
pub fn judge_loader_hazard(j: &Judged) -> Result<Judgement, String> {
    let p: HazardParams = serde_json::from_value(j.params.clone()).map_err(|e| e.to_string())?;
    let m: HazardMeasurements =
        serde_json::from_value(j.measurements.clone()).map_err(|e| format!("measurements: {e}"))?;
    if !matches!(m.intact, Outcome::Ran { .. }) {
        return Err(format!(
            "the engine did not run the intact reference ({}): a refusal of the broken copy \
             would say nothing",
            describe(&m.intact)
        ));
    }
    let passed = !matches!(m.broken, Outcome::Ran { .. });
    let mut r = format!(
        "{} on {}, broken one way: {}\n",
        p.engine.name(),
        p.reference.file,
        m.made
    );
    let _ = writeln!(r, "  pv's reader: {}", m.pv_reader);
    let _ = writeln!(r, "  intact: {}", describe(&m.intact));
    let _ = writeln!(r, "  broken: {}", describe(&m.broken));
    r.push_str(if passed {
        "the engine does not run the broken file\n"
    } else {
        "the engine RAN the broken file: its numbers come from a model nobody shipped\n"
    });
    Ok(Judgement {
        verdict: if passed {
            &p.verdicts.pass
        } else {
            &p.verdicts.fail
        }
        .clone(),
        passed,
        report: r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apr::DType;
    use crate::quant::GgmlType;

    fn intact() -> AprFile {
        let mut w = AprWriter::new(&serde_json::json!({"architecture": "llama"})).unwrap();
        for name in ["a.weight", "b.weight"] {
            let data: Vec<u8> = (0..16u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
            w.tensor(name, DType::Ggml(GgmlType::F32), &[4, 4], data)
                .unwrap();
        }
        AprFile::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    /// Each defect is made alone: the rest of the file (index, footer) stays consistent,
    /// so pv's reader names exactly that defect.
    #[test]
    fn each_hazard_is_one_defect_that_pvs_reader_names() {
        let f = intact();
        let missing = Hazard::MissingTensor {
            tensor: "b.weight".into(),
        };
        let (_, b) = make_broken(&f, &missing).unwrap();
        let g = AprFile::from_bytes(b).unwrap();
        assert!(g.tensor("b.weight").is_none() && g.tensor("a.weight").is_some());
        assert_eq!(g.metadata, f.metadata);
        let (_, b) = make_broken(&f, &Hazard::MalformedMetadata).unwrap();
        let e = AprFile::from_bytes(b).err().unwrap().to_string();
        assert!(e.contains("metadata") && e.contains("not JSON"), "{e}");
        let (made, b) = make_broken(&f, &Hazard::ChecksumMismatch).unwrap();
        assert!(made.contains("b.weight"), "{made}");
        let e = AprFile::from_bytes(b).err().unwrap().to_string();
        assert!(e.contains("footer"), "{e}");
        let absent = Hazard::MissingTensor {
            tensor: "c.weight".into(),
        };
        assert!(matches!(
            make_broken(&f, &absent),
            Err(CheckError::Params(_))
        ));
    }
}
