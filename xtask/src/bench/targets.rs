//! The figures the design promises, each against what was measured.

use mptcp_probe_model::bench::{BenchFrame, FrameCost, ProgBench};
use serde::Serialize;

use super::{bulk::Ratios, ring_buffer::RingBuffer, short::ShortConnections, storage::Storage};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Target {
    pub target: &'static str,
    pub wanted: &'static str,
    pub measured: f64,
    /// None when nothing was measured.
    pub met: Option<bool>,
}

/// What a target is checked against.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
    Exactly(f64),
}

impl Bound {
    fn holds(self, x: f64) -> bool {
        match self {
            Bound::AtLeast(b) => x >= b,
            Bound::AtMost(b) => x <= b,
            Bound::Exactly(b) => x == b,
        }
    }
}

fn target(name: &'static str, wanted: &'static str, bound: Bound, measured: f64) -> Target {
    Target { target: name, wanted, measured, met: measured.is_finite().then(|| bound.holds(measured)) }
}

/// The parts of the report the targets speak of.
pub struct Inputs<'a> {
    pub ratios: &'a Ratios,
    pub storage: &'a Storage,
    pub short: &'a ShortConnections,
    pub prog_bench: &'a ProgBench,
    pub ring: &'a RingBuffer,
}

pub fn judge(i: &Inputs) -> Vec<Target> {
    use Bound::*;
    let dss_ns = i.prog_bench.frame(BenchFrame::DataDss).map_or(f64::NEG_INFINITY, FrameCost::worse_ns);
    let kept = i.storage.probe_kept_bytes.total;
    vec![
        target(
            "throughput with the probe / without",
            ">= 0.99",
            AtLeast(0.99),
            i.ratios.throughput_probe_over_off,
        ),
        target(
            "throughput with the probe / header-only tcpdump",
            ">= 0.99",
            AtLeast(0.99),
            i.ratios.throughput_probe_over_tcpdump_header,
        ),
        target(
            "extra CPU per GB, probe / header-only tcpdump",
            "<= 0.2",
            AtMost(0.2),
            i.ratios.extra_cpu_probe_over_tcpdump_header,
        ),
        target("bytes kept per bulk connection", "<= 1024", AtMost(1024.0), kept),
        target(
            "bytes kept per short connection",
            "<= 1024",
            AtMost(1024.0),
            i.short.kept_bytes_per_connection.total.median,
        ),
        target(
            "bytes kept per bulk connection / header-only capture",
            "<= 0.0001",
            AtMost(1e-4),
            i.storage.probe_over_tcpdump_header,
        ),
        target("ns per DSS data segment (test run, worse direction)", "<= 40", AtMost(40.0), dss_ns),
        target("ring-buffer drops", "0", Exactly(0.0), i.ring.dropped_total as f64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_met_missed_or_not_measured() {
        assert_eq!(target("t", "<= 1", Bound::AtMost(1.0), 0.5).met, Some(true));
        assert_eq!(target("t", ">= 1", Bound::AtLeast(1.0), 0.5).met, Some(false));
        assert_eq!(target("t", "<= 1", Bound::AtMost(1.0), f64::NAN).met, None);
        assert_eq!(target("t", "<= 40", Bound::AtMost(40.0), f64::NEG_INFINITY).met, None);
        let v = serde_json::to_value(target("t", "0", Bound::Exactly(0.0), f64::NAN)).unwrap();
        assert!(v["measured"].is_null() && v["met"].is_null());
    }
}
