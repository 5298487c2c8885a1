//! `mptcp-probe check`.

use std::{path::PathBuf, time::Duration};

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use mptcp_probe::{
    active::{self, CheckOptions},
    export,
    locate::LocateOptions,
    output::table,
    protocol,
};
use mptcp_probe_model::{NetworkKind, TestName, MAX_NOTE_CHARS};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The mptcp-probe server (`mptcp-probe serve`): an address or a host name.
    #[arg(long)]
    pub server: String,
    /// Tests to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "handshake,http,ftp,tls,bulk,echo,join,add_addr",
        value_parser = PossibleValuesParser::new(TestName::ALL.map(TestName::as_str))
            .map(|s| s.parse::<TestName>().expect("one of the possible values")),
    )]
    pub tests: Vec<TestName>,
    /// The report as JSON (schema mptcp-probe/report/v1) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Post the report to a collector at this URL (its /api/v1/reports), with the trace when
    /// --pcap is given.
    #[arg(long, value_name = "URL")]
    pub upload: Option<String>,
    /// The collector's upload key, for a collector that asks for one; read from this file (the
    /// key's line) so that it shows in no process list.
    #[arg(long, value_name = "FILE", requires = "upload")]
    pub upload_key_file: Option<PathBuf>,
    /// Write a header-only pcapng trace of the test connections.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Run without the eBPF observer (socket-level and server-side evidence only).
    #[arg(long)]
    pub no_observer: bool,
    /// The server's control port.
    #[arg(long, default_value_t = protocol::port::CONTROL)]
    pub control_port: u16,
    /// Seconds a connection may take to come up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub timeout: u64,
    /// Seconds the whole check may take; tests that would run past it are cut short or left out,
    /// and the report says which.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub budget: u64,
    /// Bytes each way in the bulk test.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(0..=protocol::MAX_BULK_BYTES))]
    pub bulk_bytes: u64,
    /// Find the hop that interferes: for verdicts a SYN can show (syn_option_stripped,
    /// mss_rewritten, seq_rewritten, mptcp_syn_dropped), probe the path with TTL-limited copies
    /// of the SYN on raw sockets (needs CAP_NET_RAW) and compare the routers' ICMP quotes; for
    /// dss_stripped, copies of a data segment of a live MPTCP connection to the bulk port.
    #[arg(long)]
    pub locate: bool,
    /// The most hops `--locate` probes.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub locate_hops: u8,
    /// The kind of network this runs from, in the report: the collector counts paths by it.
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(NetworkKind::ALL.map(NetworkKind::as_str))
            .map(|s| s.parse::<NetworkKind>().expect("one of the possible values")),
    )]
    pub network_kind: Option<NetworkKind>,
    /// A few words about where and how this runs (at most 500 characters), in the report; a
    /// collector shows it only with the report's token.
    #[arg(long, value_parser = note)]
    pub note: Option<String>,
}

fn note(s: &str) -> Result<String, String> {
    let n = s.chars().count();
    if n > MAX_NOTE_CHARS {
        return Err(format!("{n} characters, more than {MAX_NOTE_CHARS}"));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err("control characters are not taken".into());
    }
    Ok(s.to_string())
}

pub async fn run(a: CheckArgs) -> anyhow::Result<()> {
    // A key that cannot be read is said before the tests run.
    let key = match &a.upload_key_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("reading the upload key {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let pcap = a.pcap.clone();
    let report = active::run(CheckOptions {
        server: a.server,
        tests: a.tests,
        pcap: a.pcap,
        no_observer: a.no_observer,
        control_port: a.control_port,
        timeout: Duration::from_secs(a.timeout),
        bulk_bytes: a.bulk_bytes,
        budget: Duration::from_secs(a.budget),
        locate: a.locate.then(|| LocateOptions {
            max_hops: a.locate_hops,
            data_bytes: a.bulk_bytes,
            ..LocateOptions::default()
        }),
        network_kind: a.network_kind,
        note: a.note,
    })
    .await?;
    // The report first: a refused upload loses nothing.
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table::table(&report));
    }
    if let Some(url) = &a.upload {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build()?;
        let uploaded = export::upload(&http, url, key.as_deref(), &report).await?;
        if let Some(path) = &pcap {
            let trace = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading the trace {}: {e}", path.display()))?;
            if let Err(e) = export::upload_trace(&http, url, &uploaded, trace).await {
                eprintln!("the report is uploaded, its trace is not: {e:#}");
            }
        }
        eprintln!("uploaded: {}", uploaded.url);
    }
    Ok(())
}
