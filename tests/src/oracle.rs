//! An independent oracle: tcpdump captures the traffic, tshark decodes the MPTCP options.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mptcp_probe_common::options::{TCPOPT_EOL, TCPOPT_MPTCP, TCPOPT_NOP};
use mptcp_probe_model::Subtype;

use crate::{
    lab::{sh, Child, Netns},
    probe::TempDir,
};

pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
    _dir: TempDir,
}

/// One packet as tshark decodes it.
#[derive(Debug, Clone)]
pub struct Packet {
    pub src_port: u16,
    pub dst_port: u16,
    pub syn: bool,
    pub ack: bool,
    /// TCP payload bytes.
    pub len: u32,
    /// (subtype, length) of every MPTCP option, in order.
    pub mptcp: Vec<(Subtype, u8)>,
}

impl Capture {
    /// Starts capturing TCP headers on `iface` inside `ns`.
    pub fn start(ns: &Netns, iface: &str) -> Self {
        let dir = TempDir::new("pcap");
        let (file, log) = (dir.0.join("trace.pcap"), dir.0.join("tcpdump.log"));
        let mut cmd = ns.cmd("tcpdump");
        // Immediate mode: each packet is handed over at once, not when a buffer block fills or
        // times out, so that what arrived before the capture is stopped is in the file.
        cmd.args(["-i", iface, "--immediate-mode", "-U", "-n", "-s", "256", "-w"])
            .arg(&file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = Child::spawn(&mut cmd);
        if let Err(e) = child.wait_ready(&log, "listening on", Duration::from_secs(20), "tcpdump") {
            panic!("{e:#}");
        }
        Self { child: Some(child), file, _dir: dir }
    }

    /// Stops the capture and decodes it with tshark.
    pub fn finish(self) -> Vec<Packet> {
        self.finish_with(decode)
    }

    /// Stops the capture and reads the file with `read`.
    pub fn finish_with<T>(mut self, read: impl FnOnce(&Path) -> T) -> T {
        let mut child = self.child.take().expect("running");
        // The last packets reach the file before tcpdump is told to stop.
        std::thread::sleep(Duration::from_millis(300));
        child.signal(libc::SIGINT);
        let _ = child.0.wait();
        read(&self.file)
    }
}

fn list<T: std::str::FromStr>(field: &str) -> Vec<T> {
    field.split(',').filter(|s| !s.is_empty()).filter_map(|s| s.trim().parse().ok()).collect()
}

/// Decodes a capture file: ports, SYN/ACK flags and MPTCP option subtypes with their lengths.
pub fn decode(file: &Path) -> Vec<Packet> {
    let out = sh(Command::new("tshark").args(["-n", "-r"]).arg(file).args([
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.dstport",
        "-e",
        "tcp.flags.syn",
        "-e",
        "tcp.flags.ack",
        "-e",
        "tcp.option_kind",
        "-e",
        "tcp.option_len",
        "-e",
        "tcp.options.mptcp.subtype",
        "-e",
        "tcp.len",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 8 {
                return None;
            }
            let kinds: Vec<u8> = list(f[4]);
            let lens: Vec<u8> = list(f[5]);
            // tshark's number for each subtype; named here, once, as the RFC numbers them.
            let subtypes = list::<u8>(f[6]).into_iter().map(Subtype::from_code);
            // tcp.option_len has no entry for NOP and EOL: pair the rest with their kinds.
            let sized: Vec<u8> =
                kinds.iter().copied().filter(|k| ![TCPOPT_EOL, TCPOPT_NOP].contains(k)).collect();
            let mptcp_lens: Vec<u8> =
                sized.iter().zip(lens.iter()).filter(|(k, _)| **k == TCPOPT_MPTCP).map(|(_, l)| *l).collect();
            Some(Packet {
                src_port: f[0].parse().ok()?,
                dst_port: f[1].parse().ok()?,
                syn: matches!(f[2], "1" | "True"),
                ack: matches!(f[3], "1" | "True"),
                len: f[7].trim().parse().unwrap_or(0),
                mptcp: subtypes.zip(mptcp_lens).collect(),
            })
        })
        .collect()
}

/// Per frame of a capture file: (captured bytes, original length, IP header length, TCP header
/// length), as tshark reads them.
pub fn frame_lengths(file: &std::path::Path) -> Vec<(u32, u32, u32, u32)> {
    let out = sh(Command::new("tshark").args(["-n", "-r"]).arg(file).args([
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-e",
        "frame.cap_len",
        "-e",
        "frame.len",
        "-e",
        "ip.hdr_len",
        "-e",
        "ipv6.plen",
        "-e",
        "tcp.hdr_len",
    ]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let ip_hdr =
                if f.get(2).map(|s| !s.is_empty()).unwrap_or(false) { f[2].parse().ok()? } else { 40 };
            Some((f[0].parse().ok()?, f[1].parse().ok()?, ip_hdr, f.get(4)?.parse().ok()?))
        })
        .collect()
}
