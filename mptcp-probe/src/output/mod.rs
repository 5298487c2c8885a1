//! Outputs for people and files: one line per event or flow, the report table, header-only
//! pcapng traces, and the `watch` sink that prints them.

pub mod pcap;
pub mod table;
pub mod text;
pub mod watch;
