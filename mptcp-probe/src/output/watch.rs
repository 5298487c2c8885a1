//! The `watch` sink: every event and flow summary on stdout, as a line for people or a JSON
//! object for machines, and the reported packets' headers into a pcapng trace.

use std::io::{BufWriter, Stdout, Write};

use mptcp_probe_model::{watch::Counters, FlowSummary, WatchLine};

use super::{pcap::PcapTrace, text};
use crate::{
    kernel::decode::Event,
    pipeline::{
        record::record,
        sink::{Context, Sink},
    },
};

pub struct WatchSink {
    out: BufWriter<Stdout>,
    json: bool,
    /// Only flow summaries (and the counters), no events.
    flows_only: bool,
    pcap: Option<PcapTrace>,
}

impl WatchSink {
    pub fn new(json: bool, flows_only: bool, pcap: Option<PcapTrace>) -> Self {
        Self { out: BufWriter::new(std::io::stdout()), json, flows_only, pcap }
    }

    fn line(&mut self, text: impl FnOnce() -> String, json: impl FnOnce() -> WatchLine) {
        let line = if self.json { serde_json::to_string(&json()).unwrap_or_default() } else { text() };
        // A closed stdout (a pager quit) is not worth stopping the observation for.
        let _ = writeln!(self.out, "{line}");
    }
}

impl Sink for WatchSink {
    fn event(&mut self, ev: &Event, ctx: &Context) {
        if let (Event::Packet(p), Some(trace)) = (ev, self.pcap.as_mut()) {
            if let Err(e) = trace.write(p, &ctx.iface(p.flow.ifindex)) {
                tracing::error!("{e:#}; no more packets go to the trace");
                self.pcap = None;
            }
        }
        if self.flows_only {
            return;
        }
        let r = record(ev, ctx);
        self.line(|| text::event_line(&r), || WatchLine::Event(r.clone()));
    }

    fn flow(&mut self, s: &FlowSummary) {
        self.line(|| text::flow_line(s), || WatchLine::Flow(Box::new(s.clone())));
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }

    fn finish(&mut self, c: &Counters) -> anyhow::Result<()> {
        self.line(|| text::counters_line(c), || WatchLine::Counters(c.clone()));
        let _ = self.out.flush();
        if let Some(trace) = self.pcap.take() {
            let n = trace.packets;
            let path = trace.path().to_path_buf();
            trace.finish()?;
            tracing::info!("wrote {n} packet header(s) to {}", path.display());
        }
        Ok(())
    }
}
