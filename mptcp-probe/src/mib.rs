//! The kernel's MPTCP MIB counters (MPTcpExt in /proc/net/netstat).

use std::collections::BTreeMap;

/// Parses the MPTcpExt header/value line pair of /proc/net/netstat.
pub fn parse(netstat: &str) -> BTreeMap<String, u64> {
    let lines: Vec<&str> = netstat
        .lines()
        .filter(|l| l.starts_with("MPTcpExt:"))
        .collect();
    let mut out = BTreeMap::new();
    if let [names, values, ..] = lines.as_slice() {
        for (n, v) in names
            .split_whitespace()
            .skip(1)
            .zip(values.split_whitespace().skip(1))
        {
            if let Ok(v) = v.parse() {
                out.insert(n.to_string(), v);
            }
        }
    }
    out
}

/// Counter names in the kernel's order (the order of the MIB enum).
pub fn names() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("MPTcpExt:"))
        .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Current counters of this network namespace.
pub fn read() -> BTreeMap<String, u64> {
    parse(&std::fs::read_to_string("/proc/net/netstat").unwrap_or_default())
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
}
