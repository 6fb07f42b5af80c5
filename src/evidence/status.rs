//! The status of a falsification test, and the only transitions a record may make.
//!
//! | from | passed, canonical model | passed, other model | failed |
//! |---|---|---|---|
//! | PENDING | DISCHARGED | ALGORITHM_LEVEL_DISCHARGED | FALSIFIED |
//! | ALGORITHM_LEVEL_DISCHARGED | DISCHARGED | ALGORITHM_LEVEL_DISCHARGED | FALSIFIED |
//! | DISCHARGED | DISCHARGED | refused | FALSIFIED |
//! | FALSIFIED | DISCHARGED | refused | FALSIFIED |
//!
//! A pass on another model cannot lower a canonical discharge, nor clear a falsification:
//! only a canonical pass does that.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A falsification test's status, computed from its verified records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// No record yet.
    Pending,
    /// The checker passed on a model other than the contract's canonical one.
    AlgorithmLevelDischarged,
    /// The checker passed on the canonical model.
    Discharged,
    /// The checker failed: the prediction was falsified.
    Falsified,
}

impl Status {
    /// The name as written in records and reports.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::AlgorithmLevelDischarged => "ALGORITHM_LEVEL_DISCHARGED",
            Status::Discharged => "DISCHARGED",
            Status::Falsified => "FALSIFIED",
        }
    }

    /// The status after a run with this outcome, or `None` when the table refuses it.
    pub fn after(self, passed: bool, canonical: bool) -> Option<Status> {
        use Status::*;
        match (self, passed, canonical) {
            (_, false, _) => Some(Falsified),
            (_, true, true) => Some(Discharged),
            (Pending | AlgorithmLevelDischarged, true, false) => Some(AlgorithmLevelDischarged),
            (Discharged | Falsified, true, false) => None,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Status::*;

    #[test]
    fn the_table() {
        assert_eq!(Pending.after(true, false), Some(AlgorithmLevelDischarged));
        assert_eq!(Pending.after(true, true), Some(Discharged));
        assert_eq!(AlgorithmLevelDischarged.after(true, true), Some(Discharged));
        assert_eq!(Discharged.after(false, true), Some(Falsified));
        assert_eq!(Falsified.after(true, true), Some(Discharged));
        assert_eq!(Falsified.after(true, false), None);
        assert_eq!(Discharged.after(true, false), None);
        for s in [Pending, AlgorithmLevelDischarged, Discharged, Falsified] {
            assert_eq!(s.after(false, false), Some(Falsified));
        }
    }
}
