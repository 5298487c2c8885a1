//! The public data model of mptcp-probe: what its outputs say, typed once for every producer and
//! consumer. `check --json` and uploads carry a [`Report`]; `watch --json` prints [`WatchLine`]s;
//! `prog-bench` prints a [`bench::ProgBench`]; a collector parses reports with this crate alone.
//! Serde only: no kernel, no runtime.

pub mod bench;
pub mod connection;
pub mod flow;
pub mod locate;
pub mod report;
pub mod verdict;
pub mod watch;
pub mod wire;

pub use connection::{
    ConnectionKind, ConnectionView, HandshakeView, Part, SegmentStats, ViewSource, WireSummary,
};
pub use flow::{
    ConnectionOutcome, Ended, FallbackCause, FlowSummary, Handshake, HandshakePacket, PerDirection, Role,
    Subflow,
};
pub use report::{
    summarize, ClientEvidence, ClientInfo, MptcpState, NetworkKind, ObserverKind, Outcome, Report, Reruns,
    ServerSide, Summary, SysctlValue, TestEvidence, TestName, TestResult, Transport, MAX_NOTE_CHARS, SCHEMA,
};
pub use verdict::{End, Finding, Kind, Packet, UnknownName, Verdict};
pub use watch::{Counters, Event, FallbackSource, WatchLine};
pub use wire::{Direction, MappingStatus, Subtype, TcpRstReason, TcpState};
