//! The one observation pipeline: a [`source::Source`] (the kernel programs attached, the ring
//! buffer drained into events), a [`correlator::Correlator`] (the flows, what the kernel's events
//! say about them, when each is due for its summary) and [`sink::Sink`]s that consume events and
//! summaries. `watch` prints, `check` and `serve` record per connection; every output plugs in
//! here as a sink.

pub mod correlator;
pub mod record;
pub mod recorder;
pub mod service;
pub mod sink;
pub mod sockets;
pub mod source;
pub mod summary;

/// The pipeline's maps of flows, endpoints and sockets: foldhash, seeded at random for each map
/// (their keys come from packets anyone can send; a fixed hash would let a sender pick flows that
/// collide), several times faster than the standard SipHash on these keys.
pub type FlowMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mptcp_probe_model::watch::{Counters, FallbackSource};

use self::{
    correlator::{Correlator, Due, Summarised},
    sink::{Context, Sink},
    source::{Source, SourceOptions},
};
use crate::{
    host::{clock, mib},
    kernel::{
        decode::{DecodeError, Event},
        iface, EventLevel, Observer,
    },
};

pub struct PipelineOptions {
    pub source: SourceOptions,
    /// A flow quiet this long is summarised (as idle) and forgotten.
    pub idle_timeout: Duration,
}

pub struct Pipeline {
    source: Source,
    correlator: Correlator,
    sinks: Vec<Box<dyn Sink>>,
    ctx: Context,
    idle_timeout: Duration,
    decode_errors: u64,
    /// The namespace's MPTcpExt counters when the pipeline started.
    mib_before: BTreeMap<String, u64>,
    batch: Vec<Result<Event, DecodeError>>,
}

impl Pipeline {
    /// Starts the source (checks, loads, attaches) with these sinks.
    pub fn start(opts: &PipelineOptions, sinks: Vec<Box<dyn Sink>>) -> anyhow::Result<Self> {
        let mib_before = mib::read();
        let source = Source::start(&opts.source)?;
        let netns = iface::current_netns();
        let ctx = Context { ifaces: source.observer().interface_names(), netns, mib_names: mib::names() };
        Ok(Self {
            correlator: Correlator::new(
                netns,
                opts.idle_timeout,
                opts.source.observer.level == EventLevel::Flows,
            ),
            source,
            sinks,
            ctx,
            idle_timeout: opts.idle_timeout,
            decode_errors: 0,
            mib_before,
            batch: Vec::new(),
        })
    }

    /// The observer, shared with those that query flows while the pipeline runs.
    pub fn observer(&self) -> Arc<Mutex<Observer>> {
        self.source.shared()
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Runs until `stop` completes: drains the ring buffer as events arrive, summarises flows as
    /// they end or go quiet, picks up interfaces.
    pub async fn run(&mut self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut scan = tokio::time::interval(Duration::from_secs(1));
        let sweep_every = (self.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let mut sweep = tokio::time::interval(sweep_every);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                r = self.source.next_batch(&mut self.batch) => {
                    r.map_err(|e| anyhow::anyhow!("reading the ring buffer: {e}"))?;
                    self.dispatch();
                }
                _ = tick.tick() => {
                    // Events written without waking the reader (batched wake-ups) wait for this.
                    self.source.poll(&mut self.batch);
                    self.dispatch();
                    for key in self.correlator.ended(Instant::now()) {
                        let s = self.correlator.summarise(&mut self.source.observer(), &key, Due::Ended);
                        self.emit(s);
                    }
                    self.flush();
                }
                _ = scan.tick() => {
                    self.source.rescan();
                    self.ctx.ifaces = self.source.observer().interface_names();
                }
                _ = sweep.tick() => {
                    let done = self.correlator.sweep(&mut self.source.observer(), clock::monotonic_ns());
                    for s in done {
                        self.emit(s);
                    }
                    self.flush();
                }
            }
        }
        Ok(())
    }

    /// Hands the decoded batch to the correlator and the sinks.
    fn dispatch(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        for item in &batch {
            let ev = match item {
                Ok(ev) => ev,
                Err(e) => {
                    self.decode_errors += 1;
                    if self.decode_errors == 1 {
                        tracing::warn!("undecodable ring-buffer record (further ones are only counted): {e}");
                    }
                    continue;
                }
            };
            let names = &self.ctx.mib_names;
            if self.correlator.observe(ev, |i| record::mib_name(names, i)) {
                for s in &mut self.sinks {
                    s.event(ev, &self.ctx);
                }
            }
        }
        self.batch = batch;
        self.batch.clear();
        self.flush();
    }

    fn emit(&mut self, s: Summarised) {
        for sink in &mut self.sinks {
            match &s {
                Summarised::Flow(f) => sink.flow(f),
                Summarised::Evicted(k) => sink.evicted(k),
                Summarised::Reborn(k, f) => {
                    sink.evicted(k);
                    sink.flow(f);
                }
            }
        }
    }

    fn flush(&mut self) {
        for s in &mut self.sinks {
            s.flush();
        }
    }

    /// Stops: detaches, takes what is still queued, summarises every flow left (as live), and
    /// gives the sinks the final counters.
    pub fn finish(mut self) -> anyhow::Result<Counters> {
        let mut batch = std::mem::take(&mut self.batch);
        self.source.stop(&mut batch);
        self.batch = batch;
        self.dispatch();
        let keys = self.correlator.remaining(&mut self.source.observer());
        for k in keys {
            let s = self.correlator.summarise(&mut self.source.observer(), &k, Due::Stopping);
            self.emit(s);
        }
        let counters = self.counters();
        for s in &mut self.sinks {
            s.finish(&counters)?;
        }
        Ok(counters)
    }

    /// The kernel programs' counters, what the pipeline could not place, and the namespace's
    /// MPTCP counters as they moved since the start.
    pub fn counters(&mut self) -> Counters {
        let mut obs = self.source.observer();
        let kernel = obs.counters();
        Counters {
            kernel: kernel.values.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            flow_table_evictions: obs.evictions(),
            decode_errors: self.decode_errors,
            flows_evicted_unsummarised: self.correlator.stats.evicted_unsummarised,
            fallback_source: obs.fallback_source,
            mib_delta: mib::delta(&self.mib_before, &mib::read()),
        }
    }
}

/// Which observer a run has, in the report's words.
pub fn observer_kind(source: Option<FallbackSource>) -> mptcp_probe_model::ObserverKind {
    use mptcp_probe_model::ObserverKind;
    match source {
        None => ObserverKind::None,
        Some(FallbackSource::Fentry) => ObserverKind::TcTracepointsFentry,
        Some(FallbackSource::WireAndCounters) => ObserverKind::TcTracepoints,
    }
}
