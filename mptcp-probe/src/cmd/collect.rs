//! `mptcp-probe collect`.

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use mptcp_probe::collect::{self, api::Limits, client::PrefixPolicy, CollectOptions};

#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where reports are kept: sqlite://PATH (created when missing).
    #[arg(long)]
    pub db: String,
    /// The secret report tokens are derived with (32 bytes; made at first start when missing).
    /// Default with SQLite: the database's path with `.secret` appended; with PostgreSQL it must
    /// be given (the same file for every collector of one database).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Accept uploads only with this key (`Authorization: Bearer KEY`; repeatable).
    #[arg(long = "upload-key", value_name = "KEY")]
    pub upload_keys: Vec<String>,
    /// The collector's address as users reach it, for the URLs it answers uploads with.
    /// Default: http://LISTEN.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The largest report accepted, bytes (413 beyond).
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024))]
    pub max_report_bytes: u64,
    /// The largest trace accepted, bytes (413 beyond).
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_trace_bytes: u64,
    /// How long a request may take, e.g. 30s (408 past it).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Uploads a minute from one source (an IPv4 address, an IPv6 /64), reports and traces
    /// together (429 beyond); 0: no limit.
    #[arg(long, default_value_t = 60)]
    pub uploads_per_minute: u32,
    /// Bits of an IPv4 client's address kept with its reports, to count distinct networks
    /// (never shown); 0 keeps nothing.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub client_prefix_v4: u8,
    /// Bits of an IPv6 client's address kept; 0 keeps nothing.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub client_prefix_v6: u8,
    /// Log lines as text or as JSON objects (one a line, for a log collector); the level from
    /// MPTCP_PROBE_LOG (default info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Remove reports (and their traces) this old, e.g. 365d; default: keep them.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
}

pub async fn run(a: CollectArgs) -> anyhow::Result<()> {
    if a.request_timeout < Duration::from_millis(100) {
        anyhow::bail!("--request-timeout {:?} is too short (at least 100ms)", a.request_timeout);
    }
    if a.retention.is_some_and(|r| r < Duration::from_secs(1)) {
        anyhow::bail!("--retention must be at least 1s");
    }
    let secret_file = match (a.secret_file, a.db.strip_prefix("sqlite://")) {
        (Some(f), _) => f,
        (None, Some(path)) => PathBuf::from(format!("{path}.secret")),
        (None, None) => anyhow::bail!(
            "--secret-file is needed with a database other than SQLite (give every collector of \
             one database the same file)"
        ),
    };
    collect::run(CollectOptions {
        listen: a.listen,
        db: a.db,
        secret_file,
        upload_keys: a.upload_keys,
        public_url: a.public_url.map(|u| u.trim_end_matches('/').to_string()),
        limits: Limits {
            max_report_bytes: usize::try_from(a.max_report_bytes).unwrap_or(usize::MAX),
            max_trace_bytes: usize::try_from(a.max_trace_bytes).unwrap_or(usize::MAX),
            request_timeout: a.request_timeout,
            uploads_per_minute: NonZeroU32::new(a.uploads_per_minute),
        },
        prefixes: PrefixPolicy { v4: a.client_prefix_v4, v6: a.client_prefix_v6 },
        retention: a.retention,
    })
    .await
}
