//! The gate's re-checks split over a CI job matrix: `pv gate --shard K/N` re-checks a
//! deterministic share of the due tests (stale or missing required ones) and records them
//! in its scratch ledger; `pv gate --merge DIR...` judges the union of those ledgers.
//!
//! Every shard computes the same split from the same tree: the due tests, each weighted by
//! how long its latest record took to make (its `started_at` to `finished_at`), are dealt
//! longest first to the least-loaded shard. So shards finish at about the same time, and
//! no coordination is needed beyond the job matrix.
//!
//! What the merge trusts is what a one-job gate trusts. A shard's records carry the code
//! under test's measurements, the same bytes a one-job gate's `--engine` would have given;
//! the final job holds each record to the trusted clause (digest and params), to the
//! covered files as its own checkout has them, and re-derives the verdict, `passed` and
//! `canonical` with this process's judges. The shard's run key (its public half travels
//! with the record) only proves the record was not altered after the shard signed it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use super::recheck::Fresh;
use super::verify::{Clause, Places, TestReport, Verifier};
use super::{EvidenceError, keys};
use crate::checkers::{self, Judged};
use crate::contract::{FalsificationTest, LoadedContract};

/// Shard `index` of `count` (1-based), as `K/N` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// Which shard, from 1.
    pub index: usize,
    /// How many.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not K/N (for example 2/4)"))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("{s:?} is not K/N: {x:?} is not a number"))
        };
        let (index, count) = (parse(k)?, parse(n)?);
        if count == 0 || count > 256 || index == 0 || index > count {
            return Err(format!("{s:?}: need 1 <= K <= N <= 256"));
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// `KofN`, as the run key's name says it.
    pub fn label(self) -> String {
        format!("{}of{}", self.index, self.count)
    }
}

/// Assumed duration of a test with no record to time (seconds).
pub const DEFAULT_SECONDS: f64 = 60.0;

/// How long the latest valid record of `t` took to make, in seconds, plus one: records
/// keep whole seconds, and a test that took "0 s" still costs a start-up.
pub fn recorded_seconds(t: &TestReport) -> Option<f64> {
    let p = &t.latest()?.predicate;
    let start = humantime::parse_rfc3339(&p.started_at).ok()?;
    let end = humantime::parse_rfc3339(&p.finished_at).ok()?;
    end.duration_since(start)
        .ok()
        .map(|d| d.as_secs_f64() + 1.0)
}

/// The shard (1-based) of each due test: longest first (ties by name) to the least-loaded
/// shard (ties to the lowest). `weights` are (name, seconds) in any order.
pub fn assign(weights: &[(String, f64)], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        weights[b]
            .1
            .total_cmp(&weights[a].1)
            .then_with(|| weights[a].0.cmp(&weights[b].0))
    });
    let mut load = vec![0.0f64; count.max(1)];
    let mut out = vec![1; weights.len()];
    for i in order {
        let (k, _) = load
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)))
            .expect("at least one shard");
        load[k] += weights[i].1;
        out[i] = k + 1;
    }
    out
}

/// A shard's scratch ledger as the merge read it.
#[derive(Clone, Debug, Serialize)]
pub struct ShardLedger {
    /// The directory (a shard's `--scratch`).
    pub dir: PathBuf,
    /// Its run keys' names.
    pub keys: Vec<String>,
    /// Tests it holds a record for.
    pub tests: Vec<String>,
}

/// A due test and the clause it is held to.
pub struct Due<'a> {
    /// Its contract.
    pub contract: &'a LoadedContract,
    /// The test as the tree has it (where its records are filed).
    pub test: &'a FalsificationTest,
    /// The trusted clause.
    pub clause: Clause<'a>,
}

/// The merged results: one per due test a shard recorded, the ledgers read, and remarks.
pub struct Merged {
    /// Fresh results, in due order.
    pub fresh: Vec<Fresh>,
    /// The shard ledgers.
    pub ledgers: Vec<ShardLedger>,
    /// Remarks (tests no shard recorded, duplicates).
    pub notes: Vec<String>,
}

/// Reads every shard ledger in `dirs` and turns each due test's record into a fresh result
/// judged by this process. A record that does not verify, is stale or was made under
/// another clause is a failed result (it blocks); a due test no shard recorded stays as
/// the ledger has it (stale or missing: it blocks), with a note.
pub fn merge(root: &Path, dirs: &[PathBuf], due: &[Due]) -> Result<Merged, EvidenceError> {
    let mut ledgers = Vec::new();
    let mut found: BTreeMap<(String, String), Vec<Fresh>> = BTreeMap::new();
    for dir in dirs {
        let trusted = keys::trusted_keys(&dir.join("keys"))?;
        let evidence = dir.join("evidence");
        if !evidence.is_dir() && !dir.join("summary.json").is_file() {
            return Err(EvidenceError::Usage(format!(
                "{}: not a shard's scratch directory (no evidence/ or summary.json)",
                dir.display()
            )));
        }
        let places = Places {
            root,
            evidence: &evidence,
            trusted: &trusted,
        };
        let verifier = Verifier::new(&places);
        let mut held = Vec::new();
        for d in due {
            let cid = &d.contract.contract.metadata.id;
            let rep = verifier.verify_test(d.contract, d.test, Some(d.clause))?;
            if rep.records.is_empty() && rep.problems.is_empty() {
                continue;
            }
            held.push(rep.name());
            let fresh = judged(&rep, d, dir, cid);
            found
                .entry((cid.clone(), d.test.id.clone()))
                .or_default()
                .push(fresh);
        }
        ledgers.push(ShardLedger {
            dir: dir.clone(),
            keys: trusted.iter().map(|k| k.name.clone()).collect(),
            tests: held,
        });
    }
    let mut fresh = Vec::new();
    let mut notes = Vec::new();
    for d in due {
        let cid = &d.contract.contract.metadata.id;
        let name = format!("{cid}/{}", d.test.id);
        match found.remove(&(cid.clone(), d.test.id.clone())) {
            None => notes.push(format!(
                "{name}: due for a re-check, but no shard ledger holds a record of it"
            )),
            Some(mut all) => {
                if all.len() > 1 {
                    notes.push(format!(
                        "{name}: recorded by {} shards; counted as discharged only if every one discharges it",
                        all.len()
                    ));
                }
                // The first that does not discharge, else the first.
                let pick = all.iter().position(|f| !f.discharges()).unwrap_or(0);
                fresh.push(all.swap_remove(pick));
            }
        }
    }
    Ok(Merged {
        fresh,
        ledgers,
        notes,
    })
}

/// A shard's verified record of a due test as a fresh result judged here.
fn judged(rep: &TestReport, d: &Due, dir: &Path, cid: &str) -> Fresh {
    let by = format!("shard {}", dir.display());
    let failed = |e: String| Fresh {
        contract_id: cid.to_string(),
        test_id: d.test.id.clone(),
        checker: d.clause.test.checker.clone(),
        measured_by: by.clone(),
        verdict: None,
        passed: false,
        canonical: false,
        report: String::new(),
        error: Some(e),
        record: rep.records.last().map(|r| r.path.clone()),
        measurements: serde_json::Value::Null,
    };
    let mut wrong: Vec<String> = rep.problems.clone();
    for r in &rep.records {
        wrong.extend(r.problems.iter().map(|p| format!("{}: {p}", r.path)));
    }
    if rep.records.len() != 1 {
        wrong.push(format!(
            "a shard ledger holds one record per test, this has {}",
            rep.records.len()
        ));
    }
    if !wrong.is_empty() {
        return failed(format!(
            "its shard record does not verify: {}",
            wrong.join("; ")
        ));
    }
    if !rep.stale.is_empty() {
        return failed(format!(
            "its shard record does not speak for this tree: {}",
            rep.stale.join("; ")
        ));
    }
    let Some(st) = rep.latest() else {
        return failed("its shard record has no statement".into());
    };
    let p = &st.predicate;
    // The verifier re-derived verdict, passed and canonical; the report table is the
    // judge's, made here.
    let report = checkers::find(&p.checker)
        .and_then(|c| {
            (c.judge)(&Judged {
                contract_id: cid,
                params: &p.params,
                measurements: &p.measurements,
            })
            .ok()
        })
        .map(|j| j.report)
        .unwrap_or_default();
    Fresh {
        contract_id: cid.to_string(),
        test_id: d.test.id.clone(),
        checker: p.checker.clone(),
        measured_by: format!("{by} (signed by {})", p.signer),
        verdict: Some(p.verdict.clone()),
        passed: p.passed,
        canonical: p.canonical,
        report,
        error: None,
        record: rep.records.last().map(|r| r.path.clone()),
        measurements: p.measurements.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_as_k_of_n() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "1/0", "4", "a/b", "1/1000"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_longest_tests_are_dealt_to_the_least_loaded_shard() {
        let w: Vec<(String, f64)> = [
            ("a", 10.0),
            ("b", 50.0),
            ("c", 30.0),
            ("d", 20.0),
            ("e", 5.0),
        ]
        .iter()
        .map(|(n, s)| (n.to_string(), *s))
        .collect();
        let got = assign(&w, 2);
        // b (50) to 1; c (30) to 2; d (20) to 2 (30 < 50); a (10) to 1 (50 = 50: the
        // lowest); e (5) to 2 (60 against 50).
        assert_eq!(got, vec![1, 1, 2, 2, 2]);
        let load = |k: usize| -> f64 {
            w.iter()
                .zip(&got)
                .filter(|(_, s)| **s == k)
                .map(|(x, _)| x.1)
                .sum()
        };
        assert_eq!((load(1), load(2)), (60.0, 55.0));
        // Every test lands in exactly one shard, whatever the count; one shard takes all.
        for n in 1..=7 {
            let a = assign(&w, n);
            assert!(a.iter().all(|&k| (1..=n).contains(&k)));
        }
        assert!(assign(&w, 1).iter().all(|&k| k == 1));
        // The split does not depend on the order the tests come in.
        let mut rev = w.clone();
        rev.reverse();
        let mut back = assign(&rev, 3);
        back.reverse();
        assert_eq!(back, assign(&w, 3));
    }
}
