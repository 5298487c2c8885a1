//! `mptcp-probe serve`.

use std::net::IpAddr;

use mptcp_probe::{
    protocol::port,
    server::{self, ServeOptions},
};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// IP address to listen on (repeatable). Default: `::`, which is dual-stack and covers IPv4.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<IpAddr>,
    /// Control port: plain TCP, HTTP JSON API (0 for any free port, as for every port option).
    #[arg(long, value_name = "P", default_value_t = port::CONTROL)]
    pub control_port: u16,
    /// FTP control port (passive data ports: 30000-30099).
    #[arg(long, value_name = "P", default_value_t = port::FTP)]
    pub ftp_port: u16,
    /// HTTP port.
    #[arg(long, value_name = "P", default_value_t = port::HTTP)]
    pub http_port: u16,
    /// TLS port.
    #[arg(long, value_name = "P", default_value_t = port::TLS)]
    pub tls_port: u16,
    /// Bulk transfer port.
    #[arg(long, value_name = "P", default_value_t = port::BULK)]
    pub bulk_port: u16,
    /// Echo port.
    #[arg(long, value_name = "P", default_value_t = port::ECHO)]
    pub echo_port: u16,
    /// DNS name or IP address for the self-signed TLS certificate (repeatable). Default:
    /// "mptcp-probe.test" plus the listen addresses.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_name: Vec<String>,
    /// Do not use the eBPF observer: handshake views come from the kernel's saved SYN, where it
    /// keeps one.
    #[arg(long)]
    pub no_observer: bool,
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    server::run(ServeOptions {
        listen: a.listen,
        control_port: a.control_port,
        ftp_port: a.ftp_port,
        http_port: a.http_port,
        tls_port: a.tls_port,
        bulk_port: a.bulk_port,
        echo_port: a.echo_port,
        tls_name: a.tls_name,
        no_observer: a.no_observer,
    })
    .await
}
