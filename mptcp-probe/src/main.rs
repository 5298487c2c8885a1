//! mptcp-probe: observes Multipath TCP on the wire and in the kernel, and names what middleboxes
//! do to it. This binary is the command line; the work is in the `mptcp_probe` library.

mod cmd;

use std::{io::IsTerminal as _, process::ExitCode};

use clap::{Parser, Subcommand};
use mptcp_probe::daemon::config::{LogConfig, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "mptcp-probe", version, about = "Multipath TCP middlebox observer and measurement tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live MPTCP option exchanges, fallbacks and per-flow summaries from the kernel observer.
    Watch(cmd::watch::WatchArgs),
    /// Run FTP/HTTP/TLS/bulk/echo tests over MPTCP and plain TCP against a `serve` and name what
    /// the path does to MPTCP.
    Check(cmd::check::CheckArgs),
    /// Test server that `check` talks to: FTP, HTTP, TLS, bulk and echo endpoints over MPTCP, and
    /// a control port that reports what each test's connections looked like from here.
    Serve(cmd::serve::ServeArgs),
    /// Observe every connection of the host and count, for Prometheus, whether MPTCP was
    /// negotiated, kept or lost, and why.
    Daemon(cmd::daemon::DaemonArgs),
    /// The collector: receives uploaded reports, stores them, gives each back with its token.
    Collect(cmd::collect::CollectArgs),
    #[command(hide = true)]
    ProgBench(cmd::prog_bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colour codes only for a person at a terminal, not in pipes and CI logs.
    let ansi = std::io::stderr().is_terminal();
    // The daemon logs as its configuration says, so the configuration comes first.
    let mut daemon = None;
    if let Command::Daemon(args) = &cli.command {
        let config = match cmd::daemon::load(args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
        if args.check_config {
            println!("{}: valid", args.config.display());
            return ExitCode::SUCCESS;
        }
        match mptcp_probe::daemon::init_logging(&config.log, ansi) {
            Ok(handle) => daemon = Some((config, handle)),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(1);
            }
        }
    } else if let Command::Collect(args) = &cli.command {
        let format = if args.log_format == "json" { LogFormat::Json } else { LogFormat::Text };
        let level = std::env::var("MPTCP_PROBE_LOG").unwrap_or_else(|_| "info".into());
        if let Err(e) = mptcp_probe::daemon::init_logging(&LogConfig { level, format }, ansi) {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("MPTCP_PROBE_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::Watch(args) => cmd::watch::run(args).await,
            Command::Check(args) => cmd::check::run(args).await,
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Collect(args) => cmd::collect::run(args).await,
            Command::Daemon(args) => {
                let (config, log) = daemon.expect("the daemon's configuration is read before the runtime");
                cmd::daemon::run(args, config, log).await
            }
            Command::ProgBench(args) => cmd::prog_bench::run(args),
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
