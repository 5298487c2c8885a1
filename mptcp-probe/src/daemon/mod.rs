//! `mptcp-probe daemon`: the observer left running on a host. Every flow the pipeline
//! summarises is counted ([`crate::export::metrics`]) and Prometheus scrapes the counts, with the
//! kernel's own counters read at scrape time, from [`crate::export::exposition`]; periodic
//! checks against configured servers ([`checks`]) add their verdicts.

pub mod checks;
pub mod config;
pub mod namespaces;
pub mod upload;

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::{
    layer::SubscriberExt as _, reload, util::SubscriberInitExt as _, EnvFilter, Registry,
};

use self::{
    checks::Checks,
    config::{Config, LogFormat},
    namespaces::Namespaces,
    upload::Uploader,
};
use crate::{
    export::{
        exposition,
        metrics::{
            lock_sources, CheckCounted, Counted, LiveSource, LiveSources, Metrics, MetricsSink,
            UploadCounted, OWN_NAMESPACE,
        },
    },
    kernel::{EventLevel, ObserverOptions},
    pipeline::{
        sockets::shared_book,
        source::{lock, Interfaces, SourceOptions},
        Pipeline, PipelineOptions,
    },
};

/// Changes the log filter of a running daemon.
pub type LogReload = reload::Handle<EnvFilter, Registry>;

/// Logs to stderr as the configuration says; the handle changes the level later.
pub fn init_logging(config: &config::LogConfig, ansi: bool) -> anyhow::Result<LogReload> {
    let (filter, handle) = reload::Layer::new(config.filter()?);
    let text = (config.format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let json = (config.format == LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init()
        .context("starting the log")?;
    Ok(handle)
}

fn pipeline_options(c: &Config) -> PipelineOptions {
    let interfaces =
        if c.interfaces.is_empty() { Interfaces::AllUp } else { Interfaces::Named(c.interfaces.clone()) };
    PipelineOptions {
        source: SourceOptions {
            interfaces,
            // Summaries only: the kernel reports what went wrong and the end of each flow, and
            // wakes the daemon only when its ring fills.
            observer: ObserverOptions {
                flow_table_size: c.flow_table_size,
                level: EventLevel::Flows,
                kernel_mappings: false,
                batched_wakeups: true,
            },
        },
        idle_timeout: Duration::from_secs(c.idle_timeout_seconds),
    }
}

/// How often the watched namespaces are looked at (gone, back, replaced).
const NAMESPACE_LOOK: Duration = Duration::from_secs(2);

/// Runs until SIGINT or SIGTERM; SIGHUP re-reads `path`.
pub async fn run(path: &Path, config: Config, log: LogReload) -> anyhow::Result<()> {
    // Signals first: a reload or a stop asked for while the rest starts is not fatal.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // The address next: one that is taken is named before anything is loaded.
    let listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .with_context(|| format!("listening for scrapes on {} (metrics.listen)", config.metrics.listen))?;
    let upload_counted = UploadCounted::default();
    // The spool is opened before anything is loaded, so that a spool that cannot be used is
    // named first.
    let uploader = Uploader::new(&config.upload, upload_counted.clone())?;
    let counted = Counted::default();
    let book = shared_book();
    let sink = MetricsSink { counted: counted.clone(), namespace: OWN_NAMESPACE.into(), book: book.clone() };
    let mut pipeline = Pipeline::start(&pipeline_options(&config), vec![Box::new(sink)])?;
    counted.namespace(OWN_NAMESPACE, true);
    let sources = LiveSources::default();
    lock_sources(&sources).insert(
        OWN_NAMESPACE.into(),
        LiveSource::here(pipeline.observer(), "/proc/thread-self/net/netstat".into(), OWN_NAMESPACE, book),
    );
    // The other namespaces: every interface of theirs that is up, the rest as here.
    let mut others_opts = pipeline_options(&config);
    others_opts.source.interfaces = Interfaces::AllUp;
    let mut namespaces =
        Namespaces::new(config.namespaces.clone(), counted.clone(), sources.clone(), others_opts);
    namespaces.reconcile();
    let check_counted = CheckCounted::default();
    let metrics = Arc::new(Metrics::new(&counted, &check_counted, &upload_counted, Some(sources)));
    let server = tokio::spawn(async move { axum::serve(listener, exposition::router(metrics)).await });
    {
        let obs = pipeline.observer();
        let o = lock(&obs);
        let ifaces = o.interface_names();
        tracing::info!(
            "daemon: metrics on http://{}/metrics; watching {} interface(s) [{}]; tracepoints: {}",
            config.metrics.listen,
            ifaces.len(),
            ifaces.values().cloned().collect::<Vec<_>>().join(", "),
            o.tracepoints.join(", ")
        );
    }
    let checks = Checks::start(config.checks.clone(), check_counted, uploader)?;
    let mut running = config;
    let mut look = tokio::time::interval(NAMESPACE_LOOK);
    pipeline
        .run(async {
            loop {
                tokio::select! {
                    _ = sigint.recv() => break,
                    _ = sigterm.recv() => break,
                    _ = sighup.recv() => reload(path, &mut running, &log),
                    _ = look.tick() => namespaces.reconcile(),
                }
            }
        })
        .await?;
    server.abort();
    checks.stop();
    namespaces.stop_all();
    pipeline.finish()?;
    tracing::info!("daemon: stopped, every program detached");
    Ok(())
}

/// The options whose change needs a restart.
fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (running, new);
    [
        ("interfaces", a.interfaces != b.interfaces),
        ("flow_table_size", a.flow_table_size != b.flow_table_size),
        ("idle_timeout_seconds", a.idle_timeout_seconds != b.idle_timeout_seconds),
        ("metrics.listen", a.metrics != b.metrics),
        ("log.format", a.log.format != b.log.format),
        ("namespaces", a.namespaces != b.namespaces),
        ("checks", a.checks != b.checks),
        ("upload", a.upload != b.upload),
    ]
    .into_iter()
    .filter_map(|(option, changed)| changed.then_some(option))
    .collect()
}

/// SIGHUP: a good file's log level applies at once; a bad file changes nothing.
fn reload(path: &Path, running: &mut Config, log: &LogReload) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload: {e:#}; the running configuration stays");
            return;
        }
    };
    if new.log.level != running.log.level {
        match new.log.filter().map(|f| log.reload(f)) {
            Ok(Ok(())) => running.log.level = new.log.level.clone(),
            Ok(Err(e)) => tracing::error!("reload: changing the log level: {e}"),
            Err(e) => tracing::error!("reload: {e:#}"),
        }
    }
    let later = restart_needed(running, &new);
    if later.is_empty() {
        tracing::info!("reload: configuration {} applied", path.display());
    } else {
        tracing::warn!(
            "reload: configuration {} read; {} take effect at the next start",
            path.display(),
            later.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_reload_cannot_change_is_named() {
        let a = Config::default();
        let mut b = a.clone();
        b.log.level = "debug".into();
        assert!(restart_needed(&a, &b).is_empty());
        b.flow_table_size = 128;
        b.interfaces = vec!["eth0".into()];
        b.log.format = LogFormat::Json;
        assert_eq!(restart_needed(&a, &b), ["interfaces", "flow_table_size", "log.format"]);
    }
}
