//! What the host says about itself: CPU time, process time and memory from /proc, free space,
//! and the directory the observers write to.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Serialize;

/// CPU time from /proc/stat (all CPUs, or one), in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuStat {
    pub busy: u64,
    pub softirq: u64,
}

impl CpuStat {
    /// `which`: "cpu" for the sum over all CPUs, "cpu0" for CPU 0.
    pub fn read(which: &str) -> Self {
        Self::parse(&fs::read_to_string("/proc/stat").unwrap_or_default(), which)
    }

    fn parse(stat: &str, which: &str) -> Self {
        let line = stat.lines().find(|l| l.split_whitespace().next() == Some(which)).unwrap_or_default();
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let f = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        Self { busy: f(0) + f(1) + f(2) + f(5) + f(6) + f(7), softirq: f(6) }
    }
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Seconds between two tick counts.
pub fn ticks_to_s(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / clock_ticks()
}

/// utime + stime of a process, in clock ticks.
pub fn process_ticks(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let v: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    v.get(11).copied().unwrap_or(0) + v.get(12).copied().unwrap_or(0)
}

/// A numeric field (`key:\tvalue`) of an fdinfo text.
pub fn fdinfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
}

/// The fdinfo texts of every descriptor `pid` holds (empty when it is gone).
pub fn fdinfos(pid: u32) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    dir.flatten().filter_map(|e| fs::read_to_string(e.path()).ok()).collect()
}

/// A `/proc/PID/status` value in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    status_like(&format!("/proc/{pid}/status"), key)
}

pub fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn free_bytes(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return 0 };
    // SAFETY: zeroed statvfs is a valid out-parameter; c is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return 0;
    }
    s.f_bavail as u64 * s.f_frsize as u64
}

pub fn mem_available() -> u64 {
    status_like("/proc/meminfo", "MemAvailable") * 1024
}

fn status_like(path: &str, key: &str) -> u64 {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The observer's crates, whose source the bench measures.
const OBSERVER_CRATES: [&str; 4] =
    ["mptcp-probe", "mptcp-probe-ebpf", "mptcp-probe-common", "mptcp-probe-model"];

/// The observer's source as built for the bench: the commit, and the crates with uncommitted
/// changes (empty when git cannot tell).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Source {
    pub commit: String,
    pub modified_crates: Vec<&'static str>,
}

impl Source {
    pub fn read() -> Self {
        let root = crate::workspace_root();
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let status = git(&["status", "--porcelain", "--"]).unwrap_or_default();
        Self {
            commit: git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default().trim().to_string(),
            modified_crates: modified(&status),
        }
    }
}

/// The observer's crates that `git status --porcelain` lines name.
fn modified(status: &str) -> Vec<&'static str> {
    OBSERVER_CRATES
        .into_iter()
        .filter(|c| status.lines().any(|l| l.get(3..).is_some_and(|path| path.split('/').next() == Some(*c))))
        .collect()
}

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

/// Where a [`WorkDir`] lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    #[default]
    Tmpfs,
    Disk,
}

/// Where the observers write (captures, pcapng, output), removed on drop. tmpfs when there is
/// memory to spare: writeback of gigabytes of capture to the virtual disk would otherwise eat
/// CPU during the runs that follow (and it spares tcpdump the disk, in its favour).
pub struct WorkDir {
    pub path: PathBuf,
    pub kind: StorageKind,
}

impl WorkDir {
    pub fn new() -> anyhow::Result<Self> {
        let shm = Path::new("/dev/shm");
        let (base, kind) =
            if shm.is_dir() && mem_available() >= 16_000_000_000 && free_bytes(shm) >= 12_000_000_000 {
                (shm.to_path_buf(), StorageKind::Tmpfs)
            } else {
                (std::env::temp_dir(), StorageKind::Disk)
            };
        let path = base.join(format!("mptcp-bench-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, kind })
    }

    /// Whether a file of `bytes` fits: on tmpfs it also takes memory.
    pub fn has_room_for(&self, bytes: u64) -> bool {
        free_bytes(&self.path) >= bytes && (self.kind != StorageKind::Tmpfs || mem_available() >= bytes)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_crates_are_named_by_the_first_component_of_the_path() {
        let status = " M mptcp-probe-ebpf/src/packet.rs\n M xtask/src/bench/mod.rs\n?? mptcp-probe/src/new.rs\n M tests/src/lib.rs\n";
        assert_eq!(modified(status), ["mptcp-probe", "mptcp-probe-ebpf"]);
        assert!(modified("").is_empty());
    }

    #[test]
    fn fdinfo_fields_are_read_by_their_whole_key() {
        let text = "pos:\t0\nprog_type:\t3\nrun_time_ns:\t1234\nrun_cnt:\t7\nmap_type:\t9\n";
        assert_eq!(fdinfo_field(text, "run_time_ns"), Some(1234));
        assert_eq!(fdinfo_field(text, "run_cnt"), Some(7));
        assert_eq!(fdinfo_field(text, "run"), None);
        assert_eq!(fdinfo_field(text, "memlock"), None);
    }

    #[test]
    fn busy_time_is_everything_but_idle_and_iowait() {
        let stat = "cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 0 1 500 0 0 1 0 0 0\n";
        let all = CpuStat::parse(stat, "cpu");
        assert_eq!((all.busy, all.softirq), (10 + 1 + 5 + 2 + 3 + 4, 3));
        let cpu0 = CpuStat::parse(stat, "cpu0");
        assert_eq!((cpu0.busy, cpu0.softirq), (3, 1));
        assert_eq!(CpuStat::parse(stat, "cpu7").busy, 0);
    }
}
