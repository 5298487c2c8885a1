//! The foreign MPTCP client (`mptcp-foreign-peer`, TCP and MPTCP written by hand over a raw
//! socket) against a Linux MPTCP listener in the lab, with `watch` and tcpdump on the client's and
//! the server's interface: running it, and holding what each observer saw against tshark's
//! decoding of the same packets.

use std::{
    collections::BTreeMap,
    ops::Deref,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mptcp_probe_common::options::{TCPOPT_MPTCP, TCPOPT_NOP, TCPOPT_TIMESTAMP};
use mptcp_probe_model::{Direction, FlowSummary, Subtype};
use serde_json::Value;

use crate::{
    lab::{addr, ifname, sh, Child, Lab, Netns},
    oracle::{self, Capture},
    probe::{TempDir, WatchOutput, Watcher},
    workspace::Bin,
};

pub const FOREIGN_PEER: Bin = Bin {
    name: "mptcp-foreign-peer",
    env: "MPTCP_FOREIGN_PEER_BIN",
    build: "cargo build --release -p mptcp-probe-tests --bins",
};

/// The firewall mark of the foreign client's packets: its own RSTs (MP_TCPRST) pass, the
/// namespace kernel's are dropped ([`drop_kernel_rsts`]).
pub const FOREIGN_PEER_MARK: u32 = 0x4d50;

/// The port the listener is on.
pub const LISTEN_PORT: u16 = 8080;

#[derive(Clone, Copy, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn socket(self, ip: &str, port: u16) -> String {
        match self {
            Family::V4 => format!("{ip}:{port}"),
            Family::V6 => format!("[{ip}]:{port}"),
        }
    }

    pub fn server_ip(self) -> &'static str {
        match self {
            Family::V4 => addr::SERVER,
            Family::V6 => addr::SERVER_V6,
        }
    }

    /// The listener's address and port.
    pub fn server(self) -> String {
        self.server_at(LISTEN_PORT)
    }

    pub fn server_at(self, port: u16) -> String {
        self.socket(self.server_ip(), port)
    }

    /// The client's first address with `port`.
    pub fn client(self, port: u16) -> String {
        self.socket(if matches!(self, Family::V4) { addr::CLIENT1 } else { addr::CLIENT1_V6 }, port)
    }

    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// The client namespace's TCP stack does not know the foreign client's connection: its RSTs to
/// the listener's segments are dropped on the way out (the foreign client's own are marked and
/// pass).
pub fn drop_kernel_rsts(ns: &Netns, family: Family, port: u16) {
    let (port, mark) = (port.to_string(), format!("{FOREIGN_PEER_MARK:#x}"));
    ns.run(
        family.iptables(),
        &[
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--sport",
            &port,
            "--tcp-flags",
            "RST",
            "RST",
            "-m",
            "mark",
            "!",
            "--mark",
            &mark,
            "-j",
            "DROP",
        ],
    );
}

/// In a fresh lab the router takes about two seconds to resolve the server's IPv6 address (its
/// first neighbour solicitations go unanswered), holding the first SYNs, which then reach the
/// server together. One datagram ahead, and the wait for the router's neighbour entry, keep that
/// out of the scenarios.
pub fn resolve_the_server(lab: &Lab, family: Family) {
    let ip = family.server_ip();
    sh(lab.c.cmd("bash").args(["-c", &format!("echo > /dev/udp/{ip}/9")]));
    for _ in 0..50 {
        let out = lab.m.run("ip", &["neigh", "show", ip]);
        if String::from_utf8_lossy(&out.stdout).contains("lladdr") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the router did not resolve the server's {ip} within 5 s");
}

fn foreign_command(ns: &Netns, family: Family, local_port: u16, args: &[&str]) -> Command {
    let mut cmd = ns.cmd(FOREIGN_PEER.locate().unwrap_or_else(|e| panic!("{e}")));
    cmd.args(["--connect", &family.server(), "--local", &family.client(local_port)]).args(args);
    cmd
}

fn report(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("the foreign client printed {text:?}: {e}"))
}

/// Runs the foreign client from the client's first address and `local_port` to the listener,
/// with `args`; returns its JSON report.
pub fn foreign_client(ns: &Netns, family: Family, local_port: u16, args: &[&str]) -> Value {
    let out = sh(&mut foreign_command(ns, family, local_port, args));
    report(&String::from_utf8_lossy(&out.stdout))
}

/// A foreign client running in the background, to be paused (`--late pause:FILE`) and resumed.
pub struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    resume: PathBuf,
    _dir: TempDir,
}

impl Running {
    /// Starts the foreign client with `args` and `--late pause:FILE`, on `cpu` alone if given.
    pub fn start(ns: &Netns, family: Family, local_port: u16, args: &[&str], cpu: Option<u32>) -> Self {
        let dir = TempDir::new("foreign");
        let (stdout, stderr, resume) =
            (dir.0.join("report.json"), dir.0.join("stderr"), dir.0.join("resume"));
        let pause = format!("pause:{}", resume.display());
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = ns.cmd("taskset");
                c.args(["-c", &cpu.to_string()]).arg(FOREIGN_PEER.locate().unwrap_or_else(|e| panic!("{e}")));
                c
            }
            None => ns.cmd(FOREIGN_PEER.locate().unwrap_or_else(|e| panic!("{e}"))),
        };
        cmd.args(["--connect", &family.server(), "--local", &family.client(local_port)])
            .args(args)
            .args(["--late", &pause])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("report file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        Self { child: Child::spawn(&mut cmd), stdout, stderr, resume, _dir: dir }
    }

    /// Waits until it has paused (everything it sent acknowledged).
    pub fn wait_paused(&mut self, timeout: Duration) {
        if let Err(e) = self.child.wait_ready(&self.stderr, "paused", timeout, "the foreign client") {
            panic!("{e:#}");
        }
    }

    /// Lets it go on and waits for its report.
    pub fn resume(mut self, timeout: Duration) -> Value {
        std::fs::write(&self.resume, b"").expect("resume file");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("waiting for the foreign client") {
                break status;
            }
            assert!(start.elapsed() < timeout, "the foreign client did not finish within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(status.success(), "the foreign client failed ({status}): {err}");
        report(&std::fs::read_to_string(&self.stdout).unwrap_or_default())
    }
}

/// One packet of a capture as tshark decodes it: [`oracle::Packet`] and what the late options
/// need besides.
#[derive(Clone, Debug)]
pub struct Wire {
    pub frame: u32,
    pub packet: oracle::Packet,
    pub rst: bool,
    pub fin: bool,
    /// The kinds of the TCP options, in order (NOPs included).
    pub option_kinds: Vec<u8>,
    /// The data-level lengths of the DSS mappings.
    pub data_level_lens: Vec<u16>,
    /// MP_TCPRST reasons.
    pub rst_reasons: Vec<u8>,
    /// ADD_ADDR echo bits.
    pub add_addr_echo: Vec<bool>,
    /// The TCP sequence number, as on the wire.
    pub seq: u32,
    /// The data sequence numbers of the DSS mappings, as on the wire.
    pub dsns: Vec<u64>,
}

impl Deref for Wire {
    type Target = oracle::Packet;

    fn deref(&self) -> &oracle::Packet {
        &self.packet
    }
}

impl Wire {
    /// Its direction on `flow` (None: another flow's).
    pub fn direction(&self, flow: &FlowSummary) -> Option<Direction> {
        match (self.src_port, self.dst_port) {
            (s, d) if s == flow.local_port && d == flow.remote_port => Some(Direction::Tx),
            (s, d) if s == flow.remote_port && d == flow.local_port => Some(Direction::Rx),
            _ => None,
        }
    }

    fn carries(&self, st: Subtype) -> bool {
        self.mptcp.iter().any(|(s, _)| *s == st)
    }

    /// Data with no mapping for it: neither a DSS nor an MP_CAPABLE with data (22 or 24 bytes).
    pub fn data_without_dss(&self) -> bool {
        self.len > 0
            && !self.syn
            && !self.mptcp.iter().any(|(s, l)| *s == Subtype::Dss || (*s == Subtype::MpCapable && *l >= 22))
    }

    /// A DSS mapping of data-level length 0 on a segment with data.
    pub fn infinite_mapping(&self) -> bool {
        self.len > 0 && self.carries(Subtype::Dss) && self.data_level_lens.contains(&0)
    }

    /// A data segment as Linux writes the steady ones: NOP NOP TS, a 26-byte DSS with its mapping,
    /// NOP NOP; no SYN, FIN or RST. The observer's fast path takes these.
    pub fn steady_data(&self) -> bool {
        let layout = [TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, TCPOPT_MPTCP, TCPOPT_NOP, TCPOPT_NOP];
        self.len > 0
            && !self.syn
            && !self.fin
            && !self.rst
            && self.option_kinds == layout
            && self.mptcp == [(Subtype::Dss, 26)]
            && !self.data_level_lens.contains(&0)
    }
}

fn flag(field: &str) -> bool {
    matches!(field, "1" | "True")
}

fn list<T: std::str::FromStr>(field: &str) -> Vec<T> {
    field.split(',').filter_map(|s| s.trim().parse().ok()).collect()
}

/// The oracle's decoding of a capture, with the fields it leaves out.
pub fn decode(file: &Path) -> Vec<Wire> {
    let packets = oracle::decode(file);
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(file).args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]);
    cmd.args(["-E", "aggregator=,"]);
    for f in [
        "frame.number",
        "tcp.flags.reset",
        "tcp.flags.fin",
        "tcp.option_kind",
        "tcp.options.mptcp.datalvllen",
        "tcp.options.mptcp.rst_reason",
        "tcp.options.mptcp.echo",
        "tcp.seq_raw",
        "tcp.options.mptcp.rawdataseqno",
    ] {
        cmd.args(["-e", f]);
    }
    let out = sh(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    let extra: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(extra.len(), packets.len(), "tshark read {} differently the second time", file.display());
    packets
        .into_iter()
        .zip(extra)
        .map(|(packet, f)| {
            let field = |i: usize| f.get(i).copied().unwrap_or("");
            Wire {
                frame: field(0).parse().unwrap_or(0),
                packet,
                rst: flag(field(1)),
                fin: flag(field(2)),
                option_kinds: list(field(3)),
                data_level_lens: list(field(4)),
                rst_reasons: list(field(5)),
                add_addr_echo: list::<u8>(field(6)).into_iter().map(|e| e != 0).collect(),
                seq: field(7).parse().unwrap_or(0),
                dsns: list(field(8)),
            }
        })
        .collect()
}

/// `watch --events` and tcpdump on the client's and the server's interface.
pub struct Observers {
    client: Watcher,
    server: Watcher,
    client_cap: Capture,
    server_cap: Capture,
}

/// What they saw.
pub struct Seen {
    pub client: WatchOutput,
    pub server: WatchOutput,
    pub client_trace: Vec<Wire>,
    pub server_trace: Vec<Wire>,
}

impl Observers {
    /// Starts them; `watch` with `args` besides `--iface` and `--events`.
    pub fn start(lab: &Lab, args: &[&str]) -> Self {
        let watch = |ns, iface| {
            let mut a = vec!["--iface", iface, "--events"];
            a.extend_from_slice(args);
            Watcher::start(ns, &a)
        };
        Self {
            client: watch(&lab.c, ifname::C1),
            server: watch(&lab.s, ifname::S),
            client_cap: Capture::start(&lab.c, ifname::C1),
            server_cap: Capture::start(&lab.s, ifname::S),
        }
    }

    /// Stops them once the last summaries (FIN both ways, RST) are out; each `watch` must have
    /// exited cleanly.
    pub fn stop(self) -> Seen {
        std::thread::sleep(Duration::from_millis(1200));
        let client_trace = self.client_cap.finish_with(decode);
        let server_trace = self.server_cap.finish_with(decode);
        let seen =
            Seen { client: self.client.stop(), server: self.server.stop(), client_trace, server_trace };
        for out in [&seen.client, &seen.server] {
            assert_eq!(out.exit_code, Some(0), "{}", out.dump());
        }
        seen
    }
}

impl Seen {
    /// Each end's flow summary of the connection from `port`, with that end's trace and output.
    pub fn flows(&self, port: u16) -> [(&FlowSummary, &[Wire], &WatchOutput); 2] {
        [
            (self.client.flow_with_port(port), &self.client_trace[..], &self.client),
            (self.server.flow_with_port(port), &self.server_trace[..], &self.server),
        ]
    }
}

/// Per direction and subtype, the MPTCP options of `packets` on `flow`.
pub fn tshark_options<'a>(
    flow: &FlowSummary,
    packets: impl IntoIterator<Item = &'a Wire>,
) -> BTreeMap<(Direction, Subtype), u64> {
    let mut counts = BTreeMap::new();
    for p in packets {
        let Some(dir) = p.direction(flow) else { continue };
        for (st, _) in &p.mptcp {
            *counts.entry((dir, *st)).or_default() += 1;
        }
    }
    counts
}

/// The flow's MPTCP options per direction and subtype.
pub fn probe_options(flow: &FlowSummary) -> BTreeMap<(Direction, Subtype), u64> {
    let mut counts = BTreeMap::new();
    for dir in [Direction::Tx, Direction::Rx] {
        for (st, n) in flow.options.get(dir) {
            counts.insert((dir, *st), u64::from(*n));
        }
    }
    counts
}

/// The MPTCP options of a flow per direction and subtype agree with tshark's decoding of the same
/// interface's packets.
pub fn assert_options_agree_with_tshark(flow: &FlowSummary, trace: &[Wire]) {
    let tshark = tshark_options(flow, trace);
    assert!(!tshark.is_empty(), "tshark saw no MPTCP options on {}", flow.iface);
    assert_eq!(
        probe_options(flow),
        tshark,
        "option counts per direction on {} differ from tshark's: {flow:?}",
        flow.iface
    );
}

/// What a flow summary counts per direction, as counted from packets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: [u64; 2],
    pub payload_bytes: [u64; 2],
    pub data_segments: [u64; 2],
    pub data_without_dss: [u64; 2],
    pub infinite_mappings: [u64; 2],
    pub fin: [bool; 2],
    pub rst: [bool; 2],
}

fn slot(d: Direction) -> usize {
    match d {
        Direction::Tx => 0,
        Direction::Rx => 1,
    }
}

impl Totals {
    /// tshark's count of `packets` on `flow`; data without DSS only where the flow negotiated
    /// MPTCP (elsewhere it is plain TCP).
    pub fn of_packets<'a>(flow: &FlowSummary, packets: impl IntoIterator<Item = &'a Wire>) -> Self {
        let negotiated = flow.handshake.syn_ack.as_ref().is_some_and(|h| h.mptcp.is_some());
        let mut t = Totals::default();
        for p in packets {
            let Some(d) = p.direction(flow).map(slot) else { continue };
            t.packets[d] += 1;
            t.payload_bytes[d] += u64::from(p.len);
            t.data_segments[d] += u64::from(p.len > 0);
            t.data_without_dss[d] += u64::from(negotiated && p.data_without_dss());
            t.infinite_mappings[d] += u64::from(p.infinite_mapping());
            t.fin[d] |= p.fin;
            t.rst[d] |= p.rst;
        }
        t
    }

    /// What the summary says.
    pub fn of_summary(flow: &FlowSummary) -> Self {
        let two = |tx: u64, rx: u64| [tx, rx];
        Totals {
            packets: two(flow.packets.tx.into(), flow.packets.rx.into()),
            payload_bytes: two(flow.payload_bytes.tx, flow.payload_bytes.rx),
            data_segments: two(flow.data_segments.tx.into(), flow.data_segments.rx.into()),
            data_without_dss: two(flow.data_without_dss.tx.into(), flow.data_without_dss.rx.into()),
            infinite_mappings: two(flow.infinite_mappings.tx.into(), flow.infinite_mappings.rx.into()),
            fin: [flow.fin.tx, flow.fin.rx],
            rst: [flow.rst.tx, flow.rst.rx],
        }
    }
}

/// Every count of the summary — options per subtype, packets, bytes, data segments, data without
/// DSS, infinite mappings, FIN and RST, each way — agrees with tshark's decoding of the same
/// interface's packets.
pub fn assert_counts_agree_with_tshark(flow: &FlowSummary, trace: &[Wire]) {
    assert_options_agree_with_tshark(flow, trace);
    assert_eq!(
        Totals::of_summary(flow),
        Totals::of_packets(flow, trace),
        "the summary on {} counts otherwise than tshark ([tx, rx]): {flow:?}",
        flow.iface
    );
}

/// How far a MPTcpExt counter of the watcher's namespace moved while it watched.
pub fn mib(out: &WatchOutput, name: &str) -> u64 {
    out.counters().mib_delta.get(name).copied().unwrap_or(0)
}
