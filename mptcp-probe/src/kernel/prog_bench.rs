//! `mptcp-probe prog-bench` (hidden): the per-packet cost of the TC programs, measured with
//! BPF_PROG_TEST_RUN on hand-built frames, each next to an empty classifier run the same way.
//! Used by `cargo xtask bench`; prints one [`ProgBench`] as JSON.

use std::time::Instant;

use anyhow::Context as _;
use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use mptcp_probe_common::{counters, event::PacketEvent};
use mptcp_probe_model::bench::{BenchFrame, FrameCost, ProgBench, ProgBenchCounters, ProgramCost, TcProgram};

use super::{Observer, ObserverOptions};

pub struct BenchOptions {
    /// Program runs per frame, program and round.
    pub repeat: u32,
    /// Rounds; each round runs the empty classifier and then every program on every frame.
    pub rounds: u32,
}

/// The programs a test run cannot measure (the others are [`TcProgram`]), and why.
const NOT_MEASURED: [(&str, &str); 2] = [
    ("tc_ingress_l3", "test runs always present an Ethernet frame"),
    ("tc_egress_l3", "test runs always present an Ethernet frame"),
];
const EMPTY: &str = "tc_empty";
const RING_BYTES: usize = mptcp_probe_common::config::RING_BYTES as usize;

/// Representative frames, as Linux sends them on an MPTCP v1 connection.
mod frame {
    pub const NOP: u8 = 1;
    const TS: [u8; 10] = [8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78];

    pub fn nop_nop_ts() -> Vec<u8> {
        let mut o = vec![NOP, NOP];
        o.extend_from_slice(&TS);
        o
    }

    /// MSS, SACK permitted, timestamps, window scale, MP_CAPABLE v1 (HMAC-SHA256): 24 bytes.
    pub fn syn_options(mptcp: bool) -> Vec<u8> {
        let mut o = vec![2, 4, 0x05, 0xb4, 4, 2];
        o.extend_from_slice(&TS);
        o.extend_from_slice(&[NOP, 3, 3, 7]);
        if mptcp {
            o.extend_from_slice(&[30, 4, 0x01, 0x01]);
        }
        o
    }

    /// Timestamps + DSS with an 8-byte data ACK and an 8-byte-DSN mapping (26 bytes) + 2 NOPs.
    pub fn dss_data_options() -> Vec<u8> {
        let mut o = nop_nop_ts();
        o.extend_from_slice(&[30, 26, 0x20, 0x0f]);
        o.extend_from_slice(&0x1111_2222_3333_4444u64.to_be_bytes());
        o.extend_from_slice(&0x5555_6666_7777_8888u64.to_be_bytes());
        o.extend_from_slice(&1u32.to_be_bytes());
        o.extend_from_slice(&1400u16.to_be_bytes());
        o.extend_from_slice(&[NOP, NOP]);
        o
    }

    /// Timestamps + DSS carrying only an 8-byte data ACK.
    pub fn dss_ack_options() -> Vec<u8> {
        let mut o = nop_nop_ts();
        o.extend_from_slice(&[30, 12, 0x20, 0x03]);
        o.extend_from_slice(&0x1111_2222_3333_4444u64.to_be_bytes());
        o
    }

    pub const SYN: u8 = 0x02;
    pub const ACK: u8 = 0x10;
    pub const PSH_ACK: u8 = 0x18;

    /// Ethernet + IPv4 (192.0.2.1 → 203.0.113.2) or IPv6 (2001:db8:1::1 → 2001:db8:3::2) + TCP
    /// with `options` (a multiple of 4 bytes) and `payload` zero bytes. Checksums are left zero:
    /// the programs do not check them.
    pub fn build(v6: bool, sport: u16, flags: u8, options: &[u8], payload: usize) -> Vec<u8> {
        assert!(options.len().is_multiple_of(4) && options.len() <= 40, "options must be padded");
        let tcp_len = 20 + options.len() + payload;
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 203, 0, 113, 2]);
        }
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&8080u16.to_be_bytes());
        f.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        f.extend_from_slice(&0x0506_0708u32.to_be_bytes());
        f.push(((20 + options.len()) / 4) as u8 * 16);
        f.push(flags);
        f.extend_from_slice(&[0x01, 0xf6, 0, 0, 0, 0]);
        f.extend_from_slice(options);
        f.resize(f.len() + payload, 0);
        f
    }
}

struct Case {
    name: BenchFrame,
    what: &'static str,
    frame: Vec<u8>,
    /// Run once through each program before timing: the SYN that makes the observer track the flow.
    primer: Option<Vec<u8>>,
}

fn cases() -> Vec<Case> {
    use frame::*;
    let syn = |v6, sport, mptcp| Some(build(v6, sport, SYN, &syn_options(mptcp), 0));
    vec![
        Case {
            name: BenchFrame::SynMpCapable,
            what: "SYN with MP_CAPABLE (an event each time)",
            frame: build(false, 40001, SYN, &syn_options(true), 0),
            primer: None,
        },
        Case {
            name: BenchFrame::DataDss,
            what: "IPv4 data segment, 1420 B payload, DSS (data ACK + mapping)",
            frame: build(false, 40002, PSH_ACK, &dss_data_options(), 1420),
            primer: syn(false, 40002, true),
        },
        Case {
            name: BenchFrame::PureAck,
            what: "ACK without payload, DSS data ACK only",
            frame: build(false, 40003, ACK, &dss_ack_options(), 0),
            primer: syn(false, 40003, true),
        },
        Case {
            name: BenchFrame::TcpData,
            what: "non-MPTCP TCP data segment, 1448 B payload, tracked flow",
            frame: build(false, 40004, PSH_ACK, &nop_nop_ts(), 1448),
            primer: syn(false, 40004, false),
        },
        Case {
            name: BenchFrame::Ipv6Dss,
            what: "IPv6 data segment, 1400 B payload, DSS",
            frame: build(true, 40005, PSH_ACK, &dss_data_options(), 1400),
            primer: syn(true, 40005, true),
        },
    ]
}

/// A TC program, loaded.
fn program<'a>(obs: &'a mut Observer, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    super::load_tc(obs.ebpf_mut(), name)
}

/// Runs `name` on `frame` `repeat` times in chunks the ring buffer can hold, draining it between
/// chunks; returns the kernel's mean time per run in ns.
fn time_runs(
    obs: &mut Observer,
    ring: &mut RingBuf<MapData>,
    name: &str,
    frame: &[u8],
    repeat: u32,
    chunk: u32,
) -> anyhow::Result<f64> {
    let prog = program(obs, name)?;
    let (mut left, mut total_ns) = (repeat, 0f64);
    while left > 0 {
        let n = left.min(chunk);
        let res = prog
            .test_run(TestRunOptions { data_in: Some(frame), repeat: n, ..Default::default() })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        if res.return_value != u32::MAX {
            anyhow::bail!("{name} returned {} instead of TC_NEXT (-1)", res.return_value as i32);
        }
        total_ns += res.duration.as_nanos() as f64 * n as f64;
        left -= n;
        while ring.next().is_some() {}
    }
    Ok(total_ns / repeat as f64)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub fn run(args: BenchOptions) -> anyhow::Result<()> {
    let out = measure(&args)?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

fn measure(args: &BenchOptions) -> anyhow::Result<ProgBench> {
    anyhow::ensure!(args.repeat >= 1 && args.rounds >= 1, "prog-bench needs at least one run and one round");
    crate::host::preflight::check_privileges()?;
    let started = Instant::now();
    let mut obs = Observer::load(&ObserverOptions::default())?;
    program(&mut obs, EMPTY).context("loading the empty classifier")?;
    let mut ring = obs.take_ring()?;
    // One ring record: the event rounded up to 8 bytes plus the 8-byte record header.
    let record = size_of::<PacketEvent>().div_ceil(8) * 8 + 8;
    let chunk = ((RING_BYTES / record) / 2).max(1) as u32;
    let cases = cases();
    for c in &cases {
        for p in TcProgram::ALL {
            if let Some(primer) = &c.primer {
                time_runs(&mut obs, &mut ring, p.name(), primer, 1, 1)?;
            }
        }
    }
    let before = obs.counters();
    let mut empty: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut progs: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); TcProgram::ALL.len()]; cases.len()];
    for _ in 0..args.rounds {
        for (i, c) in cases.iter().enumerate() {
            empty[i].push(time_runs(&mut obs, &mut ring, EMPTY, &c.frame, args.repeat, chunk)?);
            for (j, p) in TcProgram::ALL.iter().enumerate() {
                progs[i][j].push(time_runs(&mut obs, &mut ring, p.name(), &c.frame, args.repeat, chunk)?);
            }
        }
    }
    let after = obs.counters();
    let frames = cases
        .iter()
        .zip(empty)
        .zip(progs)
        .map(|((c, empty_rounds_ns), prog_rounds)| {
            let empty_ns = median(&empty_rounds_ns);
            let programs = TcProgram::ALL
                .into_iter()
                .zip(prog_rounds)
                .map(|(p, rounds_ns)| {
                    let ns = median(&rounds_ns);
                    (p, ProgramCost { ns, net_ns: ns - empty_ns, rounds_ns })
                })
                .collect();
            FrameCost {
                name: c.name,
                what: c.what.to_string(),
                frame_bytes: c.frame.len() as u64,
                empty_ns,
                empty_rounds_ns,
                programs,
            }
        })
        .collect();
    let delta = |index: u32| {
        let name = counters::NAMES[index as usize];
        after.get(name).saturating_sub(before.get(name))
    };
    Ok(ProgBench {
        repeat: args.repeat,
        rounds: args.rounds,
        chunk,
        event_bytes: size_of::<PacketEvent>() as u64,
        frames,
        not_measured: NOT_MEASURED.iter().map(|(p, why)| (p.to_string(), why.to_string())).collect(),
        counters: ProgBenchCounters {
            packets_inspected: delta(counters::PACKETS_INSPECTED),
            events_emitted: delta(counters::EVENTS_EMITTED),
            ringbuf_dropped_events: delta(counters::RINGBUF_DROPS),
        },
        seconds: started.elapsed().as_secs_f64(),
    })
}
