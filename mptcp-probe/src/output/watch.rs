//! The `watch` sink: flow summaries and events on stdout, as lines for people or JSON objects for
//! machines, and the reported packets' headers in a pcapng trace. By default a clean connection
//! is one compact summary (and its handshake in the trace); the events and packets of a
//! connection where something went wrong are kept until its summary and written with it.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, Write},
    net::SocketAddr,
    os::fd::AsFd,
};

use mptcp_probe_common::{
    event::{why, PacketEvent},
    flow::FlowKey,
};
use mptcp_probe_model::{watch::Counters, FlowSummary, WatchLine};

use super::{pcap::PcapTrace, text};
use crate::{
    kernel::decode::Event,
    pipeline::{
        record::{addr, family_version, record, socket_addrs_of},
        sink::{Context, Sink},
        FlowMap,
    },
};

/// What `watch` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Every event as it comes, every reported packet in the trace.
    Events,
    /// Flow summaries; a connection's events and packets only when something went wrong on it.
    Troubled,
    /// Flow summaries only (the trace as for `Troubled`).
    FlowsOnly,
}

/// Events kept per connection until its summary, and connections with kept events.
const MAX_KEPT_EVENTS: usize = 256;
const MAX_KEPT_CONNECTIONS: usize = 65536;

/// A connection by its addresses as this host sees them.
type Tuple = (SocketAddr, SocketAddr);

/// Room for the events of a connection when its first is kept: a clean short MPTCP connection
/// brings about 22 (its packets and socket states), a list grown one by one would be moved three
/// times on the way.
const KEPT_FIRST: usize = 24;

/// An event kept until its connection's summary, as the kernel wrote it: its record is built
/// only if it is printed (most connections are clean and their events dropped). `iface`: a
/// packet's interface name, resolved now (the interface may be gone by then).
struct Kept {
    ev: Event,
    iface: Option<String>,
    /// Only when the record may be printed (the troubled-only output): what else it needs.
    netns: Option<u32>,
}

/// Standard output written a batch at a time: lines go into one buffer and reach the file
/// descriptor in one `write(2)` when it fills or the pipeline flushes (after each batch of
/// events, so a terminal still sees a batch as it comes). `Stdout` would add a lock and a line
/// buffer under the buffer, two `write(2)` calls per flush, and an 8 KiB buffer writes 7 KB of
/// every connection's events in a call of its own with `--events`.
struct Batched {
    buf: Vec<u8>,
    fd: Option<File>,
}

/// A batch written before the pipeline's flush when the events of one come to this much.
const BATCH_BYTES: usize = 256 * 1024;

impl Batched {
    fn stdout() -> Self {
        // A duplicate of the descriptor: the process's own `Stdout` stays as it was. Without one
        // (a closed stdout) lines go nowhere, as writing to a closed stdout would.
        Self::to(io::stdout().as_fd().try_clone_to_owned().ok().map(File::from))
    }

    fn to(fd: Option<File>) -> Self {
        Self { buf: Vec::with_capacity(BATCH_BYTES + BATCH_BYTES / 4), fd }
    }

    /// After a line: a full batch goes out.
    fn line_done(&mut self) {
        if self.buf.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let (false, Some(fd)) = (self.buf.is_empty(), self.fd.as_mut()) {
            // A closed stdout (a pager quit) is not worth stopping the observation for; what
            // could not be written is dropped, not kept to grow.
            let _ = fd.write_all(&self.buf);
        }
        self.buf.clear();
    }
}

/// Lines still buffered when the sink goes (an error that ends `watch` before its end) are
/// written, not lost.
impl Drop for Batched {
    fn drop(&mut self) {
        self.flush();
    }
}

pub struct WatchSink {
    out: Batched,
    json: bool,
    output: Output,
    pcap: Option<PcapTrace>,
    kept: FlowMap<Tuple, Vec<Kept>>,
    /// Order the kept connections came in, for the end (released ones are passed over then).
    order: VecDeque<Tuple>,
    /// Events not kept for lack of room (counted, said at the end).
    not_kept: u64,
}

impl WatchSink {
    pub fn new(json: bool, output: Output, pcap: Option<PcapTrace>) -> Self {
        Self {
            out: Batched::stdout(),
            json,
            output,
            pcap,
            kept: FlowMap::default(),
            order: VecDeque::new(),
            not_kept: 0,
        }
    }

    /// Writes a line in the one form asked for: JSON straight into the buffer, or text.
    fn print(&mut self, line: &WatchLine) {
        if self.json {
            let buf = &mut self.out.buf;
            let start = buf.len();
            // Into memory: the only error would be one of the model's own serialisation, and
            // then none of the line is written.
            match serde_json::to_writer(&mut *buf, line) {
                Ok(()) => buf.push(b'\n'),
                Err(e) => {
                    buf.truncate(start);
                    tracing::error!("a line could not be written as JSON: {e}");
                }
            }
        } else {
            let text = match line {
                WatchLine::Event(r) => text::event_line(r),
                WatchLine::Flow(s) => text::flow_line(s),
                WatchLine::Counters(c) => text::counters_line(c),
            };
            return self.text(&text);
        }
        self.out.line_done();
    }

    /// Writes a line for people.
    fn text(&mut self, line: &str) {
        self.out.buf.extend_from_slice(line.as_bytes());
        self.out.buf.push(b'\n');
        self.out.line_done();
    }

    fn trace(&mut self, p: &PacketEvent, iface: &str) {
        if let Some(trace) = self.pcap.as_mut() {
            if let Err(e) = trace.write(p, iface) {
                tracing::error!("{e:#}; no more packets go to the trace");
                self.pcap = None;
            }
        }
    }

    fn keep(&mut self, t: Tuple, k: Kept) {
        if !self.kept.contains_key(&t) {
            if self.kept.len() >= MAX_KEPT_CONNECTIONS {
                self.not_kept += 1;
                return;
            }
            if self.order.len() >= 2 * MAX_KEPT_CONNECTIONS {
                let kept = &self.kept;
                self.order.retain(|x| kept.contains_key(x));
            }
            self.order.push_back(t);
        }
        let list = self.kept.entry(t).or_insert_with(|| Vec::with_capacity(KEPT_FIRST));
        if list.len() < MAX_KEPT_EVENTS {
            list.push(k);
        } else {
            self.not_kept += 1;
        }
    }

    /// Writes what was kept of a connection: every event and packet when `all`, else only its
    /// handshake packets to the trace.
    fn release(&mut self, t: &Tuple, all: bool) {
        let Some(list) = self.kept.remove(t) else { return };
        for k in list {
            if let (Event::Packet(p), Some(iface)) = (&k.ev, &k.iface) {
                if all || p.why & (why::SYN | why::SYN_ACK | why::THIRD_ACK) != 0 {
                    self.trace(p, iface);
                }
            }
            if let (true, Some(netns)) = (all && self.output == Output::Troubled, k.netns) {
                let ctx = Context {
                    ifaces: match (&k.ev, k.iface) {
                        (Event::Packet(p), Some(name)) => [(p.flow.ifindex, name)].into(),
                        _ => Default::default(),
                    },
                    netns,
                    // Events with a MIB counter (fallbacks) name no connection: never kept.
                    mib_names: Vec::new(),
                };
                self.print(&WatchLine::Event(record(&k.ev, &ctx)));
            }
        }
    }
}

/// The connection an event belongs to, where it names one.
fn tuple_of(ev: &Event) -> Option<Tuple> {
    let sa = |ip, port| SocketAddr::new(ip, port);
    match ev {
        Event::Packet(p) => Some(socket_addrs_of(&p.flow)),
        Event::SockState(s) => {
            let v = family_version(s.family);
            Some((sa(addr(v, &s.saddr), s.sport), sa(addr(v, &s.daddr), s.dport)))
        }
        Event::Reset(r) => {
            let v = family_version(r.family);
            Some((sa(addr(v, &r.saddr), r.sport), sa(addr(v, &r.daddr), r.dport)))
        }
        Event::Mapping(_) | Event::Fallback(_) => None,
    }
}

impl Sink for WatchSink {
    fn event(&mut self, ev: &Event, ctx: &Context) {
        let iface = match ev {
            Event::Packet(p) => Some(ctx.iface(p.flow.ifindex)),
            _ => None,
        };
        let tuple = tuple_of(ev);
        match (self.output, tuple) {
            (Output::Events, _) | (Output::Troubled, None) => {
                if let (Event::Packet(p), Some(iface)) = (ev, &iface) {
                    self.trace(p, iface);
                }
                self.print(&WatchLine::Event(record(ev, ctx)));
            }
            (Output::FlowsOnly, None) => {}
            (Output::Troubled, Some(t)) => {
                self.keep(t, Kept { ev: *ev, iface, netns: Some(ctx.netns) });
            }
            (Output::FlowsOnly, Some(t)) => {
                if let (Some(name), true) = (iface, self.pcap.is_some()) {
                    self.keep(t, Kept { ev: *ev, iface: Some(name), netns: None });
                }
            }
        }
    }

    fn flow(&mut self, s: &FlowSummary) {
        let t = (SocketAddr::new(s.local_addr, s.local_port), SocketAddr::new(s.remote_addr, s.remote_port));
        let troubled = s.troubled();
        self.release(&t, troubled);
        if !self.json {
            return self.text(&text::flow_line(s));
        }
        let mut json = s.clone();
        if self.output == Output::Troubled && !troubled {
            // A clean connection in a line: its handshake went as it should (and is in the trace)
            // and its socket states are the usual ones.
            json.handshake = Default::default();
            json.socket_states.clear();
        }
        self.print(&WatchLine::Flow(Box::new(json)));
    }

    /// A flow without its summary: what was kept of it is all there is.
    fn evicted(&mut self, key: &FlowKey) {
        self.release(&socket_addrs_of(key), true);
    }

    fn flush(&mut self) {
        self.out.flush();
    }

    fn finish(&mut self, c: &Counters) -> anyhow::Result<()> {
        // Events of connections that never had a summary.
        while let Some(t) = self.order.pop_front() {
            self.release(&t, true);
        }
        if self.not_kept > 0 {
            tracing::warn!(
                "{} event(s) were not kept until their connection's summary (no room)",
                self.not_kept
            );
        }
        self.print(&WatchLine::Counters(c.clone()));
        self.out.flush();
        if let Some(trace) = self.pcap.take() {
            let n = trace.packets;
            let path = trace.path().to_path_buf();
            trace.finish()?;
            tracing::info!("wrote {n} packet header(s) to {}", path.display());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of this test's own in the temporary directory, removed at the end.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str) -> Self {
            Self(std::env::temp_dir().join(format!("mptcp-probe-{name}-{}", std::process::id())))
        }
        fn text(&self) -> String {
            std::fs::read_to_string(&self.0).unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn lines_reach_the_descriptor_at_a_flush_or_a_full_batch() {
        let f = TempFile::new("batched");
        let mut b = Batched::to(Some(File::create(&f.0).unwrap()));
        b.buf.extend_from_slice(b"one\n");
        b.line_done();
        assert_eq!(f.text(), "", "a line alone waits for the flush");
        b.flush();
        assert_eq!(f.text(), "one\n");
        assert!(b.buf.is_empty());
        // Lines that fill a batch go out without a flush, whole.
        let line = [b'x'; 999];
        let mut written = 4;
        while written < 4 + BATCH_BYTES {
            b.buf.extend_from_slice(&line);
            b.buf.push(b'\n');
            written += 1000;
            b.line_done();
        }
        assert_eq!(f.text().len(), written, "a full batch is written at once");
        assert!(b.buf.is_empty());
    }

    #[test]
    fn lines_still_buffered_are_written_when_the_sink_goes() {
        let f = TempFile::new("batched-drop");
        let mut b = Batched::to(Some(File::create(&f.0).unwrap()));
        b.buf.extend_from_slice(b"last\n");
        b.line_done();
        drop(b);
        assert_eq!(f.text(), "last\n");
    }

    #[test]
    fn without_a_descriptor_lines_are_dropped_not_kept() {
        let mut b = Batched::to(None);
        b.buf.extend_from_slice(&[b'x'; BATCH_BYTES]);
        b.line_done();
        assert!(b.buf.is_empty());
    }
}
