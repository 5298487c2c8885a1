//! `mptcp-probe watch`: live events and per-flow summaries from the kernel observer.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    net::IpAddr,
    time::{Duration, Instant},
};

use mptcp_probe_common::flow::FlowKey;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    flows::{self, FlowTable},
    mib,
    observer::{
        decode::{decode, Event},
        iface, Observer, ObserverOptions,
    },
    pcap::PcapTrace,
    preflight,
    render::{self, Ctx},
};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Interface to observe (repeatable). Default: every interface that is up, including ones that
    /// come up later.
    #[arg(long = "iface", value_name = "IF")]
    pub iface: Vec<String>,
    /// One JSON object per line (events and flow summaries) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print only flow summaries, not every event.
    #[arg(long)]
    pub flows_only: bool,
    /// Summarise a flow that has been quiet this long (seconds), even if it has not ended.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Also write the headers (never payload) of the reported packets to this pcapng file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
    /// Flow-table size in the kernel (LRU; older flows are evicted and counted beyond it).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    pub flow_table_size: u32,
}

struct Watch {
    obs: Observer,
    table: FlowTable,
    json: bool,
    flows_only: bool,
    netns: u32,
    ifaces: BTreeMap<u32, String>,
    mib_names: Vec<String>,
    /// MPTCP socket address → (local, remote), from socket-state events, to place fentry reasons.
    msk: HashMap<u64, (Endpoint, Endpoint)>,
    decode_errors: u64,
    /// Flows the kernel's LRU table dropped before they could be summarised.
    evicted_unsummarised: u64,
    idle_timeout_ns: u64,
    pcap: Option<PcapTrace>,
    out: std::io::Stdout,
}

const MAX_MSK_ENTRIES: usize = 65536;

/// An address and port as the kernel's socket events give them.
type Endpoint = (IpAddr, u16);

impl Watch {
    fn print(&mut self, line: String) {
        let mut o = self.out.lock();
        let _ = writeln!(o, "{line}");
    }

    fn ctx(&self) -> (BTreeMap<u32, String>, u32, Vec<String>) {
        (self.ifaces.clone(), self.netns, self.mib_names.clone())
    }

    fn handle(&mut self, bytes: &[u8]) {
        let ev = match decode(bytes) {
            Ok(ev) => ev,
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors == 1 {
                    tracing::warn!("undecodable ring-buffer record (further ones are only counted): {e}");
                }
                return;
            }
        };
        // Kernel events of other network namespaces (containers, the other end of a lab) are not
        // ours; 0 means the source could not tell.
        let ns = match &ev {
            Event::SockState(s) => s.header.netns,
            Event::Reset(r) => r.header.netns,
            Event::Mapping(m) => m.header.netns,
            Event::Packet(_) | Event::Fallback(_) => 0,
        };
        if ns != 0 && ns != self.netns {
            return;
        }
        // Only events that belong to flows on the observed interfaces are shown.
        let relevant = match &ev {
            Event::Packet(p) => {
                self.table.observe(&ev);
                if let Some(trace) = self.pcap.as_mut() {
                    let iface = self.ifaces.get(&p.flow.ifindex).cloned().unwrap_or_default();
                    if let Err(e) = trace.write(p, &iface) {
                        tracing::error!("{e:#}; no more packets go to the trace");
                        self.pcap = None;
                    }
                }
                true
            }
            Event::SockState(s) => {
                let ver = if s.family == 10 { 6 } else { 4 };
                let local = (flows::addr(ver, &s.saddr), s.sport);
                let remote = (flows::addr(ver, &s.daddr), s.dport);
                if s.protocol == 262 {
                    if s.newstate == 7 {
                        self.msk.remove(&s.skaddr);
                    } else if self.msk.len() < MAX_MSK_ENTRIES {
                        self.msk.insert(s.skaddr, (local, remote));
                    }
                }
                let text = format!(
                    "{} {} -> {}",
                    if s.protocol == 262 { "mptcp" } else { "tcp" },
                    render::tcp_state(s.oldstate),
                    render::tcp_state(s.newstate)
                );
                let mut hit = false;
                let mptcp = s.protocol == 262;
                self.table.note_socket(local, remote, |n| {
                    n.socket_states.push(text.clone());
                    n.mptcp_socket |= mptcp;
                    hit = true;
                });
                hit
            }
            Event::Reset(r) => {
                let ver = if r.family == 10 { 6 } else { 4 };
                let local = (flows::addr(ver, &r.saddr), r.sport);
                let remote = (flows::addr(ver, &r.daddr), r.dport);
                let text = match (r.dir, r.reason) {
                    (0, u32::MAX) => "reset sent".to_string(),
                    (0, reason) => format!("reset sent (sk_rst_reason {reason})"),
                    _ => "reset received".to_string(),
                };
                let mut hit = false;
                self.table.note_socket(local, remote, |n| {
                    n.resets.push(text.clone());
                    hit = true;
                });
                // Resets of the peer's socket come with the reversed tuple.
                hit
            }
            Event::Mapping(_) => true,
            Event::Fallback(f) => {
                let reason = render::mib_name(&self.mib_names, f.mib);
                if let Some((local, remote)) = self.msk.get(&f.msk).copied() {
                    self.table.note_socket(local, remote, |n| n.fallback_reason = Some(reason.clone()));
                }
                true
            }
        };
        if !relevant || self.flows_only {
            return;
        }
        let (ifaces, netns, mib_names) = self.ctx();
        let c = Ctx { ifaces: &ifaces, netns, mib_names: &mib_names };
        let line =
            if self.json { render::event_json(&ev, &c).to_string() } else { render::event_line(&ev, &c) };
        self.print(line);
    }

    fn summarize(&mut self, key: &FlowKey, remove: bool) {
        let notes = self.table.take(key);
        let st = if remove { self.obs.take_flow_state(key) } else { self.obs.flow_state(key) };
        let Some(st) = st else {
            // The kernel table evicted it before its end: nothing left to summarise.
            self.evicted_unsummarised += 1;
            return;
        };
        let iface = self.ifaces.get(&key.ifindex).cloned().unwrap_or_else(|| key.ifindex.to_string());
        let s = flows::summarize(key, &st, &notes, &iface, self.netns);
        let line =
            if self.json { serde_json::to_string(&s).unwrap_or_default() } else { render::flow_line(&s) };
        self.print(line);
    }

    /// Summarises flows that went quiet; forgets flows the kernel table evicted (counted).
    fn sweep(&mut self) {
        let now = crate::clock::monotonic_ns();
        let keys: Vec<FlowKey> = self.table.notes.keys().copied().collect();
        for k in keys {
            match self.obs.flow_state(&k) {
                None => {
                    self.table.take(&k);
                    self.evicted_unsummarised += 1;
                }
                Some(st) if now.saturating_sub(st.last_ns) >= self.idle_timeout_ns => {
                    if let Some(n) = self.table.notes.get_mut(&k) {
                        n.idle = true;
                    }
                    self.summarize(&k, true);
                }
                Some(_) => {}
            }
        }
    }

    fn rescan(&mut self, explicit: bool) {
        let Ok(all) = iface::list() else { return };
        self.obs.forget_missing(&all);
        if !explicit {
            for i in all.iter().filter(|i| i.up) {
                if let Err(e) = self.obs.attach(i) {
                    tracing::warn!("{e:#}");
                }
            }
        }
        self.ifaces = self.obs.interface_names();
    }
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    preflight::check_all()?;
    // Before anything is loaded: a trace that cannot be written is a usage problem to report now.
    let pcap = args.pcap.as_deref().map(PcapTrace::create).transpose()?;
    let netns = iface::current_netns();
    let explicit = !args.iface.is_empty();
    let initial = if explicit {
        iface::named(&args.iface)?
    } else {
        iface::list()?.into_iter().filter(|i| i.up).collect()
    };
    let mib_before = mib::read();
    let mut obs = Observer::load(&ObserverOptions { flow_table_size: args.flow_table_size })?;
    for i in &initial {
        if explicit {
            obs.attach(i)?;
        } else if let Err(e) = obs.attach(i) {
            tracing::warn!("{e:#}");
        }
    }
    let ring = obs.take_ring()?;
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until it is dropped, so the
    // fd stays open for as long as it is registered.
    let mut ring =
        unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("polling the ring buffer: {}", e))?;
    let ifaces = obs.interface_names();
    tracing::info!(
        "watching {} interface(s) [{}]; tracepoints: {}",
        ifaces.len(),
        ifaces.values().cloned().collect::<Vec<_>>().join(", "),
        obs.tracepoints.join(", ")
    );
    let mut w = Watch {
        obs,
        table: FlowTable::default(),
        json: args.json,
        flows_only: args.flows_only,
        netns,
        ifaces,
        mib_names: mib::names(),
        msk: HashMap::new(),
        decode_errors: 0,
        evicted_unsummarised: 0,
        idle_timeout_ns: args.idle_timeout.saturating_mul(1_000_000_000),
        pcap,
        out: std::io::stdout(),
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut scan = tokio::time::interval(Duration::from_secs(1));
    let mut sweep = tokio::time::interval(Duration::from_secs((args.idle_timeout / 2).clamp(1, 10)));
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    let bytes = item.to_vec();
                    drop(item);
                    w.handle(&bytes);
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                for key in w.table.due(Instant::now()) {
                    w.summarize(&key, true);
                }
            }
            _ = scan.tick() => w.rescan(explicit),
            _ = sweep.tick() => w.sweep(),
        }
    }
    // Detach first so nothing new arrives, then drain what is already queued.
    w.obs.detach_all();
    {
        let rb = ring.get_mut();
        while let Some(item) = rb.next() {
            let bytes = item.to_vec();
            drop(item);
            w.handle(&bytes);
        }
    }
    let mut keys: Vec<FlowKey> = w.table.notes.keys().copied().collect();
    for k in w.obs.flow_keys() {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for k in keys {
        w.summarize(&k, true);
    }
    let counters = w.obs.counters();
    let evictions = w.obs.evictions();
    // The kernel's own MPTCP counters of this namespace, as they moved while we watched.
    let mib_delta = mib::delta(&mib_before, &mib::read());
    let line = if w.json {
        serde_json::json!({
            "type": "counters",
            "kernel": counters.values,
            "flow_table_evictions": evictions,
            "decode_errors": w.decode_errors,
            "flows_evicted_unsummarised": w.evicted_unsummarised,
            "fallback_source": format!("{:?}", w.obs.fallback_source),
            "mib_delta": mib_delta,
        })
        .to_string()
    } else {
        format!(
            "counters: packets inspected {}, events {}, ring-buffer drops {}, flow-table evictions {}, \
             malformed options {}, decode errors {}",
            counters.get("packets_inspected"),
            counters.get("events_emitted"),
            counters.get("ringbuf_dropped_events"),
            evictions,
            counters.get("malformed_options"),
            w.decode_errors
        ) + &if mib_delta.is_empty() {
            String::new()
        } else {
            let moved: Vec<String> = mib_delta.iter().map(|(k, v)| format!("{k} +{v}")).collect();
            format!("\nkernel MPTCP counters (this namespace, while watching): {}", moved.join(", "))
        }
    };
    w.print(line);
    let _ = w.out.flush();
    if let Some(trace) = w.pcap.take() {
        let n = trace.packets;
        trace.finish()?;
        if let Some(path) = &args.pcap {
            tracing::info!("wrote {n} packet header(s) to {}", path.display());
        }
    }
    Ok(())
}
