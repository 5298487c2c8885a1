//! `mptcp-probe collect`: the server that reports are uploaded to, and that gives each
//! submitter their report back with its token. [`api`] answers HTTP, [`pages`] renders the
//! report and aggregate pages (with [`chart`]'s SVG), [`store`] keeps the reports, [`token`]
//! makes and checks the tokens, [`client`] decides what is kept of a client's address.

pub mod api;
pub mod chart;
pub mod client;
pub mod metrics;
pub mod pages;
pub mod store;
pub mod token;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use self::{
    api::{Api, Limits},
    client::PrefixPolicy,
    metrics::CollectorMetrics,
    store::Store,
    token::Secret,
};

pub struct CollectOptions {
    pub listen: SocketAddr,
    pub db: String,
    /// The secret tokens are derived with; made at first start when missing.
    pub secret_file: PathBuf,
    pub upload_keys: Vec<String>,
    pub public_url: Option<String>,
    pub limits: Limits,
    pub prefixes: PrefixPolicy,
    /// Reports older than this are removed; none: kept for good.
    pub retention: Option<Duration>,
}

/// How often old reports are looked for: a tenth of the retention, between 1 s and an hour.
fn sweep_every(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Removes what is past its retention, and forgets quiet sources, until the collector stops.
async fn housekeeping(api: Arc<Api>, retention: Option<Duration>) {
    let every = retention.map_or(Duration::from_secs(60), |r| sweep_every(r).min(Duration::from_secs(60)));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = None::<tokio::time::Instant>;
    loop {
        tick.tick().await;
        api.forget_quiet_sources();
        let Some(r) = retention else { continue };
        if last_sweep.is_some_and(|t| t.elapsed() < sweep_every(r)) {
            continue;
        }
        last_sweep = Some(tokio::time::Instant::now());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let before = now.saturating_sub(r).as_secs() as i64;
        match api.store.remove_older_than(before).await {
            Ok(0) => {}
            Ok(n) => {
                api.metrics.removed(n);
                api.forget_aggregate().await;
                tracing::info!("collect: removed {n} reports older than {}", humantime::format_duration(r));
            }
            Err(e) => tracing::warn!("collect: {e:#}"),
        }
    }
}

/// Serves until SIGINT or SIGTERM; uploads under way when it comes are finished first.
pub async fn run(o: CollectOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("listening on {} (--listen)", o.listen))?;
    let store = Store::open(&o.db).await?;
    let secret = Secret::load_or_create(&o.secret_file)?;
    let public_url = o.public_url.unwrap_or_else(|| format!("http://{}", o.listen));
    let api = Api::new(
        store.clone(),
        secret,
        o.upload_keys,
        public_url,
        CollectorMetrics::new(),
        o.limits,
        o.prefixes,
    );
    let housekeeping = tokio::spawn(housekeeping(api.clone(), o.retention));
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tracing::info!("collect: listening on http://{}; reports in {}", o.listen, store::redacted(&o.db));
    let app = api::router(api).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        })
        .await?;
    housekeeping.abort();
    store.close().await;
    tracing::info!("collect: stopped");
    Ok(())
}
