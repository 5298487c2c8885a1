//! The subcommands: their command-line options and the wiring to the library. No logic here.

pub mod check;
pub mod collect;
pub mod daemon;
pub mod prog_bench;
pub mod serve;
pub mod watch;
