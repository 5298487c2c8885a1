//! More concurrent flows than the flow table holds: evictions, whether watch survives, and its
//! memory.

use std::time::Duration;

use mptcp_probe_common::counters;
use mptcp_probe_tests::lab::Lab;
use serde::Serialize;

use super::{
    host::{self, WorkDir},
    observer::{self, Obs, Stopped},
    progress,
    traffic::{self, ChurnShape},
    Bins, Config,
};

/// Batches of connections, each holding more flows open at once than the table has entries.
const BATCHES: u32 = 2;
/// How long each connection of a batch stays open.
const HOLD_MS: u32 = 300;
/// Time for a batch's flows to end before watch's memory is read.
const SETTLE: Duration = Duration::from_millis(1500);

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FlowTableOverflow {
    pub flow_table_size: u32,
    pub concurrent_flows: u32,
    pub batches: u32,
    pub connections: u64,
    pub flows_created: Option<u64>,
    pub flow_table_evictions: Option<u64>,
    pub flows_evicted_unsummarised: Option<u64>,
    pub flow_insert_failed: Option<u64>,
    pub flow_summaries: u64,
    pub ringbuf_dropped_events: Option<u64>,
    pub alive_until_stopped: bool,
    pub exit_code: Option<i32>,
    pub rss_kib_at_start: u64,
    pub rss_kib_after_batch: Vec<u64>,
    pub peak_rss_kib: u64,
}

impl FlowTableOverflow {
    fn of(
        cfg: &Config,
        batch: u32,
        connections: u64,
        alive: bool,
        rss: (u64, Vec<u64>),
        s: &Stopped,
    ) -> Self {
        let watch = s.watch.counters.as_ref();
        Self {
            flow_table_size: cfg.lru_table,
            concurrent_flows: batch,
            batches: BATCHES,
            connections,
            flows_created: s.kernel_counter(counters::FLOWS_CREATED),
            flow_table_evictions: watch.map(|c| c.flow_table_evictions),
            flows_evicted_unsummarised: watch.map(|c| c.flows_evicted_unsummarised),
            flow_insert_failed: s.kernel_counter(counters::FLOW_INSERT_FAILED),
            flow_summaries: s.watch.flows,
            ringbuf_dropped_events: s.ringbuf_dropped(),
            alive_until_stopped: alive,
            exit_code: s.exit_code,
            rss_kib_at_start: rss.0,
            rss_kib_after_batch: rss.1,
            peak_rss_kib: s.peak_rss_kib,
        }
    }
}

pub fn run(lab: &Lab, dir: &WorkDir, bins: &Bins, cfg: &Config) -> anyhow::Result<FlowTableOverflow> {
    progress(format!("{} concurrent flows through a {}-entry flow table", cfg.lru_flows, cfg.lru_table));
    let table = cfg.lru_table.to_string();
    let mut r = observer::start(Obs::Probe, &lab.c, &dir.path, bins, &["--flow-table-size", &table], false)?
        .expect("an observer");
    let rss_start = host::status_kib(r.pid, "VmRSS");
    let batch = cfg.lru_flows.max(1);
    let shape = ChurnShape { count: batch, concurrent: Some(batch), hold_ms: Some(HOLD_MS) };
    let mut rss_after = Vec::new();
    let mut res = Ok(());
    let mut connections = 0u64;
    for _ in 0..BATCHES {
        match traffic::churn(lab, bins, &shape) {
            Ok(c) => connections += c.connections.unwrap_or(0),
            Err(e) => {
                res = Err(e);
                break;
            }
        }
        std::thread::sleep(SETTLE);
        rss_after.push(host::status_kib(r.pid, "VmRSS"));
    }
    let alive = r.is_alive();
    let stopped = observer::stop(r);
    res?;
    Ok(FlowTableOverflow::of(cfg, batch, connections, alive, (rss_start, rss_after), &stopped))
}
