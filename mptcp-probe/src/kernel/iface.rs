//! Interfaces of the current network namespace, read from sysfs.

use std::fs;

use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub up: bool,
    /// Packets carry an Ethernet header at TC (Ethernet, loopback); false for tun/WireGuard etc.
    pub has_l2: bool,
}

#[derive(Debug, Error)]
pub enum IfaceError {
    #[error("unknown interface {0:?}: no such interface in this network namespace (see `ip link`)")]
    Unknown(String),
    #[error("reading /sys/class/net: {0}")]
    Sysfs(std::io::Error),
}

const IFF_UP: u32 = 0x1;
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;

fn read_u32(path: &str) -> Option<u32> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn describe(name: &str) -> Option<Interface> {
    let base = format!("/sys/class/net/{name}");
    let index = read_u32(&format!("{base}/ifindex"))?;
    let flags = read_u32(&format!("{base}/flags")).unwrap_or(0);
    let kind = read_u32(&format!("{base}/type")).unwrap_or(ARPHRD_ETHER);
    Some(Interface {
        name: name.to_string(),
        index,
        up: flags & IFF_UP != 0,
        has_l2: kind == ARPHRD_ETHER || kind == ARPHRD_LOOPBACK,
    })
}

/// Every interface of this network namespace.
pub fn list() -> Result<Vec<Interface>, IfaceError> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/sys/class/net").map_err(IfaceError::Sysfs)? {
        let entry = entry.map_err(IfaceError::Sysfs)?;
        if let Some(i) = entry.file_name().to_str().and_then(describe) {
            out.push(i);
        }
    }
    out.sort_by_key(|i| i.index);
    Ok(out)
}

/// The named interfaces, or an error naming the first unknown one.
pub fn named(names: &[String]) -> Result<Vec<Interface>, IfaceError> {
    names.iter().map(|n| describe(n).ok_or_else(|| IfaceError::Unknown(n.clone()))).collect()
}

/// The network namespace inode of the calling thread (a thread may have entered another
/// namespace than the process's).
pub fn current_netns() -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino() as u32).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_a_link_layer() {
        let all = list().expect("sysfs readable");
        let lo = all.iter().find(|i| i.name == "lo").expect("lo exists in every namespace");
        assert!(lo.has_l2);
        assert_eq!(lo.index, 1);
    }

    #[test]
    fn unknown_interface_is_named_in_the_error() {
        let err = named(&["no-such-if0".to_string()]).unwrap_err();
        assert!(err.to_string().contains("no-such-if0"), "{err}");
    }
}
