//! The TC programs' per-packet cost: `mptcp-probe prog-bench` (BPF_PROG_TEST_RUN on hand-built
//! frames) in the client namespace, and the figures taken from it: each program's time per run
//! and its time over the empty classifier's on the same frame in the same round ("net"), as
//! median and spread over the rounds.

use std::{collections::BTreeMap, process::Stdio};

use anyhow::{bail, Context as _};
use mptcp_probe_model::bench::{BenchFrame, FrameCost, ProgBench, TcProgram};
use mptcp_probe_tests::lab::Lab;
use serde::Serialize;

use super::{stats::Spread, Bins, Config};

/// Seconds prog-bench may take before it is killed.
const TIMEOUT_S: &str = "300";

/// The frames other than the DSS data segment that every packet-rate target speaks of; the SYN
/// is not one of them (it writes an event to the ring buffer each time, as it should).
pub const OTHER_STEADY_FRAMES: [BenchFrame; 3] =
    [BenchFrame::PureAck, BenchFrame::TcpData, BenchFrame::Ipv6Dss];

pub fn run(lab: &Lab, bins: &Bins, cfg: &Config) -> anyhow::Result<ProgBench> {
    let out = lab
        .c
        .cmd("timeout")
        .args(["-k", "5", TIMEOUT_S])
        .arg(&bins.probe)
        .args([
            "prog-bench",
            "--repeat",
            &cfg.prog_repeat.to_string(),
            "--rounds",
            &cfg.prog_rounds.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .context("running mptcp-probe prog-bench")?;
    if !out.status.success() {
        bail!("mptcp-probe prog-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "mptcp-probe prog-bench printed what is not a ProgBench (is {} older than this xtask?): {}",
            bins.probe.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every frame's figures, in the order prog-bench ran them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PerPacket {
    pub frames: Vec<FrameFigures>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameFigures {
    pub name: BenchFrame,
    pub what: String,
    pub frame_bytes: u64,
    /// The empty classifier, ns per run.
    pub empty_ns: Spread,
    pub programs: BTreeMap<TcProgram, ProgramFigures>,
    /// The program with the larger median net time (None without programs).
    pub worse: Option<TcProgram>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProgramFigures {
    /// ns per run.
    pub ns: Spread,
    /// ns per run minus the empty classifier's in the same round.
    pub net_ns: Spread,
}

/// A figure of one frame and program: which they are, and the figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Worst {
    pub frame: BenchFrame,
    pub program: TcProgram,
    pub net_ns: Spread,
}

impl FrameFigures {
    fn of(f: &FrameCost) -> Self {
        let programs: BTreeMap<TcProgram, ProgramFigures> = f
            .programs
            .iter()
            .map(|(p, c)| {
                let net: Vec<f64> = c.rounds_ns.iter().zip(&f.empty_rounds_ns).map(|(x, e)| x - e).collect();
                (*p, ProgramFigures { ns: Spread::of(&c.rounds_ns), net_ns: Spread::of(&net) })
            })
            .collect();
        let worse = programs
            .iter()
            .filter(|(_, c)| c.net_ns.median.is_finite())
            .max_by(|a, b| a.1.net_ns.median.total_cmp(&b.1.net_ns.median))
            .map(|(p, _)| *p);
        Self {
            name: f.name,
            what: f.what.clone(),
            frame_bytes: f.frame_bytes,
            empty_ns: Spread::of(&f.empty_rounds_ns),
            programs,
            worse,
        }
    }

    /// The costlier direction's net figure.
    pub fn worse(&self) -> Option<Worst> {
        let program = self.worse?;
        Some(Worst { frame: self.name, program, net_ns: self.programs[&program].net_ns })
    }
}

impl PerPacket {
    pub fn of(b: &ProgBench) -> Self {
        Self { frames: b.frames.iter().map(FrameFigures::of).collect() }
    }

    pub fn frame(&self, kind: BenchFrame) -> Option<&FrameFigures> {
        self.frames.iter().find(|f| f.name == kind)
    }

    /// The costliest frame and direction of `kinds`, by median net time.
    pub fn worst_of(&self, kinds: &[BenchFrame]) -> Option<Worst> {
        kinds
            .iter()
            .filter_map(|k| self.frame(*k)?.worse())
            .max_by(|a, b| a.net_ns.median.total_cmp(&b.net_ns.median))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use mptcp_probe_model::bench::ProgramCost;

    use super::*;

    /// A frame measured in three rounds: the empty classifier at `empty`, each program at its
    /// rounds.
    pub fn frame(name: BenchFrame, empty: [f64; 3], ingress: [f64; 3], egress: [f64; 3]) -> FrameCost {
        let cost =
            |r: [f64; 3]| ProgramCost { ns: Spread::of(&r).median, net_ns: f64::NAN, rounds_ns: r.to_vec() };
        FrameCost {
            name,
            what: name.as_str().into(),
            frame_bytes: 1514,
            empty_ns: Spread::of(&empty).median,
            empty_rounds_ns: empty.to_vec(),
            programs: [(TcProgram::TcIngress, cost(ingress)), (TcProgram::TcEgress, cost(egress))].into(),
        }
    }

    #[test]
    fn net_time_is_taken_within_each_round_and_the_worse_direction_is_the_costlier() {
        // The host slows down in the second round: the empty classifier shows it too.
        let b = ProgBench {
            frames: vec![frame(
                BenchFrame::DataDss,
                [14.0, 20.0, 14.0],
                [40.0, 46.0, 41.0],
                [42.0, 49.0, 42.5],
            )],
            ..Default::default()
        };
        let p = PerPacket::of(&b);
        let f = p.frame(BenchFrame::DataDss).unwrap();
        let egress = &f.programs[&TcProgram::TcEgress];
        assert_eq!(egress.ns.median, 42.5);
        assert_eq!((egress.net_ns.median, egress.net_ns.min, egress.net_ns.max), (28.5, 28.0, 29.0));
        assert_eq!(f.worse, Some(TcProgram::TcEgress));
        assert_eq!(f.empty_ns.median, 14.0);
        assert!(p.frame(BenchFrame::PureAck).is_none());
    }

    #[test]
    fn the_worst_of_several_frames_names_its_frame_and_program() {
        let b = ProgBench {
            frames: vec![
                frame(BenchFrame::SynMpCapable, [14.0; 3], [200.0; 3], [190.0; 3]),
                frame(BenchFrame::PureAck, [14.0; 3], [38.0; 3], [39.0; 3]),
                frame(BenchFrame::Ipv6Dss, [14.0; 3], [44.0; 3], [41.0; 3]),
            ],
            ..Default::default()
        };
        let p = PerPacket::of(&b);
        let w = p.worst_of(&OTHER_STEADY_FRAMES).unwrap();
        assert_eq!((w.frame, w.program, w.net_ns.median), (BenchFrame::Ipv6Dss, TcProgram::TcIngress, 30.0));
        assert!(p.worst_of(&[BenchFrame::DataDss]).is_none(), "a frame not measured is no figure");
    }
}
