//! mptcp-probe: observes Multipath TCP on the wire and in the kernel, and names what middleboxes
//! do to it.

mod bench;
mod classify;
mod clock;
mod engine;
mod flows;
mod mib;
mod observer;
mod pcap;
mod pm;
mod preflight;
mod proto;
mod render;
mod report;
mod server;
mod sock;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mptcp-probe", version, about = "Multipath TCP middlebox observer and measurement tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live MPTCP option exchanges, fallbacks and per-flow summaries from the kernel observer.
    Watch(watch::WatchArgs),
    /// Run FTP/HTTP/TLS/bulk/echo tests over MPTCP and plain TCP against a `serve` and name what
    /// the path does to MPTCP.
    Check(engine::CheckArgs),
    /// Test server that `check` talks to: FTP, HTTP, TLS, bulk and echo endpoints over MPTCP, and
    /// a control port that reports what each test's connections looked like from here.
    Serve(server::ServeArgs),
    #[command(hide = true)]
    ProgBench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MPTCP_PROBE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::Watch(args) => watch::run(args).await,
            Command::Check(args) => engine::run(args).await,
            Command::Serve(args) => server::run(args).await,
            Command::ProgBench(args) => bench::run(args).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
