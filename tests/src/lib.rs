//! Test support for mptcp-probe: network-namespace labs with the design's documentation addresses,
//! guards that always clean up, MPTCP test peers and helpers to run the probe inside a namespace.
//! Used by the end-to-end tests and by `cargo xtask measure`.

pub mod browser;
pub mod collect;
pub mod daemon;
pub mod e2e;
pub mod foreign;
pub mod lab;
pub mod matrix;
pub mod oracle;
pub mod peer;
pub mod probe;
pub mod scenario;
pub mod schema;
pub mod sys;
pub mod text;
pub mod workspace;

pub use workspace::{middlebox_bin, peer_bin, probe_bin, target_dir};

/// True when running as root (the end-to-end tests need it to create namespaces and load eBPF).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
