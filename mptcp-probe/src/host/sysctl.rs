//! The host's MPTCP settings as a report records them, and the one the tests must undo.

use std::collections::BTreeMap;

use mptcp_probe_model::SysctlValue;

const MPTCP_SYSCTLS: &str = "/proc/sys/net/mptcp";
const BLACKHOLE_TIMEOUT: &str = "/proc/sys/net/mptcp/blackhole_timeout";

/// Every `net.mptcp.*` sysctl of this namespace.
pub fn mptcp_sysctls() -> BTreeMap<String, SysctlValue> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(MPTCP_SYSCTLS) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Ok(v) = std::fs::read_to_string(e.path()) {
                out.insert(name, SysctlValue::parse(v.trim()));
            }
        }
    }
    out
}

/// The running kernel's release.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Resets the kernel's MPTCP blackhole state if these MIB movements show it was triggered (a
/// dropped MPTCP SYN disables MPTCP for `blackhole_timeout` seconds); writing the timeout again
/// clears it. Returns what was done, for the report.
pub fn undo_blackhole(delta: &BTreeMap<String, u64>) -> Option<String> {
    let hit = ["Blackhole", "MPCapableSYNTXDrop"].iter().any(|k| delta.get(*k).copied().unwrap_or(0) > 0);
    if !hit {
        return None;
    }
    let value = std::fs::read_to_string(BLACKHOLE_TIMEOUT).ok()?;
    let value = value.trim();
    Some(match std::fs::write(BLACKHOLE_TIMEOUT, value) {
        Ok(()) => format!(
            "dropped MPTCP SYNs made the kernel's blackhole detection disable MPTCP; reset (blackhole_timeout rewritten with {value})"
        ),
        Err(e) => format!(
            "dropped MPTCP SYNs may have made the kernel disable MPTCP for blackhole_timeout={value} s; could not reset it: {e}"
        ),
    })
}
