//! The pipeline as a background service for `check` and `serve`: attached to every interface that
//! is up (and ones that come up later), recording each connection, and answering "what did the
//! wire show for this connection" by its addresses while it runs.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use mptcp_probe_common::event::PacketEvent;
use mptcp_probe_model::{watch::FallbackSource, FlowSummary, HandshakeView, SegmentStats, WireSummary};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{
    recorder::{handshake_of, Recorder, Tuple},
    source::{lock, Interfaces, SourceOptions},
    summary::{summarize, FlowNotes},
    Pipeline, PipelineOptions,
};
use crate::{kernel::ObserverOptions, protocol::HandshakeSource};

/// Connections quiet this long are summarised and forgotten by the kernel's table.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub struct ObserverService {
    obs: Arc<Mutex<crate::kernel::Observer>>,
    recorder: Recorder,
    netns: u32,
    fallback_source: FallbackSource,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: JoinHandle<()>,
}

impl ObserverService {
    /// Loads the observer, attaches it to every interface that is up, and runs the pipeline.
    pub async fn start() -> anyhow::Result<Arc<Self>> {
        let recorder = Recorder::default();
        let opts = PipelineOptions {
            source: SourceOptions { interfaces: Interfaces::AllUp, observer: ObserverOptions::default() },
            idle_timeout: IDLE_TIMEOUT,
        };
        let mut pipeline = Pipeline::start(&opts, vec![Box::new(recorder.clone())])?;
        let obs = pipeline.observer();
        let netns = pipeline.context().netns;
        let fallback_source = lock(&obs).fallback_source;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            if let Err(e) = pipeline.run(stopped).await {
                tracing::error!("observer: {e:#}");
            }
            if let Err(e) = pipeline.finish() {
                tracing::error!("observer: {e:#}");
            }
        });
        Ok(Arc::new(Self { obs, recorder, netns, fallback_source, stop: Mutex::new(Some(tx)), task }))
    }

    /// The packet events recorded for a connection.
    pub fn packets(&self, local: SocketAddr, remote: SocketAddr) -> Vec<PacketEvent> {
        self.recorder.packets(local, remote)
    }

    /// The connection's flow summary: the final one once it ended, else from the kernel's live
    /// flow state.
    pub fn summary(&self, local: SocketAddr, remote: SocketAddr) -> Option<FlowSummary> {
        let t = Tuple::new(local, remote);
        // Twice: the pipeline may take the kernel's state between the two looks.
        for _ in 0..2 {
            let key = {
                let rec = self.recorder.lock();
                let c = rec.get(&t)?;
                if let Some(s) = &c.summary {
                    return Some(s.clone());
                }
                c.key
            };
            let mut obs = lock(&self.obs);
            if let Some(st) = obs.flow_state(&key) {
                let iface = obs.interface_name(key.ifindex);
                return Some(summarize(&key, &st, &FlowNotes::default(), &iface, self.netns));
            }
        }
        None
    }

    pub fn interface_name(&self, ifindex: u32) -> String {
        lock(&self.obs).interface_name(ifindex)
    }

    pub fn fallback_source(&self) -> FallbackSource {
        self.fallback_source
    }

    /// Stops the pipeline and detaches every program.
    pub fn stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
        lock(&self.obs).detach_all();
    }
}

impl Drop for ObserverService {
    fn drop(&mut self) {
        self.stop();
        self.task.abort();
    }
}

impl HandshakeSource for ObserverService {
    fn handshake(&self, local: SocketAddr, peer: SocketAddr) -> Option<HandshakeView> {
        handshake_of(&self.packets(local, peer))
    }

    fn wire(&self, local: SocketAddr, peer: SocketAddr) -> Option<WireSummary> {
        let s = self.summary(local, peer)?;
        Some(WireSummary {
            received_segments: SegmentStats {
                count: s.data_segments.rx as u64,
                bytes: s.payload_bytes.rx,
                max: s.max_segment.rx,
            },
            received_without_dss: s.data_without_dss.rx,
            fallback_evidence: s.fallback_evidence,
        })
    }
}
