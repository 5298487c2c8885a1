//! `mptcp-probe watch`: live events and per-flow summaries from the kernel observer.

use std::time::Duration;

use mptcp_probe::{
    kernel::{EventLevel, ObserverOptions},
    output::{
        pcap::PcapTrace,
        watch::{Output, WatchSink},
    },
    pipeline::{
        source::{Interfaces, SourceOptions},
        Pipeline, PipelineOptions,
    },
};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Interface to observe (repeatable). Default: every interface that is up, including ones that
    /// come up later.
    #[arg(long = "iface", value_name = "IF")]
    pub iface: Vec<String>,
    /// One JSON object per line (events and flow summaries) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print every event as it comes. Default: a connection's events are printed (and its
    /// packets written to the trace) only when something went wrong on it; a clean one is one
    /// flow summary (and its handshake in the trace).
    #[arg(long, conflicts_with = "flows_only")]
    pub events: bool,
    /// Print only flow summaries, never events; without --pcap the kernel then reports only what
    /// went wrong and the end of each flow (the lightest way to watch).
    #[arg(long)]
    pub flows_only: bool,
    /// Also the kernel's own view of each DSS mapping (mptcp tracepoints; they fire for every
    /// mapping of every namespace on the host).
    #[arg(long)]
    pub kernel_mappings: bool,
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

pub async fn run(a: WatchArgs) -> anyhow::Result<()> {
    // Before anything is loaded: a trace that cannot be written is a usage problem to report now.
    let pcap = a.pcap.as_deref().map(PcapTrace::create).transpose()?;
    let interfaces = if a.iface.is_empty() { Interfaces::AllUp } else { Interfaces::Named(a.iface) };
    // Summaries alone need no per-packet events; a trace needs the packets' headers.
    let level = if a.flows_only && pcap.is_none() { EventLevel::Flows } else { EventLevel::All };
    // What watch writes can come a quarter of a second late: the kernel need not wake it for
    // every event.
    let observer = ObserverOptions {
        flow_table_size: a.flow_table_size,
        level,
        kernel_mappings: a.kernel_mappings,
        batched_wakeups: true,
    };
    let opts = PipelineOptions {
        source: SourceOptions { interfaces, observer },
        idle_timeout: Duration::from_secs(a.idle_timeout),
    };
    let output = if a.events {
        Output::Events
    } else if a.flows_only {
        Output::FlowsOnly
    } else {
        Output::Troubled
    };
    let mut pipeline = Pipeline::start(&opts, vec![Box::new(WatchSink::new(a.json, output, pcap))])?;
    let obs = pipeline.observer();
    {
        let o = mptcp_probe::pipeline::source::lock(&obs);
        let ifaces = o.interface_names();
        tracing::info!(
            "watching {} interface(s) [{}]; tracepoints: {}",
            ifaces.len(),
            ifaces.values().cloned().collect::<Vec<_>>().join(", "),
            o.tracepoints.join(", ")
        );
    }
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    pipeline
        .run(async {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        })
        .await?;
    pipeline.finish()?;
    Ok(())
}
