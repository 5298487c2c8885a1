//! The daemon's configuration file (TOML). `deploy/mptcp-probe.toml` documents every option with
//! its default; a unit test holds it to [`Config::default`].

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use mptcp_probe_model::{NetworkKind, TestName};
use serde::Deserialize;

use crate::protocol;

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
    /// Other network namespaces to watch besides the daemon's own.
    pub namespaces: Vec<NamespaceConfig>,
    /// Servers (`mptcp-probe serve`) to run `check` against, periodically.
    pub checks: Vec<CheckConfig>,
    pub upload: UploadConfig,
}

/// Where a named network namespace's file is (`ip netns add NAME`).
pub const NETNS_DIR: &str = "/run/netns";

/// A network namespace to watch, and its `namespace` label. In the file: a name (`"web"`, the
/// namespace `ip netns` knows by that name), or `{ name = "web", path = "/proc/1234/ns/net" }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "NamespaceEntry")]
pub struct NamespaceConfig {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NamespaceEntry {
    Name(String),
    Table { name: String, path: PathBuf },
}

impl From<NamespaceEntry> for NamespaceConfig {
    fn from(e: NamespaceEntry) -> Self {
        match e {
            NamespaceEntry::Name(name) => Self { path: Path::new(NETNS_DIR).join(&name), name },
            NamespaceEntry::Table { name, path } => Self { name, path },
        }
    }
}

impl NamespaceConfig {
    fn check(&self) -> anyhow::Result<()> {
        let good = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(good) {
            bail!("namespaces: {:?} is not a name (letters, digits, -, _ and . only)", self.name);
        }
        if self.name == crate::export::metrics::OWN_NAMESPACE {
            bail!("namespaces: {:?} names the daemon's own namespace in the metrics", self.name);
        }
        if !self.path.is_absolute() {
            bail!("namespaces: {} is not an absolute path", self.path.display());
        }
        Ok(())
    }
}

/// Where the periodic checks' reports go: the collector, through a spool on disk.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// The collector's endpoint for reports (`POST`); empty: reports are not uploaded.
    pub url: String,
    /// Sent as `Authorization: Bearer KEY` when not empty.
    pub key: String,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
}

/// The smallest spool: a few reports.
pub const MIN_SPOOL_BYTES: u64 = 64 * 1024;

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            key: String::new(),
            spool_dir: PathBuf::from("/var/lib/mptcp-probe/spool"),
            spool_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl UploadConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.enabled() && !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bail!("upload.url = {:?} is not an http:// or https:// URL", self.url);
        }
        if self.spool_max_bytes < MIN_SPOOL_BYTES {
            bail!("upload.spool_max_bytes = {} is below {MIN_SPOOL_BYTES}", self.spool_max_bytes);
        }
        Ok(())
    }
}

/// One periodic check: `check --server SERVER --tests TESTS` every `interval_seconds`, give or
/// take `jitter_seconds`; never two at once against one target; a target that cannot be
/// measured is tried less often (twice the interval after each failure in a row, up to 16 times).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckConfig {
    /// The `target` label of its metrics; the server when not given.
    pub name: String,
    pub server: String,
    pub tests: Vec<TestName>,
    pub interval_seconds: u64,
    pub jitter_seconds: u64,
    pub control_port: u16,
    /// How long one check may take (as `check --budget`).
    pub budget_seconds: u64,
    /// How long a connection may take to come up (as `check --timeout`).
    pub timeout_seconds: u64,
    pub bulk_bytes: u64,
    /// Observe the check's connections with eBPF (false: socket-level and server-side evidence
    /// only, as `check --no-observer`).
    pub observer: bool,
    /// The kind of network this host checks from, in its reports (as `check --network-kind`).
    pub network_kind: Option<NetworkKind>,
}

/// The shortest interval between two checks of one target.
pub const MIN_CHECK_INTERVAL_S: u64 = 10;

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            server: String::new(),
            tests: TestName::ALL.to_vec(),
            interval_seconds: 3600,
            jitter_seconds: 60,
            control_port: protocol::port::CONTROL,
            budget_seconds: 300,
            timeout_seconds: 10,
            bulk_bytes: 4 * 1024 * 1024,
            observer: true,
            network_kind: None,
        }
    }
}

impl CheckConfig {
    /// Its `target` label.
    pub fn target(&self) -> &str {
        if self.name.is_empty() {
            &self.server
        } else {
            &self.name
        }
    }

    fn check(&self, i: usize) -> anyhow::Result<()> {
        let at = format!("checks[{i}]");
        if self.server.is_empty() {
            bail!("{at}: server is missing");
        }
        if self.tests.is_empty() {
            bail!("{at}: tests is empty");
        }
        if self.interval_seconds < MIN_CHECK_INTERVAL_S {
            bail!("{at}: interval_seconds = {} is below {MIN_CHECK_INTERVAL_S}", self.interval_seconds);
        }
        if self.jitter_seconds > self.interval_seconds / 2 {
            bail!("{at}: jitter_seconds = {} is more than half the interval", self.jitter_seconds);
        }
        if !(10..=86_400).contains(&self.budget_seconds) {
            bail!("{at}: budget_seconds = {} is outside 10..=86400", self.budget_seconds);
        }
        if !(1..=120).contains(&self.timeout_seconds) {
            bail!("{at}: timeout_seconds = {} is outside 1..=120", self.timeout_seconds);
        }
        if self.bulk_bytes > protocol::MAX_BULK_BYTES {
            bail!("{at}: bulk_bytes = {} is above {}", self.bulk_bytes, protocol::MAX_BULK_BYTES);
        }
        Ok(())
    }
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
            namespaces: Vec::new(),
            checks: Vec::new(),
            upload: UploadConfig::default(),
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
        self.upload.check()?;
        for n in &self.namespaces {
            n.check()?;
        }
        let mut names: Vec<&str> = self.namespaces.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("namespaces: {:?} is named twice", w[0]);
        }
        for (i, c) in self.checks.iter().enumerate() {
            c.check(i)?;
        }
        let mut targets: Vec<&str> = self.checks.iter().map(CheckConfig::target).collect();
        targets.sort_unstable();
        if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
            bail!("checks: two targets are named {:?} (give each a name of its own)", w[0]);
        }
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
    fn the_shipped_example_of_a_check_shows_its_defaults() {
        let block: String = EXAMPLE
            .lines()
            .skip_while(|l| *l != "# [[checks]]")
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{}\n", l.split("  #").next().unwrap_or(l).trim_end()))
            .collect();
        let c = parse(&block).unwrap_or_else(|e| panic!("{e:#}\n{block}"));
        assert_eq!(c.checks, [CheckConfig { server: "203.0.113.2".into(), ..CheckConfig::default() }]);
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
        let c = parse("[[checks]]\nserver = \"203.0.113.2\"\ntests = [\"http\", \"tls\"]\n[[checks]]\nname = \"b\"\nserver = \"203.0.113.2\"\n").unwrap();
        assert_eq!(c.checks[0].target(), "203.0.113.2");
        assert_eq!(c.checks[0].tests, [TestName::Http, TestName::Tls]);
        assert_eq!(c.checks[0].interval_seconds, 3600);
        assert_eq!(c.checks[1].target(), "b");
        assert_eq!(c.checks[1].tests, TestName::ALL);
        let c = parse("namespaces = [\"web\", { name = \"db\", path = \"/proc/7/ns/net\" }]\n").unwrap();
        assert_eq!(
            c.namespaces,
            [
                NamespaceConfig { name: "web".into(), path: "/run/netns/web".into() },
                NamespaceConfig { name: "db".into(), path: "/proc/7/ns/net".into() },
            ]
        );
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
        let e = error("[[checks]]\ntests = [\"http\"]\n");
        assert!(e.contains("checks[0]: server is missing"), "{e}");
        let e = error("[[checks]]\nserver = \"a\"\ninterval_seconds = 5\n");
        assert!(e.contains("interval_seconds = 5 is below 10"), "{e}");
        let e = error("[[checks]]\nserver = \"a\"\ntests = [\"gopher\"]\n");
        assert!(e.contains("unknown variant `gopher`"), "{e}");
        let e = error("[[checks]]\nserver = \"a\"\n[[checks]]\nserver = \"a\"\n");
        assert!(e.contains("two targets are named \"a\""), "{e}");
        let e = error("namespaces = [\"host\"]\n");
        assert!(e.contains("names the daemon's own namespace"), "{e}");
        let e = error("namespaces = [\"a b\"]\n");
        assert!(e.contains("\"a b\" is not a name"), "{e}");
        let e = error("namespaces = [\"web\", { name = \"web\", path = \"/proc/1/ns/net\" }]\n");
        assert!(e.contains("\"web\" is named twice"), "{e}");
        let e = error("namespaces = [{ name = \"x\", path = \"relative\" }]\n");
        assert!(e.contains("relative is not an absolute path"), "{e}");
        let e = error("[upload]\nurl = \"ftp://x\"\n");
        assert!(e.contains("not an http:// or https:// URL"), "{e}");
        let e = error("[upload]\nspool_max_bytes = 10\n");
        assert!(e.contains("upload.spool_max_bytes = 10 is below 65536"), "{e}");
        let e = format!("{:#}", Config::load(Path::new("/nonexistent/mptcp-probe.toml")).unwrap_err());
        assert!(e.contains("/nonexistent/mptcp-probe.toml"), "{e}");
    }
}
