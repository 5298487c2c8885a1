//! The daemon's configuration file (TOML). `deploy/mptcp-probe.toml` documents every option with
//! its default; a unit test holds it to [`Config::default`].

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
};

use anyhow::{bail, Context as _};
use serde::Deserialize;

/// Flow-table sizes the kernel side accepts (as `watch --flow-table-size`).
pub const FLOW_TABLE_SIZES: std::ops::RangeInclusive<u32> = 64..=4_194_304;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Interfaces to observe; empty: every interface that is up, and later ones.
    pub interfaces: Vec<String>,
    pub flow_table_size: u32,
    pub idle_timeout_seconds: u64,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter directive.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            flow_table_size: 65536,
            idle_timeout_seconds: 300,
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9725)) }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

impl Config {
    /// Parses and checks a configuration; the error names the file and what is wrong in it.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)
            .with_context(|| format!("{}: not a valid configuration", origin.display()))?;
        config.check().with_context(|| format!("{}: not a valid configuration", origin.display()))?;
        Ok(config)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        Self::parse(&text, path)
    }

    fn check(&self) -> anyhow::Result<()> {
        if !FLOW_TABLE_SIZES.contains(&self.flow_table_size) {
            bail!(
                "flow_table_size = {} is outside {}..={}",
                self.flow_table_size,
                FLOW_TABLE_SIZES.start(),
                FLOW_TABLE_SIZES.end()
            );
        }
        if self.idle_timeout_seconds == 0 {
            bail!("idle_timeout_seconds must be at least 1");
        }
        if let Some(bad) = self.interfaces.iter().find(|i| i.is_empty() || i.len() > 15 || i.contains('/')) {
            bail!("interfaces: {bad:?} is not an interface name");
        }
        self.log.filter()?;
        Ok(())
    }
}

impl LogConfig {
    /// The level as a `tracing` filter.
    pub fn filter(&self) -> anyhow::Result<tracing_subscriber::EnvFilter> {
        tracing_subscriber::EnvFilter::builder()
            .parse(&self.level)
            .with_context(|| format!("log.level = {:?} is not a log filter", self.level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/mptcp-probe.toml");

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn the_shipped_example_shows_every_default() {
        assert_eq!(parse(EXAMPLE).unwrap(), Config::default());
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn options_are_read() {
        let c = parse(
            "interfaces = [\"eth0\"]\nflow_table_size = 4096\n[metrics]\nlisten = \"[::1]:9000\"\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(c.interfaces, ["eth0"]);
        assert_eq!(c.flow_table_size, 4096);
        assert_eq!(c.metrics.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn mistakes_are_named_with_the_file() {
        let e = error("flow_table_sizes = 10\n");
        assert!(e.contains("test.toml") && e.contains("unknown field `flow_table_sizes`"), "{e}");
        let e = error("[metrics]\nlisten = \"localhost\"\n");
        assert!(e.contains("listen") && e.contains("socket address"), "{e}");
        let e = error("flow_table_size = 10\n");
        assert!(e.contains("flow_table_size = 10 is outside 64..=4194304"), "{e}");
        let e = error("idle_timeout_seconds = 0\n");
        assert!(e.contains("idle_timeout_seconds"), "{e}");
        let e = error("[log]\nformat = \"xml\"\n");
        assert!(e.contains("unknown variant `xml`"), "{e}");
        let e = error("[log]\nlevel = \"info,=\"\n");
        assert!(e.contains("log.level"), "{e}");
        let e = error("interfaces = [\"a/b\"]\n");
        assert!(e.contains("\"a/b\" is not an interface name"), "{e}");
        let e = format!("{:#}", Config::load(Path::new("/nonexistent/mptcp-probe.toml")).unwrap_err());
        assert!(e.contains("/nonexistent/mptcp-probe.toml"), "{e}");
    }
}
