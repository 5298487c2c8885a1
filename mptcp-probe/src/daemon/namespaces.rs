//! The other network namespaces the daemon watches (`namespaces` in its configuration; a host
//! with containers). Each gets a pipeline of its own on a thread that has entered it: the
//! thread joins the namespace (`setns`), takes a mount namespace of its own and mounts sysfs
//! there (sysfs shows the interfaces of the namespace that mounts it, as `ip netns exec` does),
//! then loads and attaches an observer as the daemon does in its own namespace. Its metrics carry
//! the namespace's configured name. A namespace that goes away (its file gone, or another
//! namespace under the same name) has its pipeline stopped, and one that comes back gets a new
//! one; what was counted stays. One that cannot be observed is tried again after 30 s. Starting
//! a namespace's pipeline (an observer load, a few hundred ms) holds the daemon's loop meanwhile.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{bail, Context as _};
use tokio::sync::oneshot;

use super::config::NamespaceConfig;
use crate::{
    export::metrics::{lock_sources, Counted, LiveSource, LiveSources, MetricsSink},
    pipeline::{sockets::shared_book, Pipeline, PipelineOptions},
};

/// How long a namespace's pipeline may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the calling thread live in the namespace `ns` (a network namespace file), with a mount
/// namespace of its own where /sys shows that namespace.
fn enter(ns: &File) -> anyhow::Result<()> {
    // SAFETY: plain syscalls on a valid descriptor and NUL-terminated strings; they change the
    // calling thread only (the thread is ours and dedicated to this namespace).
    unsafe {
        if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            bail!("entering the network namespace: {}", std::io::Error::last_os_error());
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("a mount namespace for the thread: {}", std::io::Error::last_os_error());
        }
        let root = CString::new("/")?;
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            bail!("making / a slave mount: {}", std::io::Error::last_os_error());
        }
        let sys = CString::new("/sys")?;
        let sysfs = CString::new("sysfs")?;
        // Whatever was mounted on /sys stays below; the new sysfs hides it for this thread.
        if libc::mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, std::ptr::null()) != 0 {
            bail!("mounting sysfs for the namespace: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The inode of a namespace file: None when it is not there; an error when it cannot be looked
/// at (e.g. another user's /proc/PID/ns/net).
fn inode_of(path: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// After a namespace could not be observed, the next try waits this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

struct Running {
    inode: u64,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Running {
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

pub struct Namespaces {
    watched: Vec<NamespaceConfig>,
    running: BTreeMap<String, Running>,
    /// Namespaces that could not be observed, and when to try again.
    failed: BTreeMap<String, std::time::Instant>,
    counted: Counted,
    sources: LiveSources,
    opts: std::sync::Arc<PipelineOptions>,
}

impl Namespaces {
    pub fn new(
        watched: Vec<NamespaceConfig>,
        counted: Counted,
        sources: LiveSources,
        opts: PipelineOptions,
    ) -> Self {
        Self {
            watched,
            running: BTreeMap::new(),
            failed: BTreeMap::new(),
            counted,
            sources,
            opts: std::sync::Arc::new(opts),
        }
    }

    /// Starts pipelines for the namespaces that are there (new, or replaced), stops those of
    /// the namespaces that are gone.
    pub fn reconcile(&mut self) {
        for w in &self.watched {
            let now = match inode_of(&w.path) {
                Ok(n) => n,
                Err(e) => {
                    if !self.failed.contains_key(&w.name) {
                        tracing::warn!("namespace {}: cannot look at {}: {e}", w.name, w.path.display());
                    }
                    self.failed.insert(w.name.clone(), std::time::Instant::now() + RETRY_AFTER_FAILURE);
                    None
                }
            };
            if let Some(r) = self.running.get(&w.name) {
                if Some(r.inode) == now {
                    continue;
                }
                tracing::info!("namespace {}: {} went away; its pipeline stops", w.name, w.path.display());
                if let Some(r) = self.running.remove(&w.name) {
                    r.stop();
                }
            }
            let Some(inode) = now else {
                self.counted.namespace(&w.name, false);
                continue;
            };
            if self.failed.get(&w.name).is_some_and(|at| std::time::Instant::now() < *at) {
                continue;
            }
            match start(w, inode, self.counted.clone(), self.sources.clone(), self.opts.clone()) {
                Ok(r) => {
                    self.failed.remove(&w.name);
                    self.counted.namespace(&w.name, true);
                    tracing::info!("namespace {}: observing {} (inode {inode})", w.name, w.path.display());
                    self.running.insert(w.name.clone(), r);
                }
                Err(e) => {
                    self.counted.namespace(&w.name, false);
                    self.failed.insert(w.name.clone(), std::time::Instant::now() + RETRY_AFTER_FAILURE);
                    tracing::warn!(
                        "namespace {}: cannot observe {}: {e:#}; trying again in {} s",
                        w.name,
                        w.path.display(),
                        RETRY_AFTER_FAILURE.as_secs()
                    );
                }
            }
        }
    }

    pub fn stop_all(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.stop();
        }
    }
}

fn start(
    w: &NamespaceConfig,
    inode: u64,
    counted: Counted,
    sources: LiveSources,
    opts: std::sync::Arc<PipelineOptions>,
) -> anyhow::Result<Running> {
    let file = File::open(&w.path).with_context(|| format!("opening {}", w.path.display()))?;
    // The file may have been replaced since it was looked at: go by what was opened.
    let inode = file.metadata().map(|m| m.ino()).unwrap_or(inode);
    let name = w.name.clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new().name(format!("netns-{name}")).spawn(move || {
        let started = (|| -> anyhow::Result<_> {
            enter(&file)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let book = shared_book();
            let sink = MetricsSink { counted, namespace: name.clone(), book: book.clone() };
            // The pipeline's ring buffer registers with the runtime's reactor: start it inside.
            let pipeline = rt.block_on(async { Pipeline::start(&opts, vec![Box::new(sink)]) })?;
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let netstat = PathBuf::from(format!("/proc/self/task/{tid}/net/netstat"));
            lock_sources(&sources)
                .insert(name.clone(), LiveSource::here(pipeline.observer(), netstat, &name, book));
            Ok((rt, pipeline))
        })();
        let (rt, mut pipeline) = match started {
            Ok(p) => p,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("{e:#}")));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        if let Err(e) = rt.block_on(pipeline.run(async {
            let _ = stop_rx.await;
        })) {
            tracing::error!("namespace {name}: {e:#}");
        }
        // Only its own entry: a pipeline started since for the same name keeps its own.
        {
            let mut all = lock_sources(&sources);
            if all.get(&name).is_some_and(|s| std::sync::Arc::ptr_eq(&s.observer, &pipeline.observer())) {
                all.remove(&name);
            }
        }
        if let Err(e) = pipeline.finish() {
            tracing::error!("namespace {name}: {e:#}");
        }
    })?;
    match ready_rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(())) => Ok(Running { inode, stop: stop_tx, thread }),
        Ok(Err(e)) => {
            let _ = thread.join();
            bail!("{e}")
        }
        // The thread, when it gets there, finds the stop signal gone and stops at once.
        Err(_) => bail!("its pipeline did not start within {} s", START_TIMEOUT.as_secs()),
    }
}
