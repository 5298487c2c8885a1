//! Names the middlebox behaviour behind a test's outcome from what both ends saw. Facts are
//! computed once from the evidence ([`facts`]); each verdict comes from a small rule over them,
//! with a finding that says which packet, which end, what was expected and what was seen
//! ([`rules`]). Where the evidence for a verdict is missing, the verdict is not claimed.

pub mod evidence;
pub mod facts;
pub mod rules;

#[cfg(test)]
mod tests;

use mptcp_probe_model::{Finding, Verdict};

pub use evidence::{AddAddrEvidence, Evidence, JoinEvidence};

/// The verdicts with their findings, and the fallback reason in the kernel's MIB words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    pub findings: Vec<Finding>,
    pub fallback_reason: Option<String>,
}

impl Classification {
    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut v: Vec<Verdict> = self.findings.iter().map(|f| f.verdict).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Classifies a test connection.
pub fn classify(e: &Evidence) -> Classification {
    let facts = facts::Facts::new(e);
    Classification { findings: rules::findings(&facts), fallback_reason: facts.fallback_reason.clone() }
}
