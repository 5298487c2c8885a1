//! The lab's middlebox scenarios: each a named profile applied in the router namespace (the
//! kernel's iptables/sysctl/MTU where they can, the `mptcp-middlebox` NFQUEUE program or proxy
//! where they cannot), with the verdicts, path conditions and fallback reason `check` must report
//! for it. Paths that only delay, lose and reorder (`mptcp-middlebox netem`, this kernel having no
//! netem qdisc) may show a path condition now and then; such a scenario says it is allowed.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mptcp_probe_model::{TestName, Verdict};

use crate::lab::{addr, ifname, Child, Lab, Netns};

/// One thing done to the lab for a scenario.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// An iptables rule (ip6tables when `v6`) appended to `chain` of `table` in the router.
    Rule { v6: bool, table: &'static str, chain: &'static str, args: &'static [&'static str] },
    /// A sysctl in the router.
    RouterSysctl(&'static str),
    /// A sysctl on the client and the server.
    EndsSysctl(&'static str),
    /// The MTU of the router–server link, both ends.
    ServerLinkMtu(u32),
    /// `mptcp-middlebox` with these arguments; forwarded TCP goes through its queue.
    Nfqueue(&'static [&'static str]),
    /// `mptcp-middlebox` with these arguments for the forwarded IPv4 TCP packets this iptables
    /// match selects; the others pass untouched.
    NfqueueFor { args: &'static [&'static str], matching: &'static [&'static str] },
    /// The MTU of one of the router's interfaces only (a narrow hop: the hosts do not know it).
    RouterMtu { dev: &'static str, mtu: u32 },
    /// The transparent proxy for a port, with `REDIRECT` rules sending that port to it.
    Proxy(u16),
}

/// A packet the independent oracle (tshark on the router's interfaces) checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OraclePacket {
    /// Client → server SYN.
    Syn,
    /// Server → client SYN/ACK.
    SynAck,
    /// Client → server: the third ACK.
    Ack,
    /// Client → server data segments.
    Data,
}

#[derive(Clone, Copy, Debug)]
pub struct Oracle {
    /// The server port whose connections are examined.
    pub port: u16,
    pub packet: OraclePacket,
}

#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    /// What the middlebox does, for people.
    pub about: &'static str,
    /// Check the server over IPv6 rather than IPv4.
    pub ipv6: bool,
    /// `check --tests` (None: every test).
    pub tests: Option<&'static [TestName]>,
    /// More `check` options (a shorter `--timeout` where connections are meant to stall).
    pub check_args: &'static [&'static str],
    pub steps: &'static [Step],
    /// The report's summary verdicts, exactly.
    pub expect: &'static [Verdict],
    /// The report's path conditions (`summary.path_conditions`) that every run shows.
    pub path: &'static [Verdict],
    /// Path conditions a run may show as well, or not: what a lossy or jittery path does now and
    /// then. A test showing one may fall back (that is what the condition explains).
    pub may: &'static [Verdict],
    /// The fallback the scenario causes (None: no test may fall back, except as `may` allows).
    pub fallback: Option<Fallback>,
    pub oracle: Option<Oracle>,
    /// `check --locate` must place this verdict's change between the router (hop 1) and the
    /// server, where the scenario's middlebox acts.
    pub located: Option<Verdict>,
}

/// A fallback a scenario must cause: the MPTCP run of `test` names one of `reasons`, the
/// kernel's MIB counters (`MPTcpExt` without its prefix) as the report's `fallback_reason`
/// carries them. More than one where the kernel may notice the same middlebox at different
/// places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub test: TestName,
    pub reasons: &'static [&'static str],
}

impl Fallback {
    /// The reasons as the tables show them: `A` or `A|B`.
    pub fn reasons_text(&self) -> String {
        self.reasons.join("|")
    }
}

const fn rule(table: &'static str, chain: &'static str, args: &'static [&'static str]) -> Step {
    Step::Rule { v6: false, table, chain, args }
}

const CSUM: Step = Step::EndsSysctl("net.mptcp.checksum_enabled=1");
/// Byte counting per connection, for rules that act after N packets or bytes.
const ACCT: Step = Step::RouterSysctl("net.netfilter.nf_conntrack_acct=1");
const REWRITE: Step =
    Step::Nfqueue(&["rewrite", "--port", "80", "--find", "mptcp-probe/", "--replace", "MPTCP-PROBE/"]);
/// Masquerade towards the server; the FTP helper on port 21 rewrites PORT/EPRT and follows data
/// connections (nf_conntrack_ftp + nf_nat_ftp).
const NAT: Step = rule("nat", "POSTROUTING", &["-o", ifname::MS, "-j", "MASQUERADE"]);
const FTP_HELPER: Step =
    rule("raw", "PREROUTING", &["-p", "tcp", "--dport", "21", "-j", "CT", "--helper", "ftp"]);

/// The server's bulk port (`serve`'s), as iptables takes it.
const BULK_PORT: &str = "8001";

/// Tests for the paths that only delay, lose and reorder: each connection's first flight (HTTP's
/// request and bulk's upload span several segments, which reordering can swap), and nothing that
/// waits for an option the kernel sends once (join, ADD_ADDR: a lost ADD_ADDR is re-sent only
/// after `add_addr_timeout`, minutes later) or for several connections in turn (FTP).
const NOISY_TESTS: &[TestName] =
    &[TestName::Handshake, TestName::Http, TestName::Tls, TestName::Bulk, TestName::Echo];

/// The scenarios of paths that only delay, lose and reorder (no middlebox): they may show
/// `handshake_reordered`, never a middlebox verdict; the test suite runs them repeatedly.
pub const NOISY_PATHS: &[&str] = &["lossy", "reordering"];

/// ADD_ADDR from the server: a non-SYN segment whose first option is the 12-byte timestamp
/// (NOP, NOP, TS), so the MPTCP option starts at IP offset 52 (IPv4 without IP options) and its
/// subtype is the high nibble of byte 54. A cBPF filter for `-m bpf`: `ip[0] & 0xf0 == 0x40 &&
/// ip[52] == 30 && ip[54] & 0xf0 == 0x30`. Checking the kind at 52 matters: elsewhere byte 54 can
/// fall inside the timestamp echo, whose high nibble is 3 one time in sixteen.
///   0 ldb [0]; 1 and #0xf0; 2 jeq #0x40 else 9; 3 ldb [52]; 4 jeq #30 else 9; 5 ldb [54];
///   6 and #0xf0; 7 jeq #0x30 else 9; 8 ret match; 9 ret no match
const CBPF_ADD_ADDR_V4: &str =
    "10,48 0 0 0,84 0 0 240,21 0 6 64,48 0 0 52,21 0 4 30,48 0 0 54,84 0 0 240,21 0 1 48,6 0 0 65535,6 0 0 0";

#[rustfmt::skip]
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "clean",
        about: "nothing in the path (IPv4)",
        ipv6: false,
        tests: None,
        check_args: &[],
        steps: &[],
        expect: &[Verdict::MptcpOk],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "clean-ipv6",
        about: "nothing in the path (IPv6)",
        ipv6: true,
        tests: None,
        check_args: &[],
        steps: &[],
        expect: &[Verdict::MptcpOk],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "clean-csum",
        about: "nothing in the path, DSS checksums on at both ends",
        ipv6: false,
        tests: None,
        check_args: &[],
        steps: &[CSUM],
        expect: &[Verdict::MptcpOk],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "syn-strip",
        about: "MPTCP option stripped from SYNs (TCPOPTSTRIP)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http, TestName::Bulk]),
        check_args: &[],
        steps: &[rule("mangle", "FORWARD", &["-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN", "-j", "TCPOPTSTRIP", "--strip-options", "30"])],
        expect: &[Verdict::SynOptionStripped],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Http, reasons: &["MPCapableFallbackSYNACK"] }),
        oracle: Some(Oracle { port: 80, packet: OraclePacket::Syn }),
        located: Some(Verdict::SynOptionStripped),
    },
    Scenario {
        name: "syn-strip-ipv6",
        about: "MPTCP option stripped from SYNs, over IPv6 (ip6tables TCPOPTSTRIP)",
        ipv6: true,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        check_args: &[],
        steps: &[Step::Rule { v6: true, table: "mangle", chain: "FORWARD", args: &["-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN", "-j", "TCPOPTSTRIP", "--strip-options", "30"] }],
        expect: &[Verdict::SynOptionStripped],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Http, reasons: &["MPCapableFallbackSYNACK"] }),
        oracle: Some(Oracle { port: 80, packet: OraclePacket::Syn }),
        located: Some(Verdict::SynOptionStripped),
    },
    Scenario {
        name: "synack-strip",
        about: "MPTCP option stripped from SYN/ACKs (TCPOPTSTRIP)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http, TestName::Bulk]),
        check_args: &[],
        steps: &[rule("mangle", "FORWARD", &["-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN,ACK", "-j", "TCPOPTSTRIP", "--strip-options", "30"])],
        expect: &[Verdict::SynackOptionStripped],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Http, reasons: &["MPCapableFallbackSYNACK"] }),
        oracle: Some(Oracle { port: 80, packet: OraclePacket::SynAck }),
        located: None,
    },
    Scenario {
        name: "ack-strip",
        about: "MPTCP option stripped from the third ACK and the first data (client's packets 2-3)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http, TestName::Bulk]),
        check_args: &[],
        steps: &[
            ACCT,
            rule("mangle", "FORWARD", &["-i", ifname::M1, "-p", "tcp", "--tcp-flags", "SYN", "NONE", "-m", "connbytes", "--connbytes", "2:3", "--connbytes-dir", "original", "--connbytes-mode", "packets", "-j", "TCPOPTSTRIP", "--strip-options", "30"]),
        ],
        expect: &[Verdict::AckOptionStripped],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Http, reasons: &["MPCapableDataFallback"] }),
        oracle: Some(Oracle { port: 80, packet: OraclePacket::Ack }),
        located: None,
    },
    Scenario {
        name: "dss-strip",
        about: "MPTCP option stripped from the client's data segments after 100 kB (TCPOPTSTRIP + connbytes)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Bulk]),
        check_args: &[],
        steps: &[
            ACCT,
            rule("mangle", "FORWARD", &["-i", ifname::M1, "-p", "tcp", "-m", "connbytes", "--connbytes", "100000:", "--connbytes-dir", "original", "--connbytes-mode", "bytes", "-m", "length", "--length", "100:65535", "-j", "TCPOPTSTRIP", "--strip-options", "30"]),
        ],
        expect: &[Verdict::DssStripped],
        path: &[],
        may: &[],
        // Data without DSS once the mapping in force ends: DssFallback; a segment that cuts
        // into what the kernel expected of a mapping: DSSCorruptionFallback. Where the cut falls
        // decides (both seen on Linux 6.18).
        fallback: Some(Fallback { test: TestName::Bulk, reasons: &["DssFallback", "DSSCorruptionFallback"] }),
        oracle: Some(Oracle { port: 8001, packet: OraclePacket::Data }),
        located: Some(Verdict::DssStripped),
    },
    Scenario {
        name: "syn-drop",
        about: "SYNs carrying an MPTCP option dropped",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        check_args: &[],
        steps: &[rule("filter", "FORWARD", &["-p", "tcp", "--syn", "-m", "tcp", "--tcp-option", "30", "-j", "DROP"])],
        expect: &[Verdict::MptcpSynDropped],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Http, reasons: &["MPCapableSYNTXDrop"] }),
        oracle: None,
        located: None,
    },
    Scenario {
        name: "syn-reset",
        about: "SYNs carrying an MPTCP option answered with a reset",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        check_args: &[],
        steps: &[rule("filter", "FORWARD", &["-p", "tcp", "--syn", "-m", "tcp", "--tcp-option", "30", "-j", "REJECT", "--reject-with", "tcp-reset"])],
        expect: &[Verdict::MptcpReset],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "mss-clamp",
        about: "MSS of SYN and SYN/ACK clamped to 1200 (TCPMSS)",
        ipv6: false,
        tests: None,
        check_args: &[],
        steps: &[rule("mangle", "FORWARD", &["-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--set-mss", "1200"])],
        expect: &[Verdict::MptcpOk, Verdict::MssRewritten],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: Some(Verdict::MssRewritten),
    },
    Scenario {
        name: "seq-rewrite",
        about: "sequence numbers offset per connection (ISN randomiser, NFQUEUE)",
        ipv6: false,
        tests: None,
        check_args: &[],
        steps: &[Step::Nfqueue(&["seq"])],
        expect: &[Verdict::MptcpOk, Verdict::SeqRewritten],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "split",
        about: "client's data segments cut into pieces of 500 bytes (NFQUEUE)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http, TestName::Bulk, TestName::Echo]),
        check_args: &[],
        steps: &[Step::Nfqueue(&["split", "--max", "500"])],
        expect: &[Verdict::MptcpOk, Verdict::SegmentsSplit],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "coalesce",
        about: "client's contiguous data segments merged up to 8000 bytes (NFQUEUE, jumbo MTU to the server)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http, TestName::Bulk, TestName::Echo]),
        check_args: &[],
        steps: &[Step::ServerLinkMtu(9000), Step::Nfqueue(&["coalesce", "--max", "8000"])],
        expect: &[Verdict::MptcpOk, Verdict::SegmentsCoalesced],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "payload-rewrite",
        about: "HTTP request bytes rewritten, same length (NFQUEUE)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        check_args: &[],
        steps: &[REWRITE],
        expect: &[Verdict::PayloadModified],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "payload-rewrite-csum",
        about: "HTTP request bytes rewritten, same length, DSS checksums on",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        check_args: &[],
        steps: &[CSUM, REWRITE],
        expect: &[Verdict::PayloadModified],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Http, reasons: &["DssFallback"] }),
        oracle: None,
        located: None,
    },
    Scenario {
        name: "nat",
        about: "source NAT towards the server (MASQUERADE)",
        ipv6: false,
        tests: None,
        check_args: &[],
        steps: &[NAT],
        expect: &[Verdict::MptcpOk, Verdict::Nat],
        // Active FTP through a NAT without the FTP helper: the server refuses a PORT naming
        // another address than the control connection's peer, over plain TCP as well.
        path: &[Verdict::PathBroken],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "ftp-alg",
        about: "NAT with the FTP ALG: PORT rewritten to the NAT address, length changes",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Ftp]),
        check_args: &[],
        steps: &[NAT, FTP_HELPER],
        expect: &[Verdict::Nat, Verdict::PayloadModified],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Ftp, reasons: &["DssFallback"] }),
        oracle: None,
        located: None,
    },
    Scenario {
        name: "ftp-alg-csum",
        about: "NAT with the FTP ALG, DSS checksums on",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Ftp]),
        check_args: &[],
        steps: &[CSUM, NAT, FTP_HELPER],
        expect: &[Verdict::Nat, Verdict::PayloadModified],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Ftp, reasons: &["DssFallback"] }),
        oracle: None,
        located: None,
    },
    Scenario {
        name: "proxy",
        about: "transparent TCP proxy on port 80 (REDIRECT): connection terminated and re-originated",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        check_args: &[],
        steps: &[Step::Proxy(80)],
        expect: &[Verdict::Nat, Verdict::Proxied],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Http, reasons: &["MPCapableFallbackSYNACK"] }),
        oracle: None,
        located: None,
    },
    Scenario {
        name: "join-drop",
        about: "MP_JOIN SYNs dropped on the second path (SYNs with option 30 arriving there)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Join]),
        check_args: &[],
        steps: &[rule("filter", "FORWARD", &["-i", ifname::M2, "-p", "tcp", "--syn", "-m", "tcp", "--tcp-option", "30", "-j", "DROP"])],
        expect: &[Verdict::JoinBlocked],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "add-addr-drop",
        about: "ADD_ADDR options from the server dropped (cBPF on the MPTCP subtype)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::AddAddr]),
        check_args: &[],
        steps: &[rule("filter", "FORWARD", &["-i", ifname::MS, "-p", "tcp", "--tcp-flags", "SYN", "NONE", "-m", "tcp", "--tcp-option", "30", "-m", "bpf", "--bytecode", CBPF_ADD_ADDR_V4, "-j", "DROP"])],
        expect: &[Verdict::AddAddrDropped],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "lossy",
        about: "a long, lossy, jittery path: 20 ms ± 5 ms each way, 1 % loss (netem, NFQUEUE)",
        ipv6: false,
        tests: Some(NOISY_TESTS),
        check_args: &[],
        steps: &[Step::Nfqueue(&["netem", "--delay", "20", "--jitter", "5", "--loss", "1", "--seed", "1"])],
        expect: &[Verdict::MptcpOk],
        path: &[],
        // Jitter lets a later data segment overtake the third ACK now and then.
        may: &[Verdict::HandshakeReordered],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "reordering",
        about: "a reordering path: 25 % of the packets (correlation 50 %) overtake the others, delayed 10 ms (netem, NFQUEUE)",
        ipv6: false,
        tests: Some(NOISY_TESTS),
        check_args: &[],
        steps: &[Step::Nfqueue(&["netem", "--delay", "10", "--reorder", "25", "--correlation", "50", "--seed", "2"])],
        expect: &[Verdict::MptcpOk],
        path: &[],
        may: &[Verdict::HandshakeReordered],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "first-flight-reordered",
        about: "the client's third ACK and first data to the bulk port held 10 ms (packets 2-3, NFQUEUE): the next data segment arrives first",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Bulk]),
        check_args: &[],
        steps: &[
            ACCT,
            Step::NfqueueFor {
                args: &["netem", "--delay", "10"],
                matching: &["-i", ifname::M1, "-p", "tcp", "--dport", BULK_PORT, "--tcp-flags", "SYN", "NONE", "-m", "connbytes", "--connbytes", "2:3", "--connbytes-dir", "original", "--connbytes-mode", "packets"],
            },
        ],
        expect: &[Verdict::MptcpOk],
        path: &[Verdict::HandshakeReordered],
        may: &[],
        fallback: Some(Fallback { test: TestName::Bulk, reasons: &["MPCapableDataFallback"] }),
        oracle: None,
        located: None,
    },
    Scenario {
        name: "pmtu-blackhole",
        about: "a 1280-byte hop towards the server whose ICMP \"fragmentation needed\" is dropped (PMTU black hole)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Echo, TestName::Bulk]),
        // Large segments never arrive, over plain TCP too: bulk stalls until check gives up.
        check_args: &["--timeout", "2", "--budget", "60"],
        steps: &[
            Step::RouterMtu { dev: ifname::MS, mtu: 1280 },
            rule("filter", "OUTPUT", &["-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]),
        ],
        expect: &[Verdict::MptcpOk],
        path: &[Verdict::PathBroken],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "synproxy",
        about: "iptables SYNPROXY: the router answers the client's SYNs itself, then opens the connection to the server",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        check_args: &[],
        steps: &[
            rule("raw", "PREROUTING", &["-i", ifname::M1, "-p", "tcp", "--syn", "-j", "CT", "--notrack"]),
            // The options must be the server's own (window scale 10 for the lab's buffers).
            rule("filter", "FORWARD", &["-i", ifname::M1, "-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID,UNTRACKED", "-j", "SYNPROXY", "--sack-perm", "--timestamp", "--wscale", "10", "--mss", "1460"]),
            rule("filter", "FORWARD", &["-i", ifname::M1, "-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]),
            Step::RouterSysctl("net.netfilter.nf_conntrack_tcp_loose=0"),
        ],
        expect: &[Verdict::Proxied],
        path: &[],
        may: &[],
        fallback: Some(Fallback { test: TestName::Http, reasons: &["MPCapableFallbackSYNACK"] }),
        oracle: None,
        located: None,
    },
    Scenario {
        name: "synack-drop",
        about: "SYN/ACKs carrying an MPTCP option dropped",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        // The SYN retried without MPTCP meets the server's MPTCP request socket, whose SYN/ACK is
        // dropped again: nothing comes up before the timeout.
        check_args: &["--timeout", "3"],
        steps: &[rule("filter", "FORWARD", &["-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN,ACK", "-m", "tcp", "--tcp-option", "30", "-j", "DROP"])],
        expect: &[Verdict::MptcpSynackDropped],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
    Scenario {
        name: "options-drop",
        about: "segments carrying an MPTCP option dropped after the handshake (non-SYN packets with option 30)",
        ipv6: false,
        tests: Some(&[TestName::Handshake, TestName::Http]),
        // Linux neither falls back nor resets: the connection stalls until the timeout.
        check_args: &["--timeout", "1"],
        steps: &[rule("filter", "FORWARD", &["-p", "tcp", "--tcp-flags", "SYN", "NONE", "-m", "tcp", "--tcp-option", "30", "-j", "DROP"])],
        expect: &[Verdict::MptcpAckDropped],
        path: &[],
        may: &[],
        fallback: None,
        oracle: None,
        located: None,
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// A scenario by name, for tests (panics on a name that does not exist).
pub fn named(name: &str) -> &'static Scenario {
    find(name).unwrap_or_else(|| panic!("no scenario {name:?}"))
}

/// Removes every rule the scenarios add in the router (iptables and ip6tables, all tables).
pub fn clear_rules(router: &Netns) -> anyhow::Result<()> {
    for bin in ["iptables", "ip6tables"] {
        for table in ["filter", "mangle", "nat", "raw"] {
            run_ok(router.cmd(bin).args(["-t", table, "-F"]))?;
        }
    }
    Ok(())
}

impl Scenario {
    pub fn server(&self) -> &'static str {
        if self.ipv6 {
            addr::SERVER_V6
        } else {
            addr::SERVER
        }
    }

    /// `check --tests` for this scenario (None: every test).
    pub fn tests_arg(&self) -> Option<String> {
        self.tests.map(|t| t.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(","))
    }

    /// Whether the router runs `mptcp-middlebox` (NFQUEUE or the proxy).
    pub fn runs_middlebox(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Nfqueue(_) | Step::NfqueueFor { .. } | Step::Proxy(_)))
    }

    /// The router's commands for this scenario, for people (`measure` prints them, `lab up` too).
    pub fn commands(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| match s {
                Step::Rule { v6, table, chain, args } => vec![format!(
                    "{} -t {table} -A {chain} {}",
                    if *v6 { "ip6tables" } else { "iptables" },
                    args.join(" ")
                )],
                Step::RouterSysctl(kv) => vec![format!("sysctl -w {kv}")],
                Step::EndsSysctl(kv) => vec![format!("sysctl -w {kv}   (client and server)")],
                Step::ServerLinkMtu(mtu) => vec![format!("ip link set {} mtu {mtu}   (and the server's end)", ifname::MS)],
                Step::Nfqueue(args) => vec![
                    format!("mptcp-middlebox {}", args.join(" ")),
                    "iptables -A FORWARD -p tcp -j NFQUEUE --queue-num 0   (ip6tables too)".into(),
                ],
                Step::NfqueueFor { args, matching } => vec![
                    format!("mptcp-middlebox {}", args.join(" ")),
                    format!("iptables -A FORWARD {} -j NFQUEUE --queue-num 0", matching.join(" ")),
                ],
                Step::RouterMtu { dev, mtu } => vec![format!("ip link set {dev} mtu {mtu}")],
                Step::Proxy(port) => vec![
                    format!("mptcp-middlebox proxy --port {}", PROXY_PORT),
                    format!(
                        "iptables -t nat -A PREROUTING -i {}|{} -p tcp --dport {port} -j REDIRECT --to-ports {PROXY_PORT}",
                        ifname::M1,
                        ifname::M2
                    ),
                ],
            })
            .collect()
    }
}

/// Where the transparent proxy listens in the router.
const PROXY_PORT: u16 = 3128;

/// Processes a scenario runs in the router; stopped (and their counters read) by [`Applied::stop`].
pub struct Applied {
    procs: Vec<(Child, std::path::PathBuf)>,
    _dir: crate::probe::TempDir,
}

impl Applied {
    /// Stops the middlebox processes; returns the JSON counters each printed last.
    pub fn stop(mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (mut child, log) in self.procs.drain(..) {
            child.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(v) = text.lines().rev().find_map(|l| serde_json::from_str(l).ok()) {
                out.push(v);
            }
        }
        out
    }

    /// Leaves the processes running (the lab is kept); `lab down` kills them with the namespaces.
    pub fn detach(mut self) {
        for (child, _) in self.procs.drain(..) {
            std::mem::forget(child);
        }
        std::mem::forget(self._dir);
    }
}

fn iptables(ns: &Netns, v6: bool, table: &str, chain: &str, args: &[&str]) -> anyhow::Result<()> {
    let bin = if v6 { "ip6tables" } else { "iptables" };
    let out = ns.cmd(bin).args(["-t", table, "-A", chain]).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{bin} -t {table} -A {chain} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn run_ok(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Starts a router process and waits for its `ready` line.
fn start(
    lab: &Lab,
    middlebox: &Path,
    dir: &Path,
    n: usize,
    args: &[&str],
) -> anyhow::Result<(Child, std::path::PathBuf)> {
    let log = dir.join(format!("middlebox-{n}.log"));
    let mut child = Child::spawn(
        lab.m
            .cmd(middlebox)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?),
    );
    child.wait_ready(
        &log,
        "ready",
        Duration::from_secs(10),
        &format!("mptcp-middlebox {}", args.join(" ")),
    )?;
    Ok((child, log))
}

/// The NFQUEUE the router's middlebox binds.
const QUEUE: &str = "0";

/// Starts `mptcp-middlebox` on the router's queue.
fn start_nfqueue(
    lab: &Lab,
    middlebox: &Path,
    dir: &Path,
    n: usize,
    args: &[&str],
) -> anyhow::Result<(Child, std::path::PathBuf)> {
    let mut full = vec!["--queue", QUEUE];
    full.extend_from_slice(args);
    start(lab, middlebox, dir, n, &full)
}

/// Applies a scenario's steps to a lab; `middlebox` is the `mptcp-middlebox` binary, for the
/// scenarios that run it ([`Scenario::runs_middlebox`]).
pub fn apply(lab: &Lab, sc: &Scenario, middlebox: &Path) -> anyhow::Result<Applied> {
    let dir = crate::probe::TempDir::new("middlebox");
    let mut procs = Vec::new();
    for step in sc.steps {
        match *step {
            Step::Rule { v6, table, chain, args } => iptables(&lab.m, v6, table, chain, args)?,
            Step::RouterSysctl(kv) => run_ok(lab.m.cmd("sysctl").args(["-qw", kv]))?,
            Step::EndsSysctl(kv) => {
                for ns in [&lab.c, &lab.s] {
                    run_ok(ns.cmd("sysctl").args(["-qw", kv]))?;
                }
            }
            Step::ServerLinkMtu(mtu) => {
                let mtu = mtu.to_string();
                run_ok(lab.m.cmd("ip").args(["link", "set", ifname::MS, "mtu", &mtu]))?;
                run_ok(lab.s.cmd("ip").args(["link", "set", ifname::S, "mtu", &mtu]))?;
            }
            Step::Nfqueue(args) => {
                procs.push(start_nfqueue(lab, middlebox, &dir.0, procs.len(), args)?);
                for v6 in [false, true] {
                    iptables(
                        &lab.m,
                        v6,
                        "filter",
                        "FORWARD",
                        &["-p", "tcp", "-j", "NFQUEUE", "--queue-num", QUEUE],
                    )?;
                }
            }
            Step::NfqueueFor { args, matching } => {
                procs.push(start_nfqueue(lab, middlebox, &dir.0, procs.len(), args)?);
                let mut rule = matching.to_vec();
                rule.extend_from_slice(&["-j", "NFQUEUE", "--queue-num", QUEUE]);
                iptables(&lab.m, false, "filter", "FORWARD", &rule)?;
            }
            Step::RouterMtu { dev, mtu } => {
                run_ok(lab.m.cmd("ip").args(["link", "set", dev, "mtu", &mtu.to_string()]))?;
            }
            Step::Proxy(port) => {
                let p = PROXY_PORT.to_string();
                procs.push(start(lab, middlebox, &dir.0, procs.len(), &["proxy", "--port", &p])?);
                let dport = port.to_string();
                for dev in [ifname::M1, ifname::M2] {
                    iptables(
                        &lab.m,
                        false,
                        "nat",
                        "PREROUTING",
                        &["-i", dev, "-p", "tcp", "--dport", &dport, "-j", "REDIRECT", "--to-ports", &p],
                    )?;
                }
            }
        }
    }
    Ok(Applied { procs, _dir: dir })
}
