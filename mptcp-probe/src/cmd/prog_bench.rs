//! `mptcp-probe prog-bench` (hidden): the TC programs' per-packet cost, for `cargo xtask bench`.

use mptcp_probe::kernel::prog_bench::{self, BenchOptions};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Program runs per frame, program and round.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Rounds; each round runs the empty classifier and then every program on every frame.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    prog_bench::run(BenchOptions { repeat: a.repeat, rounds: a.rounds })
}
