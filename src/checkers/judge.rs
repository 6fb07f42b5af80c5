//! What a judge is given and returns, and typed access to recorded measurements.
//!
//! Measurements are JSON (they are recorded in evidence and may come from another build of
//! pv), so a judge reads them through these accessors: a missing or mistyped field is an
//! error naming its JSON pointer, never a panic.

use serde_json::Value;

/// A judge's input: the test's params and what was measured.
#[derive(Clone, Copy, Debug)]
pub struct Judged<'a> {
    /// The contract the test belongs to.
    pub contract_id: &'a str,
    /// The test's params.
    pub params: &'a Value,
    /// The recorded measurements.
    pub measurements: &'a Value,
}

/// A judge's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// `PASS`/`FAIL`, or a hypothesis (`H1`/`H2`).
    pub verdict: String,
    /// Whether the prediction held.
    pub passed: bool,
    /// A human-readable account (the table and the reasoning), made from the measurements.
    pub report: String,
}

impl Judgement {
    /// A verdict without hypotheses: `PASS` or `FAIL`.
    pub fn pass_fail(passed: bool, report: String) -> Self {
        Judgement {
            verdict: if passed { "PASS" } else { "FAIL" }.into(),
            passed,
            report,
        }
    }
}

/// The value at JSON pointer `ptr`.
pub fn at<'a>(v: &'a Value, ptr: &str) -> Result<&'a Value, String> {
    v.pointer(ptr)
        .ok_or_else(|| format!("measurement {ptr} is missing"))
}

/// A number at `ptr` (JSON `null`, which is how an infinite or NaN f64 is written, reads
/// as NaN).
pub fn num(v: &Value, ptr: &str) -> Result<f64, String> {
    match at(v, ptr)? {
        Value::Null => Ok(f64::NAN),
        x => x
            .as_f64()
            .ok_or_else(|| format!("measurement {ptr} is not a number")),
    }
}

/// A non-negative integer at `ptr`.
pub fn uint(v: &Value, ptr: &str) -> Result<u64, String> {
    at(v, ptr)?
        .as_u64()
        .ok_or_else(|| format!("measurement {ptr} is not a non-negative integer"))
}

/// An array at `ptr`.
pub fn arr<'a>(v: &'a Value, ptr: &str) -> Result<&'a Vec<Value>, String> {
    at(v, ptr)?
        .as_array()
        .ok_or_else(|| format!("measurement {ptr} is not an array"))
}

/// A string at `ptr`.
pub fn text<'a>(v: &'a Value, ptr: &str) -> Result<&'a str, String> {
    at(v, ptr)?
        .as_str()
        .ok_or_else(|| format!("measurement {ptr} is not a string"))
}

/// A boolean at `ptr`.
pub fn flag(v: &Value, ptr: &str) -> Result<bool, String> {
    at(v, ptr)?
        .as_bool()
        .ok_or_else(|| format!("measurement {ptr} is not a boolean"))
}

/// Checks that a recorded field agrees with what the judge recomputed from the raw numbers.
pub fn agrees(what: &str, recorded: f64, recomputed: f64) -> Result<(), String> {
    // JSON has no NaN or infinity: serde_json records any non-finite number as null, which
    // `num` reads back as NaN.
    if recorded.to_bits() == recomputed.to_bits() || (recorded.is_nan() && !recomputed.is_finite())
    {
        Ok(())
    } else {
        Err(format!(
            "{what} is recorded as {recorded} but the recorded values give {recomputed}"
        ))
    }
}
