//! Types shared by the kernel programs and user space of mptcp-probe, and the one TCP/MPTCP option
//! parser both use.
#![no_std]

pub mod config;
pub mod counters;
pub mod event;
pub mod flow;
pub mod options;

/// Names of the MPTCP option subtypes, indexed by [`flow::subtype_slot`].
pub const SUBTYPE_NAMES: [&str; flow::SUBTYPE_SLOTS] = [
    "mp_capable",
    "mp_join",
    "dss",
    "add_addr",
    "remove_addr",
    "mp_prio",
    "mp_fail",
    "mp_fastclose",
    "mp_tcprst",
    "other",
];
