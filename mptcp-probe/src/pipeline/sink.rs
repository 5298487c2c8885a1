//! What the pipeline hands its outputs. A new output (stdout, a trace file, a per-test recorder,
//! metrics, a spool) is a new [`Sink`], not a new loop.

use std::collections::BTreeMap;

use mptcp_probe_common::flow::FlowKey;
use mptcp_probe_model::{watch::Counters, FlowSummary};

use crate::kernel::decode::Event;

/// What the kernel's events do not carry themselves: interface names, the observer's network
/// namespace, the names of the MIB counters fallback events refer to by index.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub ifaces: BTreeMap<u32, String>,
    pub netns: u32,
    pub mib_names: Vec<String>,
}

impl Context {
    /// An interface's name, or its index when it is gone.
    pub fn iface(&self, ifindex: u32) -> String {
        self.ifaces.get(&ifindex).cloned().unwrap_or_else(|| ifindex.to_string())
    }
}

/// A consumer of the pipeline. Every method has a default that ignores what it is given.
pub trait Sink: Send {
    /// An event that belongs to the observed flows: every reported packet, and the kernel events
    /// whose socket matches one of them (or that carry no socket).
    fn event(&mut self, _ev: &Event, _ctx: &Context) {}

    /// A flow ended (FIN both ways or RST, after a grace period), went quiet for the idle timeout,
    /// or was still open when the pipeline stopped.
    fn flow(&mut self, _summary: &FlowSummary) {}

    /// A flow the kernel's bounded table dropped before it could be summarised.
    fn evicted(&mut self, _key: &FlowKey) {}

    /// The end of a batch of events: a moment to flush buffered output.
    fn flush(&mut self) {}

    /// The pipeline stopped; these are its final counters.
    fn finish(&mut self, _counters: &Counters) -> anyhow::Result<()> {
        Ok(())
    }
}
