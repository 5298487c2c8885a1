//! What the host itself says: its MPTCP MIB counters, path manager, sysctls, sockets, clocks and
//! privileges.

pub mod clock;
pub mod diag;
pub mod mib;
pub mod pm;
pub mod preflight;
pub mod sock;
pub mod sysctl;
