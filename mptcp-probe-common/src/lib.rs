//! Types shared by the kernel programs and user space of mptcp-probe, and the one TCP/MPTCP option
//! parser both use.
#![no_std]

pub mod config;
pub mod counters;
pub mod event;
pub mod flow;
pub mod options;
pub mod proto;
