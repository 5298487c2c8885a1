//! The observers compared: none, `mptcp-probe watch`, and `tcpdump -w` with and without a snap
//! length; started in the client namespace on its interface, stopped with SIGINT and measured.

use std::{
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
    kind: Obs,
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

    /// What watch keeps per connection when `connections` shared this session.
    pub fn kept_per_connection(&self, connections: f64) -> Kept {
        Kept {
            events: self.watch.event_bytes as f64 / connections,
            summary: self.watch.flow_bytes as f64 / connections,
            pcapng: self.file_bytes as f64 / connections,
        }
    }
}

/// Bytes watch keeps: event lines, flow-summary lines and its pcapng.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Kept {
    pub events: f64,
    pub summary: f64,
    pub pcapng: f64,
}

impl Kept {
    pub fn total(&self) -> f64 {
        self.events + self.summary + self.pcapng
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
    pub counters_bytes: u64,
    pub counters: Option<Counters>,
    /// Lines that are not a [`WatchLine`], and the first reason.
    pub unparsed: u64,
    pub first_error: Option<String>,
}

impl WatchTally {
    pub fn of(output: &str) -> Self {
        let mut t = Self::default();
        for line in output.lines() {
            let n = line.len() as u64 + 1;
            match serde_json::from_str::<WatchLine>(line) {
                Ok(WatchLine::Event(_)) => {
                    t.event_bytes += n;
                    t.events += 1;
                }
                Ok(WatchLine::Flow(_)) => {
                    t.flow_bytes += n;
                    t.flows += 1;
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

/// `program` in `ns`, on [`PIN_CPU`] only with `pinned` (`taskset` execs it: same pid).
pub fn pinned_cmd(ns: &Netns, program: &OsStr, pinned: bool) -> Command {
    if pinned {
        let mut c = ns.cmd("taskset");
        c.args(["-c", PIN_CPU]).arg(program);
        c
    } else {
        ns.cmd(program)
    }
}

/// Starts an observer on the client's interface (None for [`Obs::Off`]); `extra`: more
/// arguments for watch; `pinned`: on [`PIN_CPU`] only.
pub fn start(
    kind: Obs,
    ns: &Netns,
    dir: &Path,
    bins: &Bins,
    extra: &[&str],
    pinned: bool,
) -> anyhow::Result<Option<Running>> {
    static STARTED: AtomicU32 = AtomicU32::new(0);
    let tag = format!("{}-{}", kind.key(), STARTED.fetch_add(1, Ordering::Relaxed));
    let stdout = dir.join(format!("{tag}.out"));
    let stderr = dir.join(format!("{tag}.err"));
    let (mut cmd, file, ready) = match kind {
        Obs::Off => return Ok(None),
        Obs::Probe => {
            let file = dir.join(format!("{tag}.pcapng"));
            let mut c = pinned_cmd(ns, bins.probe.as_os_str(), pinned);
            c.args(["watch", "--json", "--iface", ifname::C1, "--pcap"]).arg(&file).args(extra);
            (c, file, "watching")
        }
        Obs::TcpdumpHeader | Obs::TcpdumpFull => {
            let file = dir.join(format!("{tag}.pcap"));
            let snap = if kind == Obs::TcpdumpFull { "0" } else { "128" };
            let mut c = pinned_cmd(ns, OsStr::new("tcpdump"), pinned);
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
    let mut r = Running { child, pid, kind, stdout, stderr, file };
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
    // Capture files can be gigabytes: gone as soon as they are measured.
    let _ = fs::remove_file(&r.file);
    let mut s = Stopped { exit_code, peak_rss_kib, file_bytes, ..Default::default() };
    if r.kind == Obs::Probe {
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
