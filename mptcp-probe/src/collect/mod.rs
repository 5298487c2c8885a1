//! `mptcp-probe collect`: the server that reports are uploaded to, and that gives each
//! submitter their report back with its token. [`api`] answers HTTP, [`store`] keeps the
//! reports, [`token`] makes and checks the tokens.

pub mod api;
pub mod metrics;
pub mod store;
pub mod token;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use self::{api::Api, metrics::CollectorMetrics, store::Store, token::Secret};

pub struct CollectOptions {
    pub listen: SocketAddr,
    pub db: String,
    /// The secret tokens are derived with; made at first start when missing.
    pub secret_file: PathBuf,
    pub upload_keys: Vec<String>,
    pub public_url: Option<String>,
    pub max_report_bytes: usize,
}

/// Serves until SIGINT or SIGTERM; uploads under way when it comes are finished first.
pub async fn run(o: CollectOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("listening on {} (--listen)", o.listen))?;
    let store = Store::open(&o.db).await?;
    let secret = Secret::load_or_create(&o.secret_file)?;
    let public_url = o.public_url.unwrap_or_else(|| format!("http://{}", o.listen));
    let metrics = CollectorMetrics::new();
    metrics.reports(store.count().await?);
    let api = Arc::new(Api { store: store.clone(), secret, upload_keys: o.upload_keys, public_url, metrics });
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tracing::info!("collect: listening on http://{}; reports in {}", o.listen, store::redacted(&o.db));
    axum::serve(listener, api::router(api, o.max_report_bytes))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        })
        .await?;
    store.close().await;
    tracing::info!("collect: stopped");
    Ok(())
}
