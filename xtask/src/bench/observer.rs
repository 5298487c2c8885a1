//! The observers compared: none, `mptcp-probe watch` (in the modes of [`WatchMode`]), and
//! `tcpdump -w` with and without a snap length; started in the client namespace on its interface,
//! stopped with SIGINT and measured.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mptcp_probe_common::counters;
use mptcp_probe_model::{Counters, WatchLine};
use mptcp_probe_tests::lab::{ifname, Child, Netns};
use serde::Serialize;

use super::{host, progress, Bins, PIN_CPU};

/// How long an observer may take to show it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an observer may take to exit after SIGINT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Obs {
    Off,
    Probe,
    TcpdumpHeader,
    TcpdumpFull,
}

impl Obs {
    pub const ALL: [Obs; 4] = [Obs::Off, Obs::Probe, Obs::TcpdumpHeader, Obs::TcpdumpFull];

    /// Its key in the JSON (a field of [`PerObserver`]) and in file names.
    pub fn key(self) -> &'static str {
        match self {
            Obs::Off => "off",
            Obs::Probe => "probe",
            Obs::TcpdumpHeader => "tcpdump_header",
            Obs::TcpdumpFull => "tcpdump_full",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Obs::Off => "no observer",
            Obs::Probe => "mptcp-probe watch",
            Obs::TcpdumpHeader => "tcpdump -s 128 -w",
            Obs::TcpdumpFull => "tcpdump -s 0 -w",
        }
    }

    pub fn is_tcpdump(self) -> bool {
        matches!(self, Obs::TcpdumpHeader | Obs::TcpdumpFull)
    }
}

/// How `watch` runs. [`Obs::Probe`] is [`WatchMode::Default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// As a user runs it: a clean connection is one flow summary and its handshake in the trace;
    /// the events and packets of a troubled one are written at its summary.
    Default,
    /// As the daemon runs: flow summaries only, and without a trace the kernel reports only what
    /// went wrong and the end of each flow.
    FlowsOnly,
    /// Every event as it comes.
    Events,
}

impl WatchMode {
    pub const ALL: [WatchMode; 3] = [WatchMode::FlowsOnly, WatchMode::Default, WatchMode::Events];

    /// Its key in the JSON (a field of [`PerWatchMode`]) and in file names.
    pub fn key(self) -> &'static str {
        match self {
            WatchMode::Default => "default",
            WatchMode::FlowsOnly => "flows_only",
            WatchMode::Events => "events",
        }
    }

    /// The command line, as the tables show it (the interface is always the client's).
    pub fn label(self) -> &'static str {
        match self {
            WatchMode::Default => "watch --json --pcap FILE",
            WatchMode::FlowsOnly => "watch --flows-only --json",
            WatchMode::Events => "watch --events --json",
        }
    }

    /// Its options after `watch --iface IF`; the trace file follows `--pcap`.
    fn args(self) -> &'static [&'static str] {
        match self {
            WatchMode::Default => &["--json", "--pcap"],
            WatchMode::FlowsOnly => &["--flows-only", "--json"],
            WatchMode::Events => &["--events", "--json"],
        }
    }

    fn writes_trace(self) -> bool {
        self == WatchMode::Default
    }
}

/// One `T` for each [`WatchMode`]; the field names are [`WatchMode::key`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PerWatchMode<T> {
    pub flows_only: T,
    pub default: T,
    pub events: T,
}

impl<T> PerWatchMode<T> {
    pub fn from_fn(mut f: impl FnMut(WatchMode) -> T) -> Self {
        Self {
            flows_only: f(WatchMode::FlowsOnly),
            default: f(WatchMode::Default),
            events: f(WatchMode::Events),
        }
    }

    pub fn get(&self, mode: WatchMode) -> &T {
        match mode {
            WatchMode::FlowsOnly => &self.flows_only,
            WatchMode::Default => &self.default,
            WatchMode::Events => &self.events,
        }
    }

    pub fn get_mut(&mut self, mode: WatchMode) -> &mut T {
        match mode {
            WatchMode::FlowsOnly => &mut self.flows_only,
            WatchMode::Default => &mut self.default,
            WatchMode::Events => &mut self.events,
        }
    }
}

/// One `T` for each observer; the field names are [`Obs::key`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PerObserver<T> {
    pub off: T,
    pub probe: T,
    pub tcpdump_header: T,
    pub tcpdump_full: T,
}

impl<T> PerObserver<T> {
    pub fn from_fn(mut f: impl FnMut(Obs) -> T) -> Self {
        Self {
            off: f(Obs::Off),
            probe: f(Obs::Probe),
            tcpdump_header: f(Obs::TcpdumpHeader),
            tcpdump_full: f(Obs::TcpdumpFull),
        }
    }

    pub fn get(&self, obs: Obs) -> &T {
        match obs {
            Obs::Off => &self.off,
            Obs::Probe => &self.probe,
            Obs::TcpdumpHeader => &self.tcpdump_header,
            Obs::TcpdumpFull => &self.tcpdump_full,
        }
    }
}

/// A running observer in the client namespace.
pub struct Running {
    child: Child,
    pub pid: u32,
    /// A watch: how it runs.
    mode: Option<WatchMode>,
    stdout: PathBuf,
    stderr: PathBuf,
    file: PathBuf,
}

impl Running {
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }
}

/// What an observer left behind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stopped {
    pub exit_code: Option<i32>,
    pub peak_rss_kib: u64,
    /// Capture file (tcpdump) or pcapng (watch --pcap), bytes.
    pub file_bytes: u64,
    /// watch: what its output held.
    pub watch: WatchTally,
    /// watch --pcap: the trace's blocks.
    pub pcapng: PcapngTally,
    /// tcpdump: packets it reported dropped by the kernel.
    pub tcpdump_dropped: Option<u64>,
}

impl Stopped {
    /// A kernel-program counter from watch's closing line (`index`: [`counters`]); None
    /// without that line.
    pub fn kernel_counter(&self, index: u32) -> Option<u64> {
        let c = self.watch.counters.as_ref()?;
        c.kernel.get(counters::NAMES[index as usize]).copied()
    }

    pub fn ringbuf_dropped(&self) -> Option<u64> {
        self.kernel_counter(counters::RINGBUF_DROPS)
    }

    /// Events the kernel programs emitted per second of `seconds`.
    pub fn events_per_s(&self, seconds: f64) -> f64 {
        self.kernel_counter(counters::EVENTS_EMITTED).map_or(f64::NAN, |n| n as f64) / seconds
    }

    /// What watch keeps per connection when `connections` shared this session: what grows
    /// with the connections (lines, packet blocks), not the session's own (see
    /// [`Stopped::session_bytes`]).
    pub fn kept_per_connection(&self, connections: f64) -> Kept {
        Kept {
            events: self.watch.event_bytes as f64 / connections,
            summary: self.watch.flow_bytes as f64 / connections,
            pcapng_packets: self.pcapng.packet_bytes as f64 / connections,
        }
    }

    /// What a watch session writes once, whatever it saw: the closing counters line and the
    /// trace's section and interface blocks.
    pub fn session_bytes(&self) -> u64 {
        self.watch.counters_bytes + self.pcapng.other_bytes
    }
}

/// Bytes watch keeps per connection: event lines, flow-summary lines and the trace's packet
/// blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Kept {
    pub events: f64,
    pub summary: f64,
    pub pcapng_packets: f64,
}

impl Kept {
    pub fn total(&self) -> f64 {
        self.events + self.summary + self.pcapng_packets
    }
}

/// A pcapng file by block: packet blocks (what grows with the traffic) and the rest (section
/// header, interface descriptions, statistics: what a file has once or per interface).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcapngTally {
    pub packets: u64,
    pub packet_bytes: u64,
    pub other_bytes: u64,
    /// Bytes after the last whole block (a file cut short); counted in `other_bytes`.
    pub trailing_bytes: u64,
}

impl PcapngTally {
    const SECTION_HEADER: u32 = 0x0A0D_0D0A;
    const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
    /// Enhanced, simple and the obsolete packet block.
    const PACKET_BLOCKS: [u32; 3] = [6, 3, 2];

    pub fn of(file: &[u8]) -> Self {
        let mut t = Self::default();
        let mut little = true;
        let mut at = 0usize;
        let word = |at: usize, little: bool| -> Option<u32> {
            let b: [u8; 4] = file.get(at..at + 4)?.try_into().ok()?;
            Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
        };
        while at < file.len() {
            // The section header says the byte order of what follows it.
            if word(at, true) == Some(Self::SECTION_HEADER) {
                little = word(at + 8, true) == Some(Self::BYTE_ORDER_MAGIC);
            }
            let (Some(kind), Some(len)) = (word(at, little), word(at + 4, little)) else { break };
            let len = len as usize;
            if len < 12 || !len.is_multiple_of(4) || at + len > file.len() {
                break;
            }
            if Self::PACKET_BLOCKS.contains(&kind) {
                t.packets += 1;
                t.packet_bytes += len as u64;
            } else {
                t.other_bytes += len as u64;
            }
            at += len;
        }
        t.trailing_bytes = (file.len() - at) as u64;
        t.other_bytes += t.trailing_bytes;
        t
    }
}

/// The lines of `watch --json`, by type, with their bytes (newline included) and the counters
/// of the closing line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchTally {
    pub events: u64,
    pub event_bytes: u64,
    pub flows: u64,
    pub flow_bytes: u64,
    /// Flow summaries of connections where something went wrong.
    pub troubled_flows: u64,
    /// Bytes of each top-level field of the flow lines (`"key":value` and its comma), all lines.
    pub flow_field_bytes: BTreeMap<String, u64>,
    pub counters_bytes: u64,
    pub counters: Option<Counters>,
    /// Lines that are not a [`WatchLine`], and the first reason.
    pub unparsed: u64,
    pub first_error: Option<String>,
}

impl WatchTally {
    fn add_fields(&mut self, line: &str) {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(line) else { return };
        for (k, v) in fields {
            // "key": value, — the quotes, the colon and the comma around them.
            let bytes = k.len() + 4 + v.to_string().len();
            *self.flow_field_bytes.entry(k).or_default() += bytes as u64;
        }
    }

    pub fn of(output: &str) -> Self {
        let mut t = Self::default();
        for line in output.lines() {
            let n = line.len() as u64 + 1;
            match serde_json::from_str::<WatchLine>(line) {
                Ok(WatchLine::Event(_)) => {
                    t.event_bytes += n;
                    t.events += 1;
                }
                Ok(WatchLine::Flow(f)) => {
                    t.flow_bytes += n;
                    t.flows += 1;
                    t.troubled_flows += f.troubled() as u64;
                    t.add_fields(line);
                }
                Ok(WatchLine::Counters(c)) => {
                    t.counters_bytes += n;
                    t.counters = Some(c);
                }
                Err(e) => {
                    t.unparsed += 1;
                    t.first_error.get_or_insert_with(|| format!("{e}: {line}"));
                }
            }
        }
        t
    }
}

/// `program` in `ns`, on `cpu` only when given (`taskset` execs it: same pid).
pub fn pinned_cmd(ns: &Netns, program: &OsStr, cpu: Option<&str>) -> Command {
    if let Some(cpu) = cpu {
        let mut c = ns.cmd("taskset");
        c.args(["-c", cpu]).arg(program);
        c
    } else {
        ns.cmd(program)
    }
}

/// Starts an observer on the client's interface (None for [`Obs::Off`]); [`Obs::Probe`] is
/// watch in its default mode; `extra`: more arguments for watch; `pinned`: on [`PIN_CPU`] only.
pub fn start(
    kind: Obs,
    ns: &Netns,
    dir: &Path,
    bins: &Bins,
    extra: &[&str],
    pinned: bool,
) -> anyhow::Result<Option<Running>> {
    let mode = (kind == Obs::Probe).then_some(WatchMode::Default);
    spawn(kind, mode, ns, dir, bins, extra, pinned)
}

/// Starts `watch` in `mode` on the client's interface; `extra`: more arguments for it.
pub fn start_watch(
    mode: WatchMode,
    ns: &Netns,
    dir: &Path,
    bins: &Bins,
    extra: &[&str],
) -> anyhow::Result<Running> {
    Ok(spawn(Obs::Probe, Some(mode), ns, dir, bins, extra, false)?.expect("a watch is an observer"))
}

fn spawn(
    kind: Obs,
    mode: Option<WatchMode>,
    ns: &Netns,
    dir: &Path,
    bins: &Bins,
    extra: &[&str],
    pinned: bool,
) -> anyhow::Result<Option<Running>> {
    static STARTED: AtomicU32 = AtomicU32::new(0);
    let name = mode.map_or(kind.key(), WatchMode::key);
    let tag = format!("{name}-{}", STARTED.fetch_add(1, Ordering::Relaxed));
    let stdout = dir.join(format!("{tag}.out"));
    let stderr = dir.join(format!("{tag}.err"));
    let (mut cmd, file, ready) = match (kind, mode) {
        (Obs::Off, _) => return Ok(None),
        (Obs::Probe, mode) => {
            let mode = mode.unwrap_or(WatchMode::Default);
            let file = dir.join(format!("{tag}.pcapng"));
            let mut c = pinned_cmd(ns, bins.probe.as_os_str(), pinned.then_some(PIN_CPU));
            c.args(["watch", "--iface", ifname::C1]).args(mode.args());
            if mode.writes_trace() {
                c.arg(&file);
            }
            c.args(extra);
            (c, file, "watching")
        }
        (Obs::TcpdumpHeader | Obs::TcpdumpFull, _) => {
            let file = dir.join(format!("{tag}.pcap"));
            let snap = if kind == Obs::TcpdumpFull { "0" } else { "128" };
            let mut c = pinned_cmd(ns, OsStr::new("tcpdump"), pinned.then_some(PIN_CPU));
            // -Z root: the file is written as root into our private directory.
            c.args(["-n", "-i", ifname::C1, "-s", snap, "-Z", "root", "-w"]).arg(&file);
            (c, file, "listening on")
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).context("observer stdout file")?)
        .stderr(fs::File::create(&stderr).context("observer stderr file")?);
    let child = Child::spawn(&mut cmd);
    let pid = child.0.id();
    let mut r = Running { child, pid, mode, stdout, stderr, file };
    r.child.wait_ready(&r.stderr, ready, READY_TIMEOUT, kind.label())?;
    Ok(Some(r))
}

/// Stops an observer with SIGINT (killed after [`STOP_TIMEOUT`]) and measures what it left;
/// its files are removed.
pub fn stop(mut r: Running) -> Stopped {
    let peak_rss_kib = host::status_kib(r.pid, "VmHWM");
    r.child.signal(libc::SIGINT);
    let start = Instant::now();
    let mut exit_code = None;
    while start.elapsed() < STOP_TIMEOUT {
        if let Ok(Some(st)) = r.child.0.try_wait() {
            exit_code = st.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(r.child);
    let stderr = fs::read_to_string(&r.stderr).unwrap_or_default();
    let file_bytes = fs::metadata(&r.file).map(|m| m.len()).unwrap_or(0);
    // watch's trace holds a few packets per connection; tcpdump's captures are not read.
    let pcapng = match r.mode {
        Some(m) if m.writes_trace() => PcapngTally::of(&fs::read(&r.file).unwrap_or_default()),
        _ => PcapngTally::default(),
    };
    // Capture files can be gigabytes: gone as soon as they are measured.
    let _ = fs::remove_file(&r.file);
    let mut s = Stopped { exit_code, peak_rss_kib, file_bytes, pcapng, ..Default::default() };
    if r.mode.is_some() {
        s.watch = WatchTally::of(&fs::read_to_string(&r.stdout).unwrap_or_default());
        if let Some(e) = &s.watch.first_error {
            progress(format!(
                "warning: {} lines of watch output are not watch lines; first: {e}",
                s.watch.unparsed
            ));
        }
    } else {
        s.tcpdump_dropped = tcpdump_dropped(&stderr);
    }
    let _ = fs::remove_file(&r.stdout);
    let _ = fs::remove_file(&r.stderr);
    s
}

/// "N packets dropped by kernel" from tcpdump's closing statistics.
fn tcpdump_dropped(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| l.strip_suffix("packets dropped by kernel")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_output_is_tallied_by_line_type_and_the_closing_counters_are_kept() {
        let counters = r#"{"type":"counters","kernel":{"events_emitted":40,"ringbuf_dropped_events":0},"flow_table_evictions":3,"decode_errors":0,"flows_evicted_unsummarised":1,"fallback_source":"Fentry","mib_delta":{}}"#;
        let event = r#"{"type":"event","kind":"fallback","ts_ns":1,"msk":"0x1","reason":"DssFallback"}"#;
        let out = format!("{event}\n{event}\nnot json\n{counters}\n");
        let t = WatchTally::of(&out);
        assert_eq!((t.events, t.event_bytes), (2, 2 * (event.len() as u64 + 1)));
        assert_eq!((t.flows, t.flow_bytes), (0, 0));
        assert_eq!(t.counters_bytes, counters.len() as u64 + 1);
        assert_eq!(t.unparsed, 1);
        let s = Stopped { watch: t, ..Default::default() };
        assert_eq!(s.ringbuf_dropped(), Some(0));
        assert_eq!(s.events_per_s(2.0), 20.0);
        assert_eq!(s.kernel_counter(counters::FLOWS_CREATED), None);
        assert_eq!(s.watch.counters.as_ref().map(|c| c.flow_table_evictions), Some(3));
    }

    /// A clean connection's summary as watch prints it.
    const FLOW: &str = r#"{"type":"flow","netns":4026532178,"iface":"c-m1","ip_version":4,"local_addr":"192.0.2.1","local_port":52546,"remote_addr":"203.0.113.2","remote_port":5301,"role":"client","subflow":"initial","mptcp":"established","handshake":{"syn":{"direction":"tx","mptcp":"mp_capable","mptcp_len":4,"mptcp_version":1,"mptcp_flags":1,"mss":1460},"syn_ack":{"direction":"rx","mptcp":"mp_capable","mptcp_len":12,"mptcp_version":1,"mptcp_flags":1,"mss":1460},"third_ack":{"direction":"tx","mptcp":"mp_capable","mptcp_len":20,"mptcp_version":1,"mptcp_flags":1}},"options":{"tx":{"mp_capable":3,"dss":5},"rx":{"mp_capable":1,"dss":5}},"packets":{"tx":10,"rx":8},"payload_bytes":{"tx":1,"rx":1},"data_segments":{"tx":1,"rx":1},"max_segment":{"tx":1,"rx":1},"fin":{"tx":true,"rx":true},"socket_states":["tcp SYN_SENT -> ESTABLISHED"],"duration_ms":0,"ended":"fin"}"#;

    #[test]
    fn flow_lines_are_counted_troubled_or_not_and_weighed_by_field() {
        let fallback = FLOW.replace(r#""mptcp":"established""#, r#""mptcp":"fallback""#);
        let t = WatchTally::of(&format!("{FLOW}\n{fallback}\n"));
        assert_eq!((t.flows, t.troubled_flows, t.unparsed), (2, 1, 0), "{:?}", t.first_error);
        assert_eq!(t.flow_field_bytes["ended"], 2 * r#""ended":"fin","#.len() as u64);
        assert_eq!(
            t.flow_field_bytes["mptcp"],
            (r#""mptcp":"established","#.len() + r#""mptcp":"fallback","#.len()) as u64
        );
        let fields: u64 = t.flow_field_bytes.values().sum();
        // Every byte of a line but its braces and newline, and one comma too many.
        assert_eq!(fields, t.flow_bytes - 2 * 3 + 2);
    }

    #[test]
    fn without_a_closing_line_the_counters_are_unknown() {
        let s = Stopped { watch: WatchTally::of(""), ..Default::default() };
        assert_eq!(s.ringbuf_dropped(), None);
        assert!(s.events_per_s(1.0).is_nan());
    }

    #[test]
    fn tcpdump_drops_come_from_its_closing_statistics() {
        let err = "listening on c-m1\n12 packets captured\n14 packets received by filter\n2 packets dropped by kernel\n";
        assert_eq!(tcpdump_dropped(err), Some(2));
        assert_eq!(tcpdump_dropped("listening on c-m1\n"), None);
    }

    /// A pcapng block of `kind` with `body` bytes, little-endian.
    fn block(kind: u32, body: usize) -> Vec<u8> {
        let len = (12 + body) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend(len.to_le_bytes());
        if kind == PcapngTally::SECTION_HEADER {
            b.extend(PcapngTally::BYTE_ORDER_MAGIC.to_le_bytes());
            b.resize(8 + body, 0);
        } else {
            b.resize(8 + body, 0xaa);
        }
        b.extend(len.to_le_bytes());
        b
    }

    #[test]
    fn a_trace_is_split_into_packet_blocks_and_what_a_file_has_once() {
        let mut file = block(PcapngTally::SECTION_HEADER, 16);
        file.extend(block(1, 8));
        for _ in 0..3 {
            file.extend(block(6, 100));
        }
        file.extend(block(5, 20));
        let t = PcapngTally::of(&file);
        assert_eq!((t.packets, t.packet_bytes), (3, 3 * 112));
        assert_eq!(t.other_bytes, 28 + 20 + 32);
        assert_eq!(t.trailing_bytes, 0);
        file.extend([6, 0, 0, 0, 200, 0]);
        let cut = PcapngTally::of(&file);
        assert_eq!((cut.packets, cut.trailing_bytes, cut.other_bytes), (3, 6, 28 + 20 + 32 + 6));
        assert_eq!(PcapngTally::of(&[]), PcapngTally::default());
    }

    #[test]
    fn a_big_endian_trace_is_read_in_its_byte_order() {
        let mut file = Vec::new();
        for (kind, len) in [(PcapngTally::SECTION_HEADER, 28u32), (6, 44)] {
            let mut b = kind.to_be_bytes().to_vec();
            b.extend(len.to_be_bytes());
            if kind == PcapngTally::SECTION_HEADER {
                b.extend(PcapngTally::BYTE_ORDER_MAGIC.to_be_bytes());
            }
            b.resize(len as usize - 4, 0);
            b.extend(len.to_be_bytes());
            file.extend(b);
        }
        let t = PcapngTally::of(&file);
        assert_eq!((t.packets, t.packet_bytes, t.other_bytes), (1, 44, 28));
    }

    #[test]
    fn what_a_session_writes_once_is_not_kept_per_connection() {
        let s = Stopped {
            file_bytes: 1000,
            pcapng: PcapngTally { packets: 6, packet_bytes: 600, other_bytes: 400, trailing_bytes: 0 },
            watch: WatchTally { event_bytes: 0, flow_bytes: 800, counters_bytes: 550, ..Default::default() },
            ..Default::default()
        };
        let k = s.kept_per_connection(2.0);
        assert_eq!(k, Kept { events: 0.0, summary: 400.0, pcapng_packets: 300.0 });
        assert_eq!(k.total(), 700.0);
        assert_eq!(s.session_bytes(), 950);
    }

    #[test]
    fn only_the_default_mode_writes_a_trace_and_modes_have_their_keys() {
        assert_eq!(WatchMode::ALL.iter().filter(|m| m.writes_trace()).count(), 1);
        assert!(WatchMode::Default.args().ends_with(&["--pcap"]));
        assert!(WatchMode::FlowsOnly.args().contains(&"--flows-only"));
        let p = PerWatchMode::from_fn(|m| m.label());
        let v = serde_json::to_value(&p).unwrap();
        for m in WatchMode::ALL {
            assert_eq!(v[m.key()], m.label());
            assert_eq!(*p.get(m), m.label());
            assert_eq!(serde_json::to_value(m).unwrap(), m.key());
        }
    }

    #[test]
    fn per_observer_fields_are_the_observer_keys() {
        let p = PerObserver::from_fn(|o| o.label());
        let v = serde_json::to_value(&p).unwrap();
        for o in Obs::ALL {
            assert_eq!(v[o.key()], o.label());
            assert_eq!(*p.get(o), o.label());
        }
    }
}
