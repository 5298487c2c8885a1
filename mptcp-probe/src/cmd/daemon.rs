//! `mptcp-probe daemon`: every connection of the host counted for Prometheus.

use std::path::PathBuf;

use mptcp_probe::daemon::{self, config::Config, LogReload};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The configuration file (TOML; deploy/mptcp-probe.toml shows every option and its default).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Check the configuration file, say whether it is valid, and exit (0 valid, 2 not).
    #[arg(long)]
    pub check_config: bool,
}

/// Reads the configuration before anything starts: a bad one is a usage error.
pub fn load(a: &DaemonArgs) -> anyhow::Result<Config> {
    Config::load(&a.config)
}

pub async fn run(a: DaemonArgs, config: Config, log: LogReload) -> anyhow::Result<()> {
    daemon::run(&a.config, config, log).await
}
