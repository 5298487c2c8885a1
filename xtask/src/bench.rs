//! `cargo xtask bench`: what observing costs, measured in a namespace lab it creates.
//!
//! - Bulk MPTCP transfers (client → router → server over veth, one subflow) with no observer,
//!   with `mptcp-probe watch`, with a full `tcpdump -w` and with a header-only `tcpdump -s 128 -w`
//!   on the same interface: throughput (both CPUs, as a host runs), CPU per GB (everything —
//!   sender, router, receiver, softirq, observer — pinned to one CPU and saturating it, so that
//!   the CPU's busy time per GB is the whole cost of moving a GB and little else lands there),
//!   the observer process's own CPU, and the bytes each keeps.
//! - Per-packet cost of the TC programs with BPF_PROG_TEST_RUN (`mptcp-probe prog-bench`), and
//!   the kernel's run-time counters (`kernel.bpf_stats_enabled`) during a bulk run.
//! - Short connections per second with and without the observer; a flow table smaller than the
//!   number of concurrent flows (evictions, exit status, memory).
//! - Ring-buffer drops in every observed run.
//!
//! Every loop is bounded in count and time; the namespaces and files go away on return or panic.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use mptcp_probe_tests::lab::{addr, ifname, Child, Lab, Netns};
use serde_json::{json, Value};

/// Sizes and counts of one bench run.
#[derive(Clone, Debug)]
pub struct Config {
    pub quick: bool,
    /// Repetitions of every bulk configuration (and of the short-connection runs, at most 3).
    pub repeat: u32,
    /// Length of each bulk transfer.
    pub seconds: f64,
    pub prog_repeat: u32,
    pub prog_rounds: u32,
    pub short_connections: u32,
    pub lru_flows: u32,
    pub lru_table: u32,
}

impl Config {
    pub fn full() -> Self {
        Self {
            quick: false,
            repeat: 5,
            seconds: 3.0,
            prog_repeat: 2_000_000,
            prog_rounds: 3,
            short_connections: 2000,
            lru_flows: 500,
            lru_table: 64,
        }
    }

    pub fn quick() -> Self {
        Self {
            quick: true,
            repeat: 3,
            seconds: 0.3,
            prog_repeat: 20_000,
            prog_rounds: 1,
            short_connections: 50,
            lru_flows: 100,
            lru_table: 64,
        }
    }
}

/// The binaries under test.
#[derive(Clone, Debug)]
pub struct Bins {
    pub probe: PathBuf,
    pub peer: PathBuf,
}

const SINK_PORT: u16 = 5201;
/// The sink pinned to [`PIN_CPU`], for the one-CPU runs.
const PINNED_SINK_PORT: u16 = 5202;
const PIN_CPU: &str = "0";
/// The client's TCP send-buffer limit. With the default maximum (4 MiB) most MPTCP bulk runs
/// over this path collapse to 20–120 MB/s on Linux 6.18 (spurious MPTCP-level retransmissions;
/// 8 of 10 runs here without any observer); 2 MiB: 8 of 8, 1 MiB: 1 of 8, 512 KiB: none of 8, at
/// the speed of plain TCP.
const CLIENT_WMEM: &str = "net.ipv4.tcp_wmem=4096 16384 524288";
const GB: f64 = 1e9;
/// A run is collapsed below this share of the median throughput without observer.
const COLLAPSE_SHARE: f64 = 0.1;

/// `cargo xtask bench`.
pub fn run(quick: bool, json_out: bool, repeat: Option<u32>) -> anyhow::Result<()> {
    if !mptcp_probe_tests::is_root() {
        bail!("cargo xtask bench needs root (it creates network namespaces and loads eBPF programs)");
    }
    {
        // With --json, stdout carries the report alone: set-up and build talk on stderr.
        let _quiet = json_out.then(StdoutToStderr::new);
        crate::setup::run(&crate::setup::SetupOpts { with_test_tools: false })?;
        crate::build_release()?;
    }
    let release = mptcp_probe_tests::target_dir().join("release");
    let bins = Bins { probe: release.join("mptcp-probe"), peer: release.join("mptcp-peer") };
    let mut cfg = if quick { Config::quick() } else { Config::full() };
    if let Some(n) = repeat {
        cfg.repeat = n.clamp(1, 50);
    }
    let report = bench(&cfg, &bins)?;
    if json_out {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Points this process's stdout (and so its children's) at stderr until dropped.
struct StdoutToStderr {
    saved: i32,
}

impl StdoutToStderr {
    fn new() -> Self {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        // SAFETY: duplicating and redirecting the process's own standard descriptors.
        let saved = unsafe { libc::dup(1) };
        // SAFETY: as above.
        unsafe { libc::dup2(2, 1) };
        Self { saved }
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if self.saved >= 0 {
            // SAFETY: restoring the descriptor saved in new().
            unsafe {
                libc::dup2(self.saved, 1);
                libc::close(self.saved);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring helpers

/// CPU time from /proc/stat (all CPUs, or one), in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
struct CpuStat {
    busy: u64,
    softirq: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `which`: "cpu" for the sum over all CPUs, "cpu0" for CPU 0.
fn cpu_stat(which: &str) -> CpuStat {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(which)).unwrap_or_default();
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let f = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    CpuStat { busy: f(0) + f(1) + f(2) + f(5) + f(6) + f(7), softirq: f(6) }
}

/// utime + stime of a process, in clock ticks.
fn process_ticks(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let v: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    v.get(11).copied().unwrap_or(0) + v.get(12).copied().unwrap_or(0)
}

/// A `/proc/PID/status` value in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, key: &str) -> u64 {
    status_like(&format!("/proc/{pid}/status"), key)
}

fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn free_bytes(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return 0 };
    // SAFETY: zeroed statvfs is a valid out-parameter; c is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return 0;
    }
    s.f_bavail as u64 * s.f_frsize as u64
}

fn mem_available() -> u64 {
    status_like("/proc/meminfo", "MemAvailable") * 1024
}

fn status_like(path: &str, key: &str) -> u64 {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Where the observers write (captures, pcapng, output), removed on drop. tmpfs when there is
/// memory to spare: writeback of gigabytes of capture to the virtual disk would otherwise eat
/// CPU during the runs that follow (and it spares tcpdump the disk, in its favour).
struct WorkDir(PathBuf, &'static str);

impl WorkDir {
    fn new() -> anyhow::Result<Self> {
        let shm = Path::new("/dev/shm");
        let (base, kind) =
            if shm.is_dir() && mem_available() >= 16_000_000_000 && free_bytes(shm) >= 12_000_000_000 {
                (shm.to_path_buf(), "tmpfs")
            } else {
                (std::env::temp_dir(), "disk")
            };
        let dir = base.join(format!("mptcp-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir, kind))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// A number for JSON: non-finite values become null (the reason goes next to it).
fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && a.is_finite() {
        a / b
    } else {
        f64::NAN
    }
}

/// Median, min and max of a series.
fn spread(v: &[f64]) -> Value {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let min = f.iter().copied().fold(f64::INFINITY, f64::min);
    let max = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({"median": num(median(&f)), "min": num(min), "max": num(max), "n": f.len()})
}

fn get(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// Observers

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Obs {
    Off,
    Probe,
    TcpdumpHeader,
    TcpdumpFull,
}

impl Obs {
    const ALL: [Obs; 4] = [Obs::Off, Obs::Probe, Obs::TcpdumpHeader, Obs::TcpdumpFull];

    fn key(self) -> &'static str {
        match self {
            Obs::Off => "off",
            Obs::Probe => "probe",
            Obs::TcpdumpHeader => "tcpdump_header",
            Obs::TcpdumpFull => "tcpdump_full",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Obs::Off => "no observer",
            Obs::Probe => "mptcp-probe watch",
            Obs::TcpdumpHeader => "tcpdump -s 128 -w",
            Obs::TcpdumpFull => "tcpdump -s 0 -w",
        }
    }
}

/// A running observer in the client namespace.
struct Running {
    child: Child,
    pid: u32,
    kind: Obs,
    stdout: PathBuf,
    stderr: PathBuf,
    file: PathBuf,
}

/// What an observer left behind.
#[derive(Debug, Default)]
struct Stopped {
    exit_code: Option<i32>,
    peak_rss_kib: u64,
    /// Capture file (tcpdump) or pcapng (watch --pcap), bytes.
    file_bytes: u64,
    /// watch: bytes of event lines, flow-summary lines and the counters line; the lines.
    event_bytes: u64,
    flow_bytes: u64,
    counters_bytes: u64,
    events: u64,
    flows: u64,
    counters: Value,
    /// tcpdump: packets it reported dropped by the kernel.
    tcpdump_dropped: Option<u64>,
    stderr: String,
}

/// Waits until the observer's log shows `needle`; fails with the log if it exits first.
fn wait_ready(child: &mut Child, log: &Path, needle: &str, what: &str) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(60);
    let start = Instant::now();
    while start.elapsed() < timeout {
        if fs::read_to_string(log).unwrap_or_default().contains(needle) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            bail!(
                "{what} exited ({status}) before it was ready:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} was not ready within {timeout:?}:\n{}", fs::read_to_string(log).unwrap_or_default())
}

/// `program` in `ns`, on [`PIN_CPU`] only with `pinned` (`taskset` execs it: same pid).
fn pinned_cmd(ns: &Netns, program: &OsStr, pinned: bool) -> Command {
    if pinned {
        let mut c = ns.cmd("taskset");
        c.args(["-c", PIN_CPU]).arg(program);
        c
    } else {
        ns.cmd(program)
    }
}

/// Starts an observer on the client's interface; `pinned`: on [`PIN_CPU`] only.
fn start_observer(
    kind: Obs,
    ns: &Netns,
    dir: &Path,
    bins: &Bins,
    extra: &[&str],
    pinned: bool,
) -> anyhow::Result<Option<Running>> {
    let cmd_in_ns = |program: &OsStr| pinned_cmd(ns, program, pinned);
    static SESSION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}-{n}", kind.key());
    let stdout = dir.join(format!("{tag}.out"));
    let stderr = dir.join(format!("{tag}.err"));
    let (mut cmd, file, ready) = match kind {
        Obs::Off => return Ok(None),
        Obs::Probe => {
            let file = dir.join(format!("{tag}.pcapng"));
            let mut c = cmd_in_ns(bins.probe.as_os_str());
            c.args(["watch", "--json", "--iface", ifname::C1, "--pcap"]).arg(&file).args(extra);
            (c, file, "watching")
        }
        Obs::TcpdumpHeader | Obs::TcpdumpFull => {
            let file = dir.join(format!("{tag}.pcap"));
            let snap = if kind == Obs::TcpdumpFull { "0" } else { "128" };
            let mut c = cmd_in_ns(OsStr::new("tcpdump"));
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
    wait_ready(&mut r.child, &r.stderr, ready, kind.label())?;
    Ok(Some(r))
}

fn stop_observer(mut r: Running) -> Stopped {
    let peak_rss_kib = status_kib(r.pid, "VmHWM");
    r.child.signal(libc::SIGINT);
    let start = Instant::now();
    let mut exit_code = None;
    while start.elapsed() < Duration::from_secs(30) {
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
    let mut s = Stopped { exit_code, peak_rss_kib, file_bytes, stderr, ..Default::default() };
    if r.kind == Obs::Probe {
        let text = fs::read_to_string(&r.stdout).unwrap_or_default();
        for line in text.lines() {
            let n = line.len() as u64 + 1;
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            match v["type"].as_str() {
                Some("event") => {
                    s.event_bytes += n;
                    s.events += 1;
                }
                Some("flow") => {
                    s.flow_bytes += n;
                    s.flows += 1;
                }
                Some("counters") => {
                    s.counters_bytes += n;
                    s.counters = v;
                }
                _ => {}
            }
        }
    } else {
        s.tcpdump_dropped =
            s.stderr.lines().find_map(|l| l.strip_suffix("packets dropped by kernel")?.trim().parse().ok());
    }
    let _ = fs::remove_file(&r.stdout);
    let _ = fs::remove_file(&r.stderr);
    s
}

// ---------------------------------------------------------------------------------------------
// Traffic

fn sink_addr(port: u16) -> String {
    format!("{}:{port}", addr::SERVER)
}

/// Starts a sink in the server namespace on `port`, on [`PIN_CPU`] only with `pinned`.
fn start_sink(lab: &Lab, bins: &Bins, port: u16, pinned: bool) -> anyhow::Result<Child> {
    let mut cmd = pinned_cmd(&lab.s, bins.peer.as_os_str(), pinned);
    cmd.args(["sink", "--listen", &format!("0.0.0.0:{port}"), "--timeout", "1800"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let child = Child::spawn(&mut cmd);
    for _ in 0..200 {
        let out = lab.s.cmd("ss").args(["-Hltn", &format!("sport = :{port}")]).output()?;
        if !out.stdout.is_empty() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("the benchmark sink did not come up")
}

/// Runs a peer command in the client namespace, bounded by `timeout` (on [`PIN_CPU`] only with
/// `pinned`), and parses its JSON.
fn peer_json(lab: &Lab, bins: &Bins, args: &[String], timeout: f64, pinned: bool) -> anyhow::Result<Value> {
    let mut cmd = lab.c.cmd("timeout");
    cmd.args(["-k", "5", &format!("{timeout:.0}")]);
    if pinned {
        cmd.args(["taskset", "-c", PIN_CPU]);
    }
    let out = cmd.arg(&bins.peer).args(args).stdin(Stdio::null()).output().context("running mptcp-peer")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| {
        anyhow!(
            "mptcp-peer {} printed {text:?} ({e}); stderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if !out.status.success() {
        bail!(
            "mptcp-peer {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(v)
}

/// One bulk transfer and the CPU it took.
#[derive(Clone, Debug, Default)]
struct Transfer {
    bytes: f64,
    seconds: f64,
    mbytes_per_s: f64,
    is_mptcp: bool,
    /// Busy CPU seconds over the transfer (all CPUs, or the pinned one), and the softirq part.
    cpu_s: f64,
    softirq_s: f64,
    /// CPU seconds of the observer process over the transfer.
    observer_cpu_s: f64,
    /// Pinned runs: busy seconds of the other CPUs (work that escaped the pinning, and the rest
    /// of the machine).
    other_cpus_s: f64,
}

impl Transfer {
    fn cpu_s_per_gb(&self) -> f64 {
        ratio(self.cpu_s, self.bytes / GB)
    }

    fn observer_cpu_s_per_gb(&self) -> f64 {
        ratio(self.observer_cpu_s, self.bytes / GB)
    }
}

/// A bulk transfer of `seconds`; `pinned`: to the pinned sink, from [`PIN_CPU`], counting that
/// CPU's time only.
fn blast(
    lab: &Lab,
    bins: &Bins,
    seconds: f64,
    pinned: bool,
    observer: Option<u32>,
) -> anyhow::Result<Transfer> {
    let hz = clock_ticks();
    let port = if pinned { PINNED_SINK_PORT } else { SINK_PORT };
    let args: Vec<String> = ["blast", "--connect", &sink_addr(port), "--seconds", &seconds.to_string()]
        .into_iter()
        .map(String::from)
        .collect();
    let which = if pinned { format!("cpu{PIN_CPU}") } else { "cpu".to_string() };
    let obs0 = observer.map(process_ticks).unwrap_or(0);
    let (all0, c0) = (cpu_stat("cpu"), cpu_stat(&which));
    let v = peer_json(lab, bins, &args, seconds + 60.0, pinned)?;
    let (all1, c1) = (cpu_stat("cpu"), cpu_stat(&which));
    let obs1 = observer.map(process_ticks).unwrap_or(0);
    let bytes = get(&v, "/received_bytes");
    let secs = get(&v, "/seconds");
    Ok(Transfer {
        bytes,
        seconds: secs,
        mbytes_per_s: ratio(bytes / 1e6, secs),
        is_mptcp: v["is_mptcp"] == 1,
        cpu_s: c1.busy.saturating_sub(c0.busy) as f64 / hz,
        softirq_s: c1.softirq.saturating_sub(c0.softirq) as f64 / hz,
        observer_cpu_s: obs1.saturating_sub(obs0) as f64 / hz,
        other_cpus_s: if pinned {
            (all1.busy.saturating_sub(all0.busy)).saturating_sub(c1.busy.saturating_sub(c0.busy)) as f64 / hz
        } else {
            0.0
        },
    })
}

/// One observed bulk run.
#[derive(Debug)]
struct BulkRun {
    obs: Obs,
    /// Everything on one CPU (the CPU-cost runs).
    pinned: bool,
    t: Transfer,
    stopped: Option<Stopped>,
}

fn bulk_run(
    lab: &Lab,
    dir: &Path,
    bins: &Bins,
    obs: Obs,
    seconds: f64,
    pinned: bool,
) -> anyhow::Result<BulkRun> {
    let running = start_observer(obs, &lab.c, dir, bins, &[], pinned)?;
    let res = blast(lab, bins, seconds, pinned, running.as_ref().map(|r| r.pid));
    let stopped = running.map(stop_observer);
    Ok(BulkRun { obs, pinned, t: res?, stopped })
}

// ---------------------------------------------------------------------------------------------
// Kernel run-time counters of a process's programs

/// (run_time_ns, run_cnt) of every BPF program `pid` holds, by program id (from fdinfo).
fn prog_stats(pid: u32) -> BTreeMap<u32, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return out };
    for e in dir.flatten() {
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok());
        // Program fds have run counters; link fds name a prog_id too but have none.
        if let (Some(id), Some(t), Some(c)) = (field("prog_id:"), field("run_time_ns:"), field("run_cnt:")) {
            out.insert(id as u32, (t, c));
        }
    }
    out
}

fn prog_names() -> BTreeMap<u32, String> {
    let out = Command::new("bpftool").args(["prog", "show", "--json"]).output();
    let v: Value = out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or(Value::Null);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p["id"].as_u64()? as u32, p["name"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Turns `kernel.bpf_stats_enabled` on, and back to what it was on drop.
struct BpfStats {
    prev: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let prev = fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
        fs::write(BPF_STATS, "1").context("setting kernel.bpf_stats_enabled=1")?;
        Ok(Self { prev: prev.trim().to_string() })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.prev);
    }
}

fn stats_run(lab: &Lab, dir: &Path, bins: &Bins, seconds: f64) -> anyhow::Result<Value> {
    let _stats = BpfStats::enable()?;
    let r = start_observer(Obs::Probe, &lab.c, dir, bins, &[], false)?.expect("an observer");
    let s0 = prog_stats(r.pid);
    let t = blast(lab, bins, seconds, false, Some(r.pid));
    let s1 = prog_stats(r.pid);
    let names = prog_names();
    let stopped = stop_observer(r);
    let t = t?;
    let mut progs = serde_json::Map::new();
    for (id, (t1, c1)) in &s1 {
        let (t0, c0) = s0.get(id).copied().unwrap_or((0, 0));
        let (dt, dc) = (t1.saturating_sub(t0), c1.saturating_sub(c0));
        let name = names.get(id).cloned().unwrap_or_else(|| format!("id {id}"));
        progs.insert(
            name,
            json!({"runs": dc, "run_time_ns": dt, "ns_per_run": num(ratio(dt as f64, dc as f64)),
                   "runs_per_gb": num(dc as f64 / (t.bytes / GB)),
                   "cpu_ms_per_gb": num(dt as f64 / 1e6 / (t.bytes / GB))}),
        );
    }
    let total_ns: u64 = progs.values().filter_map(|p| p["run_time_ns"].as_u64()).sum();
    Ok(json!({
        "mbytes_per_s": num(t.mbytes_per_s),
        "bytes": t.bytes,
        "programs": progs,
        "total_cpu_ms_per_gb": num(total_ns as f64 / 1e6 / (t.bytes / GB)),
        "packets_inspected": stopped.counters["kernel"]["packets_inspected"],
        "ringbuf_dropped_events": stopped.counters["kernel"]["ringbuf_dropped_events"],
    }))
}

// ---------------------------------------------------------------------------------------------
// The bench

fn progress(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

fn kept_per_connection(s: &Stopped, connections: f64) -> (f64, f64, f64) {
    let events = s.event_bytes as f64 / connections;
    let flows = s.flow_bytes as f64 / connections;
    let pcap = s.file_bytes as f64 / connections;
    (events, flows, pcap)
}

fn counter(s: &Stopped, name: &str) -> f64 {
    s.counters["kernel"][name].as_f64().unwrap_or(f64::NAN)
}

/// Runs every part of the bench and returns the report (every figure, the targets).
pub fn bench(cfg: &Config, bins: &Bins) -> anyhow::Result<Value> {
    for (what, p) in [("mptcp-probe", &bins.probe), ("mptcp-peer", &bins.peer)] {
        if !p.exists() {
            bail!("{what} is not built at {} (cargo build --release)", p.display());
        }
    }
    let started = Instant::now();
    let load_at_start = loadavg();
    let lab = Lab::up();
    lab.c.sysctl(CLIENT_WMEM);
    let dir = WorkDir::new()?;
    let _sink = start_sink(&lab, bins, SINK_PORT, false)?;
    let _pinned_sink = start_sink(&lab, bins, PINNED_SINK_PORT, true)?;
    progress(format!(
        "lab up; load average {load_at_start:.2}; {} repetitions of {} s transfers",
        cfg.repeat, cfg.seconds
    ));
    // Warm-up: the first transfer in a fresh namespace is slower.
    blast(&lab, bins, cfg.seconds.min(0.5), false, None)?;

    // 1. Bulk transfers, interleaved so that drift hits every configuration alike: each
    //    configuration on both CPUs (throughput), then pinned to one CPU (CPU per GB).
    let mut runs: Vec<BulkRun> = Vec::new();
    let mut skipped_full = None;
    for rep in 0..cfg.repeat {
        for pinned in [false, true] {
            for obs in Obs::ALL {
                if obs == Obs::TcpdumpFull {
                    // Room for a full capture at 3 GB/s, above anything this path reaches.
                    let need = (cfg.seconds * 3e9) as u64 + 1_000_000_000;
                    if free_bytes(&dir.0) < need || (dir.1 == "tmpfs" && mem_available() < need) {
                        skipped_full =
                            Some(format!("less than {} GB free for the capture", need / 1_000_000_000));
                        continue;
                    }
                }
                let r = bulk_run(&lab, &dir.0, bins, obs, cfg.seconds, pinned)?;
                progress(format!(
                    "bulk {}/{} {:<18} {:<9} {:>6.0} MB/s  CPU {:.2} s = {:.3} s/GB",
                    rep + 1,
                    cfg.repeat,
                    obs.label(),
                    if pinned { "one CPU" } else { "two CPUs" },
                    r.t.mbytes_per_s,
                    r.t.cpu_s,
                    r.t.cpu_s_per_gb()
                ));
                runs.push(r);
            }
        }
    }
    let series = |obs: Obs, pinned: bool, f: &dyn Fn(&BulkRun) -> f64| -> Vec<f64> {
        runs.iter().filter(|r| r.obs == obs && r.pinned == pinned).map(f).collect()
    };
    let collapse_below = median(&series(Obs::Off, false, &|r| r.t.mbytes_per_s)) * COLLAPSE_SHARE;
    let pinned_collapse_below = median(&series(Obs::Off, true, &|r| r.t.mbytes_per_s)) * COLLAPSE_SHARE;
    let mut bulk = serde_json::Map::new();
    let mut med = BTreeMap::new();
    for obs in Obs::ALL {
        let thr = series(obs, false, &|r| r.t.mbytes_per_s);
        let healthy: Vec<f64> = thr.iter().copied().filter(|x| *x >= collapse_below).collect();
        let collapsed: Vec<f64> = thr.iter().copied().filter(|x| *x < collapse_below).collect();
        let one_thr = series(obs, true, &|r| r.t.mbytes_per_s);
        let one_collapsed = one_thr.iter().filter(|x| **x < pinned_collapse_below).count();
        let one_busy = series(obs, true, &|r| ratio(r.t.cpu_s, r.t.seconds));
        let other_busy = series(obs, true, &|r| ratio(r.t.other_cpus_s, r.t.seconds));
        let cpu = series(obs, true, &|r| r.t.cpu_s_per_gb());
        let softirq = series(obs, true, &|r| ratio(r.t.softirq_s, r.t.bytes / GB));
        let cpu_two = series(obs, false, &|r| r.t.cpu_s_per_gb());
        let obs_cpu = series(obs, true, &|r| r.t.observer_cpu_s_per_gb());
        let obs_cpu_two = series(obs, false, &|r| r.t.observer_cpu_s_per_gb());
        let file_per_gb = series(obs, false, &|r| {
            r.stopped.as_ref().map(|s| s.file_bytes as f64 / (r.t.bytes / GB)).unwrap_or(0.0)
        });
        let rss = series(obs, false, &|r| r.stopped.as_ref().map(|s| s.peak_rss_kib as f64).unwrap_or(0.0));
        let not_mptcp = runs.iter().filter(|r| r.obs == obs && !r.t.is_mptcp).count();
        let dropped: u64 =
            runs.iter().filter(|r| r.obs == obs).filter_map(|r| r.stopped.as_ref()?.tcpdump_dropped).sum();
        med.insert((obs, "thr"), median(&thr));
        med.insert((obs, "thr_healthy"), median(&healthy));
        med.insert((obs, "thr_one"), median(&one_thr));
        med.insert((obs, "cpu"), median(&cpu));
        med.insert((obs, "obs_cpu"), median(&obs_cpu));
        med.insert((obs, "file_per_gb"), median(&file_per_gb));
        let mut m = json!({
            "label": obs.label(),
            "throughput_mbytes_per_s": spread(&thr),
            "throughput_runs": thr,
            "collapsed_runs": collapsed.len(),
            "collapsed_mbytes_per_s": collapsed,
            "throughput_healthy_median": num(median(&healthy)),
            "cpu_s_per_gb_two_cpus": spread(&cpu_two),
            "observer_process_cpu_s_per_gb_two_cpus": spread(&obs_cpu_two),
            "one_cpu": {
                "mbytes_per_s": spread(&one_thr),
                "collapsed_runs": one_collapsed,
                "cpu_busy_share": spread(&one_busy),
                "other_cpus_busy_share": spread(&other_busy),
            },
            "cpu_s_per_gb": spread(&cpu),
            "softirq_s_per_gb": spread(&softirq),
            "observer_process_cpu_s_per_gb": spread(&obs_cpu),
            "file_bytes_per_gb": spread(&file_per_gb),
            "observer_peak_rss_kib": spread(&rss),
            "runs_not_mptcp": not_mptcp,
        });
        if matches!(obs, Obs::TcpdumpFull | Obs::TcpdumpHeader) {
            m["tcpdump_dropped_packets"] = json!(dropped);
        }
        if obs == Obs::TcpdumpFull {
            if let Some(why) = &skipped_full {
                m["skipped_runs"] = json!(why);
            }
        }
        bulk.insert(obs.key().to_string(), m);
    }
    let m = |o: Obs, k: &'static str| med.get(&(o, k)).copied().unwrap_or(f64::NAN);
    let extra = |o: Obs| m(o, "cpu") - m(Obs::Off, "cpu");
    let ratios = json!({
        "throughput_probe_over_off": num(ratio(m(Obs::Probe, "thr"), m(Obs::Off, "thr"))),
        "throughput_tcpdump_header_over_off": num(ratio(m(Obs::TcpdumpHeader, "thr"), m(Obs::Off, "thr"))),
        "throughput_tcpdump_full_over_off": num(ratio(m(Obs::TcpdumpFull, "thr"), m(Obs::Off, "thr"))),
        "throughput_probe_over_tcpdump_header":
            num(ratio(m(Obs::Probe, "thr"), m(Obs::TcpdumpHeader, "thr"))),
        "throughput_probe_over_tcpdump_full": num(ratio(m(Obs::Probe, "thr"), m(Obs::TcpdumpFull, "thr"))),
        "one_cpu_throughput_probe_over_off": num(ratio(m(Obs::Probe, "thr_one"), m(Obs::Off, "thr_one"))),
        "one_cpu_throughput_tcpdump_header_over_off":
            num(ratio(m(Obs::TcpdumpHeader, "thr_one"), m(Obs::Off, "thr_one"))),
        "healthy_throughput_probe_over_off":
            num(ratio(m(Obs::Probe, "thr_healthy"), m(Obs::Off, "thr_healthy"))),
        "cpu_probe_over_off": num(ratio(m(Obs::Probe, "cpu"), m(Obs::Off, "cpu"))),
        "cpu_tcpdump_header_over_off": num(ratio(m(Obs::TcpdumpHeader, "cpu"), m(Obs::Off, "cpu"))),
        "cpu_tcpdump_full_over_off": num(ratio(m(Obs::TcpdumpFull, "cpu"), m(Obs::Off, "cpu"))),
        "extra_cpu_s_per_gb": {
            "probe": num(extra(Obs::Probe)),
            "tcpdump_header": num(extra(Obs::TcpdumpHeader)),
            "tcpdump_full": num(extra(Obs::TcpdumpFull)),
        },
        "extra_cpu_probe_over_tcpdump_header": num(ratio(extra(Obs::Probe), extra(Obs::TcpdumpHeader))),
        "extra_cpu_probe_over_tcpdump_full": num(ratio(extra(Obs::Probe), extra(Obs::TcpdumpFull))),
        "observer_process_cpu_probe_over_tcpdump_header":
            num(ratio(m(Obs::Probe, "obs_cpu"), m(Obs::TcpdumpHeader, "obs_cpu"))),
    });

    // 2. Per-packet cost with BPF_PROG_TEST_RUN.
    progress("per-packet cost with BPF_PROG_TEST_RUN");
    let out = lab
        .c
        .cmd("timeout")
        .args(["-k", "5", "300"])
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
    let prog_bench: Value = serde_json::from_slice(&out.stdout).context("prog-bench output")?;

    // 3. The kernel's run-time counters during a bulk run.
    progress("kernel run-time counters during a bulk run (bpf_stats_enabled=1)");
    // A collapsed transfer would show the programs' cost on too little traffic: up to 3 tries.
    let mut bpf_stats = Value::Null;
    for attempt in 1..=3 {
        bpf_stats = stats_run(&lab, &dir.0, bins, cfg.seconds)?;
        bpf_stats["attempts"] = json!(attempt);
        if get(&bpf_stats, "/mbytes_per_s") >= collapse_below {
            break;
        }
    }

    // 4. Short connections, with and without the observer.
    let mut cps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut short_obs = Vec::new();
    let mut cpu_per_conn: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut watch_cpu_per_conn = Vec::new();
    let short_reps = cfg.repeat.min(3);
    for rep in 0..short_reps {
        for obs in [Obs::Off, Obs::Probe] {
            let running = start_observer(obs, &lab.c, &dir.0, bins, &[], false)?;
            let args: Vec<String> = vec![
                "churn".into(),
                "--connect".into(),
                sink_addr(SINK_PORT),
                "--count".into(),
                cfg.short_connections.to_string(),
                "--seconds".into(),
                "60".into(),
            ];
            let t0 = running.as_ref().map(|r| process_ticks(r.pid)).unwrap_or(0);
            let c0 = cpu_stat("cpu");
            let res = peer_json(&lab, bins, &args, 90.0, false);
            let c1 = cpu_stat("cpu");
            let hz = clock_ticks();
            let obs_cpu_s =
                running.as_ref().map(|r| process_ticks(r.pid).saturating_sub(t0)).unwrap_or(0) as f64 / hz;
            let cpu_s = c1.busy.saturating_sub(c0.busy) as f64 / hz;
            // Let the last flows end (FIN both ways and the grace period) before stopping.
            if running.is_some() {
                std::thread::sleep(Duration::from_millis(1500));
            }
            let stopped = running.map(stop_observer);
            let v = res?;
            if v["failed"].as_u64().unwrap_or(0) > 0 {
                bail!("short connections failed: {v}");
            }
            let rate = get(&v, "/per_second");
            progress(format!(
                "short connections {}/{short_reps} {:<18} {rate:>8.0} /s",
                rep + 1,
                obs.label()
            ));
            cps.entry(obs.key()).or_default().push(rate);
            let n = v["connections"].as_f64().unwrap_or(f64::NAN);
            cpu_per_conn.entry(obs.key()).or_default().push(cpu_s * 1e3 / n);
            if let Some(s) = stopped {
                watch_cpu_per_conn.push(obs_cpu_s * 1e3 / n);
                short_obs.push((v, s));
            }
        }
    }
    let n_short = cfg.short_connections as f64;
    let short_kept: Vec<(f64, f64, f64)> =
        short_obs.iter().map(|(_, s)| kept_per_connection(s, n_short)).collect();
    let short_event_rate: Vec<f64> =
        short_obs.iter().map(|(v, s)| counter(s, "events_emitted") / get(v, "/seconds")).collect();
    let short_drops: f64 = short_obs.iter().map(|(_, s)| counter(s, "ringbuf_dropped_events")).sum();
    let short_flows: Vec<f64> = short_obs.iter().map(|(_, s)| s.flows as f64).collect();
    let cps_off = median(cps.get("off").map(Vec::as_slice).unwrap_or_default());
    let cps_probe = median(cps.get("probe").map(Vec::as_slice).unwrap_or_default());
    let short = json!({
        "connections_per_run": cfg.short_connections,
        "repetitions": short_reps,
        "per_second": {"off": spread(cps.get("off").map(Vec::as_slice).unwrap_or_default()),
                       "probe": spread(cps.get("probe").map(Vec::as_slice).unwrap_or_default())},
        "probe_over_off": num(ratio(cps_probe, cps_off)),
        "cpu_ms_per_connection": {
            "off": spread(cpu_per_conn.get("off").map(Vec::as_slice).unwrap_or_default()),
            "probe": spread(cpu_per_conn.get("probe").map(Vec::as_slice).unwrap_or_default()),
        },
        "watch_process_cpu_ms_per_connection": spread(&watch_cpu_per_conn),
        "flow_summaries_per_run": spread(&short_flows),
        "event_lines_per_connection": spread(&short_obs.iter().map(|(_, s)| s.events as f64 / n_short).collect::<Vec<_>>()),
        "events_per_s": spread(&short_event_rate),
        "ringbuf_dropped_events": short_drops,
        "kept_bytes_per_connection": {
            "events": spread(&short_kept.iter().map(|k| k.0).collect::<Vec<_>>()),
            "summary": spread(&short_kept.iter().map(|k| k.1).collect::<Vec<_>>()),
            "pcapng": spread(&short_kept.iter().map(|k| k.2).collect::<Vec<_>>()),
            "total": spread(&short_kept.iter().map(|k| k.0 + k.1 + k.2).collect::<Vec<_>>()),
        },
    });

    // 5. More concurrent flows than the flow table holds.
    progress(format!("{} concurrent flows through a {}-entry flow table", cfg.lru_flows, cfg.lru_table));
    let table = cfg.lru_table.to_string();
    let mut r = start_observer(Obs::Probe, &lab.c, &dir.0, bins, &["--flow-table-size", &table], false)?
        .expect("an observer");
    let rss_start = status_kib(r.pid, "VmRSS");
    // Each batch holds more flows open at once than the table has entries.
    let batch = cfg.lru_flows.max(1);
    let mut rss_after = Vec::new();
    let mut lru_res = Ok(());
    let mut lru_connections = 0u64;
    for _ in 0..2 {
        let args: Vec<String> = vec![
            "churn".into(),
            "--connect".into(),
            sink_addr(SINK_PORT),
            "--count".into(),
            batch.to_string(),
            "--concurrent".into(),
            batch.to_string(),
            "--hold-ms".into(),
            "300".into(),
            "--seconds".into(),
            "60".into(),
        ];
        match peer_json(&lab, bins, &args, 90.0, false) {
            Ok(v) => lru_connections += v["connections"].as_u64().unwrap_or(0),
            Err(e) => {
                lru_res = Err(e);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1500));
        rss_after.push(status_kib(r.pid, "VmRSS"));
    }
    let lru_alive = matches!(r.child.0.try_wait(), Ok(None));
    let lru = stop_observer(r);
    lru_res?;
    let lru = json!({
        "flow_table_size": cfg.lru_table,
        "concurrent_flows": batch,
        "batches": 2,
        "connections": lru_connections,
        "flows_created": num(counter(&lru, "flows_created")),
        "flow_table_evictions": lru.counters["flow_table_evictions"],
        "flows_evicted_unsummarised": lru.counters["flows_evicted_unsummarised"],
        "flow_insert_failed": num(counter(&lru, "flow_insert_failed")),
        "flow_summaries": lru.flows,
        "ringbuf_dropped_events": num(counter(&lru, "ringbuf_dropped_events")),
        "alive_until_stopped": lru_alive,
        "exit_code": lru.exit_code,
        "rss_kib_at_start": rss_start,
        "rss_kib_after_batch": rss_after,
        "peak_rss_kib": lru.peak_rss_kib,
    });

    // 6. Storage per connection: the probe's events + summary + pcapng vs the captures.
    let probe_runs: Vec<&BulkRun> = runs.iter().filter(|r| r.obs == Obs::Probe && !r.pinned).collect();
    let bulk_kept: Vec<(f64, f64, f64)> =
        probe_runs.iter().filter_map(|r| r.stopped.as_ref()).map(|s| kept_per_connection(s, 1.0)).collect();
    let bulk_gb = median(&probe_runs.iter().map(|r| r.t.bytes / GB).collect::<Vec<_>>());
    let kept_total = median(&bulk_kept.iter().map(|k| k.0 + k.1 + k.2).collect::<Vec<_>>());
    let header_same = m(Obs::TcpdumpHeader, "file_per_gb") * bulk_gb;
    let full_same = m(Obs::TcpdumpFull, "file_per_gb") * bulk_gb;
    let counters_line = median(
        &probe_runs
            .iter()
            .filter_map(|r| r.stopped.as_ref())
            .map(|s| s.counters_bytes as f64)
            .collect::<Vec<_>>(),
    );
    let storage = json!({
        "bulk_connection_gb": num(bulk_gb),
        "probe_kept_bytes": {
            "events": spread(&bulk_kept.iter().map(|k| k.0).collect::<Vec<_>>()),
            "summary": spread(&bulk_kept.iter().map(|k| k.1).collect::<Vec<_>>()),
            "pcapng": spread(&bulk_kept.iter().map(|k| k.2).collect::<Vec<_>>()),
            "total": num(kept_total),
        },
        "counters_line_bytes_per_watch_session": num(counters_line),
        "tcpdump_header_bytes_same_transfer": num(header_same),
        "tcpdump_full_bytes_same_transfer": num(full_same),
        "probe_over_tcpdump_header": num(ratio(kept_total, header_same)),
        "probe_over_tcpdump_full": num(ratio(kept_total, full_same)),
        "short_connection_kept_bytes": short["kept_bytes_per_connection"]["total"]["median"],
    });

    // 7. Ring-buffer drops in every observed run.
    let mut drops_by_run = Vec::new();
    for r in runs.iter().filter(|r| r.obs == Obs::Probe) {
        let s = r.stopped.as_ref().expect("probe runs have output");
        let d = counter(s, "ringbuf_dropped_events");
        let rate = counter(s, "events_emitted") / r.t.seconds;
        drops_by_run
            .push(json!({"run": if r.pinned {"bulk, one CPU"} else {"bulk"}, "events_per_s": num(rate),
                                  "dropped": num(d)}));
    }
    for (v, s) in &short_obs {
        drops_by_run.push(json!({"run": "short connections",
            "events_per_s": num(counter(s, "events_emitted") / get(v, "/seconds")),
            "dropped": num(counter(s, "ringbuf_dropped_events"))}));
    }
    drops_by_run.push(json!({"run": "flow-table overflow", "events_per_s": Value::Null,
                              "dropped": lru["ringbuf_dropped_events"]}));
    let total_drops: f64 = drops_by_run.iter().filter_map(|d| d["dropped"].as_f64()).sum();
    let max_rate = drops_by_run.iter().filter_map(|d| d["events_per_s"].as_f64()).fold(0.0, f64::max);
    let first_drop_rate = drops_by_run
        .iter()
        .filter(|d| d["dropped"].as_f64().unwrap_or(0.0) > 0.0)
        .filter_map(|d| d["events_per_s"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let ring = json!({
        "dropped_total": total_drops,
        "max_events_per_s": max_rate,
        "drops_start_at_events_per_s": num(first_drop_rate),
        "runs": drops_by_run,
        "prog_bench_dropped": prog_bench["counters"]["ringbuf_dropped_events"],
    });

    // 8. Targets.
    let dss_ns = ["tc_ingress", "tc_egress"]
        .iter()
        .map(|p| {
            prog_bench["frames"]
                .as_array()
                .and_then(|a| a.iter().find(|f| f["name"] == "data_dss"))
                .map(|f| get(f, &format!("/programs/{p}/ns")))
                .unwrap_or(f64::NAN)
        })
        .fold(f64::NEG_INFINITY, f64::max);
    let thr_ratio = get(&ratios, "/throughput_probe_over_off");
    let thr_vs_header = get(&ratios, "/throughput_probe_over_tcpdump_header");
    let cpu_ratio = get(&ratios, "/extra_cpu_probe_over_tcpdump_header");
    let short_kept_total = get(&short, "/kept_bytes_per_connection/total/median");
    let target = |name: &str, want: &str, measured: f64, met: bool| {
        json!({"target": name, "wanted": want, "measured": num(measured),
               "met": if measured.is_finite() { json!(met) } else { Value::Null }})
    };
    let targets = json!([
        target("throughput with the probe / without", ">= 0.99", thr_ratio, thr_ratio >= 0.99),
        target(
            "throughput with the probe / header-only tcpdump",
            ">= 0.99",
            thr_vs_header,
            thr_vs_header >= 0.99
        ),
        target("extra CPU per GB, probe / header-only tcpdump", "<= 0.2", cpu_ratio, cpu_ratio <= 0.2),
        target("bytes kept per bulk connection", "<= 1024", kept_total, kept_total <= 1024.0),
        target("bytes kept per short connection", "<= 1024", short_kept_total, short_kept_total <= 1024.0),
        target(
            "bytes kept per bulk connection / header-only capture",
            "<= 0.0001",
            ratio(kept_total, header_same),
            ratio(kept_total, header_same) <= 1e-4
        ),
        target("ns per DSS data segment (test run, worse direction)", "<= 40", dss_ns, dss_ns <= 40.0),
        target("ring-buffer drops", "0", total_drops, total_drops == 0.0),
    ]);

    drop(lab);
    Ok(json!({
        "mode": if cfg.quick { "quick" } else { "full" },
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "load_average_at_start": num(load_at_start),
        "config": {"repetitions": cfg.repeat, "transfer_seconds": cfg.seconds, "pinned_cpu": PIN_CPU,
                   "prog_repeat": cfg.prog_repeat, "prog_rounds": cfg.prog_rounds,
                   "short_connections": cfg.short_connections, "lru_flows": cfg.lru_flows,
                   "lru_table": cfg.lru_table, "path": "client c-m1 -> router -> server, veth, one subflow",
                   "observed_interface": ifname::C1,
                   "client_sysctl": CLIENT_WMEM, "capture_dir": dir.1,
                   "collapsed_below_mbytes_per_s": num(collapse_below)},
        "bulk": bulk,
        "ratios": ratios,
        "prog_test_run": prog_bench,
        "bpf_stats": bpf_stats,
        "short_connections": short,
        "flow_table_overflow": lru,
        "storage": storage,
        "ring_buffer": ring,
        "daemon": {"skipped": "mptcp-probe daemon and collect do not exist yet: no steady CPU/RSS or upload rate to measure"},
        "targets": targets,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

// ---------------------------------------------------------------------------------------------
// The table for people

fn f(v: &Value, ptr: &str, prec: usize) -> String {
    match v.pointer(ptr).and_then(Value::as_f64) {
        Some(x) => format!("{x:.prec$}"),
        None => "-".into(),
    }
}

fn sp(v: &Value, ptr: &str, prec: usize) -> String {
    format!(
        "{} [{}–{}]",
        f(v, &format!("{ptr}/median"), prec),
        f(v, &format!("{ptr}/min"), prec),
        f(v, &format!("{ptr}/max"), prec)
    )
}

fn table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", mptcp_probe_tests::text::table(header, rows));
}

fn print_report(r: &Value) {
    let c = &r["config"];
    println!(
        "\nmptcp-probe bench ({} mode, kernel {}, {} CPUs, load {} at start, {} s in all)\n",
        r["mode"].as_str().unwrap_or(""),
        r["kernel"].as_str().unwrap_or(""),
        r["cpus"],
        f(r, "/load_average_at_start", 2),
        f(r, "/seconds", 0)
    );
    println!(
        "Bulk MPTCP transfer, {}, observed on {}; {} runs of {} s per configuration; median [min–max]. \
         Throughput: both CPUs. CPU: everything pinned to CPU {} and saturating it, that CPU's busy \
         time per GB (softirq included); extra = minus no observer.",
        c["path"].as_str().unwrap_or(""),
        c["observed_interface"].as_str().unwrap_or(""),
        c["repetitions"],
        c["transfer_seconds"],
        c["pinned_cpu"].as_str().unwrap_or(""),
    );
    let mut rows = Vec::new();
    for k in ["off", "probe", "tcpdump_header", "tcpdump_full"] {
        let b = &r["bulk"][k];
        rows.push(vec![
            b["label"].as_str().unwrap_or(k).to_string(),
            sp(b, "/throughput_mbytes_per_s", 0),
            format!("{}/{}", b["collapsed_runs"], b["one_cpu"]["collapsed_runs"]),
            sp(b, "/one_cpu/mbytes_per_s", 0),
            sp(b, "/cpu_s_per_gb", 3),
            f(&r["ratios"]["extra_cpu_s_per_gb"], &format!("/{k}"), 3),
            f(b, "/observer_process_cpu_s_per_gb/median", 4),
            f(b, "/file_bytes_per_gb/median", 0),
        ]);
    }
    table(
        &[
            "observer",
            "MB/s (2 CPUs)",
            "collapsed",
            "MB/s (1 CPU)",
            "CPU s/GB (1 CPU)",
            "extra CPU s/GB",
            "its process CPU s/GB",
            "file B/GB",
        ],
        &rows,
    );
    let busy: Vec<String> = ["off", "probe", "tcpdump_header", "tcpdump_full"]
        .iter()
        .map(|k| {
            let o = &r["bulk"][k]["one_cpu"];
            format!(
                "{} {}/{}",
                r["bulk"][k]["label"].as_str().unwrap_or(k),
                f(o, "/cpu_busy_share/median", 2),
                f(o, "/other_cpus_busy_share/median", 2)
            )
        })
        .collect();
    println!("One-CPU runs, busy share of the pinned CPU / of the others (median): {}", busy.join(", "));
    println!(
        "Packets tcpdump reported dropped by the kernel, all runs: header-only {}, full {}",
        r["bulk"]["tcpdump_header"]["tcpdump_dropped_packets"],
        r["bulk"]["tcpdump_full"]["tcpdump_dropped_packets"]
    );
    let q = &r["ratios"];
    println!(
        "Ratios: throughput probe/off {}, header-only/off {}, full/off {}, probe/header-only {}, probe/full {}; \
         on one CPU probe/off {}, header-only/off {}; \
         extra CPU probe/header-only {}, probe/full {}; observer process CPU probe/header-only {}\n",
        f(q, "/throughput_probe_over_off", 3),
        f(q, "/throughput_tcpdump_header_over_off", 3),
        f(q, "/throughput_tcpdump_full_over_off", 3),
        f(q, "/throughput_probe_over_tcpdump_header", 3),
        f(q, "/throughput_probe_over_tcpdump_full", 3),
        f(q, "/one_cpu_throughput_probe_over_off", 3),
        f(q, "/one_cpu_throughput_tcpdump_header_over_off", 3),
        f(q, "/extra_cpu_probe_over_tcpdump_header", 3),
        f(q, "/extra_cpu_probe_over_tcpdump_full", 3),
        f(q, "/observer_process_cpu_probe_over_tcpdump_header", 3),
    );

    let p = &r["prog_test_run"];
    println!(
        "Per-packet cost, BPF_PROG_TEST_RUN ({} runs x {} rounds, median ns/packet; net = minus the empty classifier)",
        p["repeat"], p["rounds"]
    );
    let mut rows = Vec::new();
    for fr in p["frames"].as_array().into_iter().flatten() {
        rows.push(vec![
            fr["name"].as_str().unwrap_or("").to_string(),
            format!("{}", fr["frame_bytes"]),
            f(fr, "/empty_ns", 1),
            format!("{} ({})", f(fr, "/programs/tc_ingress/ns", 1), f(fr, "/programs/tc_ingress/net_ns", 1)),
            format!("{} ({})", f(fr, "/programs/tc_egress/ns", 1), f(fr, "/programs/tc_egress/net_ns", 1)),
            fr["what"].as_str().unwrap_or("").to_string(),
        ]);
    }
    table(&["frame", "bytes", "empty", "tc_ingress (net)", "tc_egress (net)", "what"], &rows);

    let s = &r["bpf_stats"];
    println!(
        "Kernel run-time counters during a bulk run (two CPUs) with watch (kernel.bpf_stats_enabled=1; {} MB/s)",
        f(s, "/mbytes_per_s", 0)
    );
    let mut rows = Vec::new();
    for (name, v) in s["programs"].as_object().into_iter().flatten() {
        rows.push(vec![
            name.clone(),
            format!("{}", v["runs"]),
            f(v, "/ns_per_run", 1),
            f(v, "/runs_per_gb", 0),
            f(v, "/cpu_ms_per_gb", 3),
        ]);
    }
    table(&["program", "runs", "ns/run", "runs/GB", "CPU ms/GB"], &rows);

    let sc = &r["short_connections"];
    println!(
        "Short MPTCP connections ({} per run, {} runs each; connect, 1 byte each way, close; CPU: all CPUs)",
        sc["connections_per_run"], sc["repetitions"]
    );
    table(
        &[
            "observer",
            "connections/s",
            "probe/off",
            "CPU ms/conn",
            "watch ms/conn",
            "events/s",
            "kept B/conn (events+summary+pcapng)",
        ],
        &[
            vec![
                "no observer".into(),
                sp(sc, "/per_second/off", 0),
                "".into(),
                f(sc, "/cpu_ms_per_connection/off/median", 3),
                "".into(),
                "".into(),
                "".into(),
            ],
            vec![
                "mptcp-probe watch".into(),
                sp(sc, "/per_second/probe", 0),
                f(sc, "/probe_over_off", 3),
                f(sc, "/cpu_ms_per_connection/probe/median", 3),
                f(sc, "/watch_process_cpu_ms_per_connection/median", 3),
                f(sc, "/events_per_s/median", 0),
                format!(
                    "{} ({}+{}+{})",
                    f(sc, "/kept_bytes_per_connection/total/median", 0),
                    f(sc, "/kept_bytes_per_connection/events/median", 0),
                    f(sc, "/kept_bytes_per_connection/summary/median", 0),
                    f(sc, "/kept_bytes_per_connection/pcapng/median", 0)
                ),
            ],
        ],
    );

    let l = &r["flow_table_overflow"];
    println!(
        "Flow table of {} entries, 2 batches of {} concurrent connections: flows created {}, evictions {}, \
         evicted before summary {}, insert failures {}, summaries {}; watch alive {}, exit code {}; \
         RSS {} KiB at start, {} after the batches, peak {} KiB\n",
        l["flow_table_size"],
        l["concurrent_flows"],
        f(l, "/flows_created", 0),
        l["flow_table_evictions"],
        l["flows_evicted_unsummarised"],
        f(l, "/flow_insert_failed", 0),
        l["flow_summaries"],
        l["alive_until_stopped"],
        l["exit_code"],
        l["rss_kib_at_start"],
        l["rss_kib_after_batch"],
        l["peak_rss_kib"]
    );

    let st = &r["storage"];
    println!(
        "Storage for one bulk connection ({} GB, two-CPU runs): the probe keeps {} B (events {} + summary {} + pcapng {}); \
         header-only capture {} B, full capture {} B of the same transfer; probe/header-only {}, probe/full {}; \
         short connection {} B; plus {} B of counters per watch session\n",
        f(st, "/bulk_connection_gb", 2),
        f(st, "/probe_kept_bytes/total", 0),
        f(st, "/probe_kept_bytes/events/median", 0),
        f(st, "/probe_kept_bytes/summary/median", 0),
        f(st, "/probe_kept_bytes/pcapng/median", 0),
        f(st, "/tcpdump_header_bytes_same_transfer", 0),
        f(st, "/tcpdump_full_bytes_same_transfer", 0),
        f(st, "/probe_over_tcpdump_header", 7),
        f(st, "/probe_over_tcpdump_full", 9),
        f(st, "/short_connection_kept_bytes", 0),
        f(st, "/counters_line_bytes_per_watch_session", 0),
    );

    let rb = &r["ring_buffer"];
    println!(
        "Ring buffer: {} events dropped in all observed runs (highest event rate {} /s){}\n",
        f(rb, "/dropped_total", 0),
        f(rb, "/max_events_per_s", 0),
        match rb["drops_start_at_events_per_s"].as_f64() {
            Some(x) => format!("; drops seen from {x:.0} events/s"),
            None => String::new(),
        }
    );
    println!("Daemon and collector: {}\n", r["daemon"]["skipped"].as_str().unwrap_or(""));

    println!("Targets");
    let mut rows = Vec::new();
    for t in r["targets"].as_array().into_iter().flatten() {
        rows.push(vec![
            t["target"].as_str().unwrap_or("").to_string(),
            t["wanted"].as_str().unwrap_or("").to_string(),
            match t["measured"].as_f64() {
                Some(x) if x.abs() < 0.01 && x != 0.0 => format!("{x:.2e}"),
                Some(x) => format!("{x:.3}"),
                None => "-".into(),
            },
            match t["met"].as_bool() {
                Some(true) => "met".into(),
                Some(false) => "MISSED".into(),
                None => "not measured".into(),
            },
        ]);
    }
    table(&["target", "wanted", "measured", ""], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures every report must carry as numbers that are finite and not negative.
    const FIGURES: &[&str] = &[
        "/bulk/off/throughput_mbytes_per_s/median",
        "/bulk/probe/throughput_mbytes_per_s/median",
        "/bulk/tcpdump_header/throughput_mbytes_per_s/median",
        "/bulk/tcpdump_full/throughput_mbytes_per_s/median",
        "/bulk/off/cpu_s_per_gb/median",
        "/bulk/off/one_cpu/mbytes_per_s/median",
        "/bulk/probe/one_cpu/mbytes_per_s/median",
        "/bulk/off/cpu_s_per_gb_two_cpus/median",
        "/bulk/probe/cpu_s_per_gb/median",
        "/bulk/tcpdump_header/cpu_s_per_gb/median",
        "/bulk/tcpdump_full/cpu_s_per_gb/median",
        "/bulk/probe/observer_process_cpu_s_per_gb/median",
        "/bulk/tcpdump_header/observer_process_cpu_s_per_gb/median",
        "/bulk/tcpdump_header/file_bytes_per_gb/median",
        "/bulk/tcpdump_full/file_bytes_per_gb/median",
        "/bulk/probe/collapsed_runs",
        "/ratios/throughput_probe_over_off",
        "/ratios/throughput_probe_over_tcpdump_header",
        "/ratios/throughput_probe_over_tcpdump_full",
        "/bpf_stats/total_cpu_ms_per_gb",
        "/short_connections/per_second/off/median",
        "/short_connections/per_second/probe/median",
        "/short_connections/probe_over_off",
        "/short_connections/cpu_ms_per_connection/off/median",
        "/short_connections/cpu_ms_per_connection/probe/median",
        "/short_connections/watch_process_cpu_ms_per_connection/median",
        "/short_connections/kept_bytes_per_connection/total/median",
        "/flow_table_overflow/flows_created",
        "/flow_table_overflow/flow_table_evictions",
        "/flow_table_overflow/peak_rss_kib",
        "/storage/probe_kept_bytes/total",
        "/storage/tcpdump_header_bytes_same_transfer",
        "/storage/tcpdump_full_bytes_same_transfer",
        "/storage/probe_over_tcpdump_header",
        "/ring_buffer/dropped_total",
        "/ring_buffer/max_events_per_s",
    ];

    /// Differences of noisy medians: finite, any sign.
    const SIGNED: &[&str] = &[
        "/ratios/extra_cpu_s_per_gb/probe",
        "/ratios/extra_cpu_s_per_gb/tcpdump_header",
        "/ratios/extra_cpu_s_per_gb/tcpdump_full",
    ];

    fn bins() -> Bins {
        let var = |k: &str| {
            std::env::var_os(k).map(PathBuf::from).unwrap_or_else(|| {
                panic!("{k} is not set: run this through `cargo xtask test`, which builds and names the binaries")
            })
        };
        Bins { probe: var("MPTCP_PROBE_BIN"), peer: var("MPTCP_PEER_BIN") }
    }

    /// The quick bench runs end to end and produces every figure; no threshold is checked.
    #[test]
    fn quick_bench_produces_every_figure() {
        mptcp_probe_tests::require_root();
        let r = bench(&Config::quick(), &bins()).expect("the quick bench runs");
        let bad = |p: &str, why: &str| -> ! { panic!("figure {p} {why}; report:\n{r:#}") };
        for p in FIGURES {
            match r.pointer(p).and_then(Value::as_f64) {
                Some(x) if x.is_finite() && x >= 0.0 => {}
                _ => bad(p, "is missing, negative or not a number"),
            }
        }
        for p in SIGNED {
            if !r.pointer(p).and_then(Value::as_f64).is_some_and(f64::is_finite) {
                bad(p, "is missing or not a number");
            }
        }
        for fr in ["syn_mp_capable", "data_dss", "pure_ack", "tcp_data", "ipv6_dss"] {
            let frame = r["prog_test_run"]["frames"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == fr))
                .unwrap_or_else(|| bad(fr, "has no test-run figures"));
            for p in ["/empty_ns", "/programs/tc_ingress/ns", "/programs/tc_egress/ns"] {
                if !frame.pointer(p).and_then(Value::as_f64).is_some_and(|x| x.is_finite() && x > 0.0) {
                    bad(&format!("{fr}{p}"), "is missing or not positive");
                }
            }
        }
        for prog in ["tc_ingress", "tc_egress"] {
            if r["bpf_stats"]["programs"][prog]["runs"].as_u64().unwrap_or(0) == 0 {
                bad(&format!("/bpf_stats/programs/{prog}/runs"), "is missing or zero");
            }
        }
        assert_eq!(r["flow_table_overflow"]["exit_code"], 0, "watch must survive the overflow: {r:#}");
        assert!(r["daemon"]["skipped"].is_string());
        for t in r["targets"].as_array().expect("targets") {
            // A ratio of two extra-CPU figures is undefined when tiny runs measure no extra CPU
            // for tcpdump; its parts are checked above (SIGNED).
            let ratio_of_noise = t["target"].as_str().is_some_and(|n| n.starts_with("extra CPU"));
            assert!(t["measured"].is_number() || ratio_of_noise, "target without a measured figure: {t}");
        }
    }
}
