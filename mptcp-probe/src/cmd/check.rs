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
use mptcp_probe_model::TestName;

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
    /// Post the report to a collector at this URL.
    #[arg(long, value_name = "URL")]
    pub upload: Option<String>,
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
    /// of the SYN on raw sockets (needs CAP_NET_RAW) and compare the routers' ICMP quotes.
    #[arg(long)]
    pub locate: bool,
    /// The most hops `--locate` probes.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub locate_hops: u8,
}

pub async fn run(a: CheckArgs) -> anyhow::Result<()> {
    let report = active::run(CheckOptions {
        server: a.server,
        tests: a.tests,
        pcap: a.pcap,
        no_observer: a.no_observer,
        control_port: a.control_port,
        timeout: Duration::from_secs(a.timeout),
        bulk_bytes: a.bulk_bytes,
        budget: Duration::from_secs(a.budget),
        locate: a.locate.then(|| LocateOptions { max_hops: a.locate_hops, ..LocateOptions::default() }),
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
        let answer = export::upload(&http, url, &report).await?;
        eprintln!("uploaded: {answer}");
    }
    Ok(())
}
