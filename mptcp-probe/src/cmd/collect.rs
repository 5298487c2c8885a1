//! `mptcp-probe collect`.

use std::{net::SocketAddr, path::PathBuf};

use mptcp_probe::collect::{self, CollectOptions};

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
}

pub async fn run(a: CollectArgs) -> anyhow::Result<()> {
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
        max_report_bytes: usize::try_from(a.max_report_bytes).unwrap_or(usize::MAX),
    })
    .await
}
