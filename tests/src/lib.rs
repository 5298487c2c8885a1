//! Test support for mptcp-probe: network-namespace labs with the design's documentation addresses,
//! guards that always clean up, MPTCP test peers and helpers to run the probe inside a namespace.
//! Used by the end-to-end tests and by `cargo xtask measure`.

pub mod lab;
pub mod matrix;
pub mod oracle;
pub mod peer;
pub mod probe;
pub mod scenario;

use std::path::PathBuf;

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target")
}

/// The `mptcp-probe` binary under test: `MPTCP_PROBE_BIN`, else the release build, else debug.
pub fn probe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MPTCP_PROBE_BIN") {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = target_dir().join(profile).join("mptcp-probe");
        if p.exists() {
            return p;
        }
    }
    panic!("mptcp-probe is not built: run `cargo build --release -p mptcp-probe` or set MPTCP_PROBE_BIN")
}

/// The `mptcp-peer` test binary next to the probe, or `MPTCP_PEER_BIN`.
pub fn peer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MPTCP_PEER_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_mptcp-peer") {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = target_dir().join(profile).join("mptcp-peer");
        if p.exists() {
            return p;
        }
    }
    panic!("mptcp-peer is not built: run `cargo build -p mptcp-probe-tests`")
}

/// The lab's `mptcp-middlebox` next to the probe, or `MPTCP_MIDDLEBOX_BIN`.
pub fn middlebox_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MPTCP_MIDDLEBOX_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_mptcp-middlebox") {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = target_dir().join(profile).join("mptcp-middlebox");
        if p.exists() {
            return p;
        }
    }
    panic!("mptcp-middlebox is not built: run `cargo build -p mptcp-probe-tests`")
}

/// True when running as root (the end-to-end tests need it to create namespaces and load eBPF).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Panics with a clear message unless running as root.
pub fn require_root() {
    assert!(
        is_root(),
        "this end-to-end test needs root (network namespaces, eBPF): run it through `cargo xtask test` as root"
    );
}
