//! mptcp-probe observes Multipath TCP on the wire and in the kernel, and names what middleboxes do
//! to it. The data flows through these stages, a module each:
//!
//! - [`kernel`]: the eBPF programs loaded and attached (TC, tracepoints, optional fentry), their
//!   ring buffer, flow table and counters, and the tracefs/BTF facts they need;
//! - [`pipeline`]: one loop from the ring buffer to the outputs — source, correlator (flows,
//!   socket notes, summaries), sinks;
//! - [`verdict`]: the rules that name a middlebox's behaviour from both ends' evidence;
//! - [`active`]: `check`'s tests over MPTCP and plain TCP, and the report they make;
//! - [`server`]: `serve`, the test server `check` talks to;
//! - [`output`] (text, tables, pcapng) and [`export`] (uploads to a collector, metrics);
//! - [`daemon`]: the observer left running, with metrics, periodic checks and uploads;
//! - [`collect`]: the collector reports are uploaded to;
//! - [`host`]: the host's own facts (MIB counters, path manager, sysctls, sockets, privileges).
//!
//! The public data model (reports, verdicts, flow summaries, watch records) is the
//! `mptcp-probe-model` crate; the option parser and the kernel/user record layouts are
//! `mptcp-probe-common`.

pub mod active;
pub mod collect;
pub mod daemon;
pub mod export;
pub mod host;
pub mod kernel;
pub mod locate;
pub mod output;
pub mod pipeline;
pub mod protocol;
pub mod server;
pub mod verdict;
