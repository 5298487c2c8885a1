//! The kernel's MPTCP MIB counters (MPTcpExt in /proc/net/netstat), of the calling thread's
//! network namespace.

use std::collections::BTreeMap;

/// The MIB counter names that name a fallback reason, in the order the kernel bumps them.
const FALLBACK_MIBS: [&str; 8] = [
    "MPCapableSYNTXDrop",
    "MPCapableFallbackSYNACK",
    "MPCapableFallbackACK",
    "MPCapableDataFallback",
    "DSSCorruptionFallback",
    "DssFallback",
    "InfiniteMapTx",
    "MPFallbackTokenInit",
];

/// The first fallback reason among the counters that moved.
pub fn fallback_reason(delta: &BTreeMap<String, u64>) -> Option<String> {
    FALLBACK_MIBS.iter().find(|k| delta.get(**k).copied().unwrap_or(0) > 0).map(|k| k.to_string())
}

/// Parses the MPTcpExt header/value line pair of /proc/net/netstat.
pub fn parse(netstat: &str) -> BTreeMap<String, u64> {
    let lines: Vec<&str> = netstat.lines().filter(|l| l.starts_with("MPTcpExt:")).collect();
    let mut out = BTreeMap::new();
    if let [names, values, ..] = lines.as_slice() {
        for (n, v) in names.split_whitespace().skip(1).zip(values.split_whitespace().skip(1)) {
            if let Ok(v) = v.parse() {
                out.insert(n.to_string(), v);
            }
        }
    }
    out
}

/// The calling thread's netstat (`/proc/net` is the main thread's).
const NETSTAT: &str = "/proc/thread-self/net/netstat";

/// Counter names in the kernel's order (the order of the MIB enum).
pub fn names() -> Vec<String> {
    let text = std::fs::read_to_string(NETSTAT).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("MPTcpExt:"))
        .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Current counters of this thread's network namespace.
pub fn read() -> BTreeMap<String, u64> {
    read_from(std::path::Path::new(NETSTAT))
}

/// Current counters from a netstat file (another thread's: `/proc/PID/task/TID/net/netstat`).
pub fn read_from(netstat: &std::path::Path) -> BTreeMap<String, u64> {
    parse(&std::fs::read_to_string(netstat).unwrap_or_default())
}

/// Counters that grew between two readings, with how much.
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mptcpext_lines_are_paired_by_position() {
        let text = "TcpExt: A B\nTcpExt: 1 2\nMPTcpExt: MPCapableSYNRX MPCapableFallbackACK\nMPTcpExt: 5 7\n";
        let m = parse(text);
        assert_eq!(m.get("MPCapableSYNRX"), Some(&5));
        assert_eq!(m.get("MPCapableFallbackACK"), Some(&7));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn delta_keeps_only_counters_that_grew() {
        let a = parse("MPTcpExt: A B C\nMPTcpExt: 1 2 3\n");
        let b = parse("MPTcpExt: A B C D\nMPTcpExt: 1 5 3 2\n");
        let d = delta(&a, &b);
        assert_eq!(d.into_iter().collect::<Vec<_>>(), vec![("B".to_string(), 3), ("D".to_string(), 2)]);
    }
}
