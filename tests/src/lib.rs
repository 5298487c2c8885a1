//! Test support for mptcp-probe: network-namespace labs with the design's documentation addresses,
//! guards that always clean up, MPTCP test peers and helpers to run the probe inside a namespace.
//! Used by the end-to-end tests and by `cargo xtask measure`.

pub mod lab;
pub mod matrix;
pub mod oracle;
pub mod peer;
pub mod probe;
pub mod scenario;
pub mod text;

use std::path::PathBuf;

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target")
}

/// A binary of the workspace: `$env` if set, else `built` (Cargo's path when this crate's tests
/// are built together with it), else the release build, else the debug build.
fn workspace_bin(name: &str, env: &str, built: Option<&str>, hint: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    if let Some(p) = built {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = target_dir().join(profile).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not built: run `{hint}` or set {env}")
}

/// The `mptcp-probe` binary under test.
pub fn probe_bin() -> PathBuf {
    workspace_bin("mptcp-probe", "MPTCP_PROBE_BIN", None, "cargo build --release -p mptcp-probe")
}

/// The `mptcp-peer` test peer.
pub fn peer_bin() -> PathBuf {
    workspace_bin(
        "mptcp-peer",
        "MPTCP_PEER_BIN",
        option_env!("CARGO_BIN_EXE_mptcp-peer"),
        "cargo build -p mptcp-probe-tests",
    )
}

/// The lab's `mptcp-middlebox`.
pub fn middlebox_bin() -> PathBuf {
    workspace_bin(
        "mptcp-middlebox",
        "MPTCP_MIDDLEBOX_BIN",
        option_env!("CARGO_BIN_EXE_mptcp-middlebox"),
        "cargo build -p mptcp-probe-tests",
    )
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
