//! The pipeline's source: the loaded observer attached to the interfaces it should watch (late
//! ones picked up by a rescan), and its ring buffer drained into typed events.

use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::kernel::{
    decode::{decode, DecodeError, Event},
    iface, Observer, ObserverOptions,
};

/// Which interfaces to observe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interfaces {
    /// These, and no others; a name that does not exist is an error at start.
    Named(Vec<String>),
    /// Every interface that is up, including ones that come up later.
    AllUp,
}

pub struct SourceOptions {
    pub interfaces: Interfaces,
    pub observer: ObserverOptions,
}

pub struct Source {
    /// Shared with whoever answers questions about flows while the pipeline runs.
    obs: Arc<Mutex<Observer>>,
    ring: AsyncFd<RingBuf<MapData>>,
    interfaces: Interfaces,
}

impl Source {
    /// Checks the host, loads the programs and attaches them to the initial interfaces.
    pub fn start(opts: &SourceOptions) -> anyhow::Result<Self> {
        crate::host::preflight::check_all()?;
        let initial = match &opts.interfaces {
            Interfaces::Named(names) => iface::named(names)?,
            Interfaces::AllUp => iface::list()?.into_iter().filter(|i| i.up).collect(),
        };
        let mut obs = Observer::load(&opts.observer)?;
        for i in &initial {
            match (&opts.interfaces, obs.attach(i)) {
                (_, Ok(())) => {}
                (Interfaces::Named(_), Err(e)) => return Err(e),
                (Interfaces::AllUp, Err(e)) => tracing::warn!("{e:#}"),
            }
        }
        let ring = obs.take_ring()?;
        // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until it is dropped,
        // so the fd stays open for as long as it is registered.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
        Ok(Self { obs: Arc::new(Mutex::new(obs)), ring, interfaces: opts.interfaces.clone() })
    }

    pub fn observer(&self) -> MutexGuard<'_, Observer> {
        lock(&self.obs)
    }

    /// The observer, for those that query it while the pipeline runs.
    pub fn shared(&self) -> Arc<Mutex<Observer>> {
        self.obs.clone()
    }

    /// Forgets interfaces that went away; attaches to new ones when watching every interface.
    pub fn rescan(&mut self) {
        let Ok(all) = iface::list() else { return };
        let mut obs = lock(&self.obs);
        obs.forget_missing(&all);
        if self.interfaces == Interfaces::AllUp {
            for i in all.iter().filter(|i| i.up) {
                if let Err(e) = obs.attach(i) {
                    tracing::debug!("{e:#}");
                }
            }
        }
    }

    /// Waits until the ring buffer has records, then decodes all that are there.
    pub async fn next_batch(&mut self, out: &mut Vec<Result<Event, DecodeError>>) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        drain(guard.get_inner_mut(), out);
        guard.clear_ready();
        Ok(())
    }

    /// Decodes what the ring buffer holds now, without waiting.
    pub fn poll(&mut self, out: &mut Vec<Result<Event, DecodeError>>) {
        drain(self.ring.get_mut(), out);
    }

    /// Detaches the TC programs (nothing new arrives), then decodes what is still queued.
    pub fn stop(&mut self, out: &mut Vec<Result<Event, DecodeError>>) {
        lock(&self.obs).detach_all();
        drain(self.ring.get_mut(), out);
    }
}

fn drain(rb: &mut RingBuf<MapData>, out: &mut Vec<Result<Event, DecodeError>>) {
    while let Some(item) = rb.next() {
        out.push(decode(&item));
    }
}

/// The observer's lock; a panic elsewhere does not make it unusable.
pub fn lock(obs: &Mutex<Observer>) -> MutexGuard<'_, Observer> {
    obs.lock().unwrap_or_else(|p| p.into_inner())
}
