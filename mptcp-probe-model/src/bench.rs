//! What `mptcp-probe prog-bench` prints: the per-packet cost of the TC programs, measured with
//! BPF_PROG_TEST_RUN on hand-built frames, each next to an empty classifier run the same way.
//! `cargo xtask bench` reads it back with these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole output: one JSON object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgBench {
    /// Program runs per frame, program and round.
    pub repeat: u32,
    pub rounds: u32,
    /// Runs per BPF_PROG_TEST_RUN call: as many as half the ring buffer holds events for.
    pub chunk: u32,
    /// Size of one packet event.
    pub event_bytes: u64,
    pub frames: Vec<FrameCost>,
    /// Programs that cannot be measured this way, and why.
    pub not_measured: BTreeMap<String, String>,
    pub counters: ProgBenchCounters,
    pub seconds: f64,
}

impl ProgBench {
    pub fn frame(&self, kind: BenchFrame) -> Option<&FrameCost> {
        self.frames.iter().find(|f| f.name == kind)
    }
}

/// The frames measured, each as Linux sends it on an MPTCP v1 connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchFrame {
    /// SYN with MP_CAPABLE: an event each time.
    SynMpCapable,
    /// IPv4 data segment with a DSS carrying a data ACK and a mapping.
    DataDss,
    /// ACK without payload, DSS data ACK only.
    PureAck,
    /// Non-MPTCP TCP data segment of a tracked flow.
    TcpData,
    /// IPv6 data segment with a DSS.
    Ipv6Dss,
}

impl BenchFrame {
    pub const ALL: [BenchFrame; 5] = [
        BenchFrame::SynMpCapable,
        BenchFrame::DataDss,
        BenchFrame::PureAck,
        BenchFrame::TcpData,
        BenchFrame::Ipv6Dss,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            BenchFrame::SynMpCapable => "syn_mp_capable",
            BenchFrame::DataDss => "data_dss",
            BenchFrame::PureAck => "pure_ack",
            BenchFrame::TcpData => "tcp_data",
            BenchFrame::Ipv6Dss => "ipv6_dss",
        }
    }
}

/// The TC programs a test run can measure. The `_l3` variants cannot be: the test run always
/// presents an Ethernet frame to a classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcProgram {
    TcIngress,
    TcEgress,
}

impl TcProgram {
    pub const ALL: [TcProgram; 2] = [TcProgram::TcIngress, TcProgram::TcEgress];

    /// The program's name in the eBPF object (and in `bpftool prog show`).
    pub const fn name(self) -> &'static str {
        match self {
            TcProgram::TcIngress => "tc_ingress",
            TcProgram::TcEgress => "tc_egress",
        }
    }
}

/// One frame's cost: the empty classifier and each program, medians over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameCost {
    pub name: BenchFrame,
    /// The frame in words.
    pub what: String,
    pub frame_bytes: u64,
    pub empty_ns: f64,
    pub empty_rounds_ns: Vec<f64>,
    pub programs: BTreeMap<TcProgram, ProgramCost>,
}

impl FrameCost {
    /// The costlier direction's median, in ns; -inf without programs.
    pub fn worse_ns(&self) -> f64 {
        self.programs.values().map(|p| p.ns).fold(f64::NEG_INFINITY, f64::max)
    }
}

/// One program on one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramCost {
    /// Median ns per run.
    pub ns: f64,
    /// `ns` minus the empty classifier's median on the same frame.
    pub net_ns: f64,
    pub rounds_ns: Vec<f64>,
}

/// How the kernel programs' counters moved over the timed runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgBenchCounters {
    pub packets_inspected: u64,
    pub events_emitted: u64,
    pub ringbuf_dropped_events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProgBench {
        let cost = |ns: f64| ProgramCost { ns, net_ns: ns - 10.0, rounds_ns: vec![ns] };
        ProgBench {
            repeat: 10,
            rounds: 1,
            chunk: 6096,
            event_bytes: 336,
            frames: vec![FrameCost {
                name: BenchFrame::DataDss,
                what: "data".into(),
                frame_bytes: 1514,
                empty_ns: 10.0,
                empty_rounds_ns: vec![10.0],
                programs: [(TcProgram::TcIngress, cost(140.0)), (TcProgram::TcEgress, cost(160.0))].into(),
            }],
            not_measured: [("tc_ingress_l3".to_string(), "Ethernet only".to_string())].into(),
            counters: ProgBenchCounters {
                packets_inspected: 20,
                events_emitted: 0,
                ringbuf_dropped_events: 0,
            },
            seconds: 0.5,
        }
    }

    #[test]
    fn programs_are_keyed_by_their_object_names_and_frames_by_theirs() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["frames"][0]["name"], "data_dss");
        assert_eq!(v["frames"][0]["programs"]["tc_egress"]["ns"], 160.0);
        assert_eq!(v["counters"]["packets_inspected"], 20);
        for p in TcProgram::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        for f in BenchFrame::ALL {
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
        assert_eq!(serde_json::from_value::<ProgBench>(v).unwrap(), sample());
    }

    #[test]
    fn the_worse_direction_is_the_costlier_program() {
        let b = sample();
        assert_eq!(b.frame(BenchFrame::DataDss).map(FrameCost::worse_ns), Some(160.0));
        assert!(b.frame(BenchFrame::PureAck).is_none());
    }
}
