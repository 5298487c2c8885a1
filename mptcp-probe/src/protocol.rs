//! The test protocol shared by `serve` and `check`: ports, how a connection names its test, and
//! what the server reports about a test on its control port. One definition for both ends.

use std::{collections::BTreeMap, net::SocketAddr};

use mptcp_probe_model::{ConnectionView, HandshakeView, WireSummary};
use serde::{Deserialize, Serialize};

/// Version of this protocol; `check` refuses a server that speaks another.
pub const PROTOCOL_VERSION: u32 = 1;

/// Well-known ports middleboxes act on, and the server's own.
pub mod port {
    pub const FTP: u16 = 21;
    pub const HTTP: u16 = 80;
    pub const TLS: u16 = 443;
    pub const CONTROL: u16 = 8000;
    pub const BULK: u16 = 8001;
    pub const ECHO: u16 = 8002;
    /// FTP passive data connections use this range.
    pub const FTP_PASSIVE_FIRST: u16 = 30000;
    pub const FTP_PASSIVE_LAST: u16 = 30099;
}

/// HTTP request header carrying the test id.
pub const HTTP_TEST_HEADER: &str = "x-mptcp-probe-test";
/// FTP user names are `FTP_USER_PREFIX` + test id.
pub const FTP_USER_PREFIX: &str = "mpp-";
/// First line of a bulk or echo connection: `MPP1 <test-id> <mode> <bytes>\n`, where mode is
/// `up` (client sends `bytes`), `down` (server sends `bytes`) or `echo` (bytes is ignored).
pub const PREAMBLE_MAGIC: &str = "MPP1";
/// Longest preamble line the server reads.
pub const MAX_PREAMBLE: usize = 128;
/// Largest transfer one bulk test may ask for.
pub const MAX_BULK_BYTES: u64 = 64 * 1024 * 1024;

/// A test id: 1 to 64 of `[A-Za-z0-9_-]`. Anything else is refused by the server.
pub fn valid_test_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkMode {
    Up,
    Down,
    Echo,
}

/// A parsed preamble line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preamble {
    pub test_id: String,
    pub mode: BulkMode,
    pub bytes: u64,
}

impl Preamble {
    pub fn line(&self) -> String {
        let mode = match self.mode {
            BulkMode::Up => "up",
            BulkMode::Down => "down",
            BulkMode::Echo => "echo",
        };
        format!("{PREAMBLE_MAGIC} {} {mode} {}\n", self.test_id, self.bytes)
    }

    pub fn parse(line: &str) -> Result<Self, String> {
        let mut it = line.trim_end_matches(['\r', '\n']).split(' ');
        if it.next() != Some(PREAMBLE_MAGIC) {
            return Err(format!("not an {PREAMBLE_MAGIC} preamble"));
        }
        let test_id = it.next().filter(|id| valid_test_id(id)).ok_or("bad test id")?.to_string();
        let mode = match it.next() {
            Some("up") => BulkMode::Up,
            Some("down") => BulkMode::Down,
            Some("echo") => BulkMode::Echo,
            _ => return Err("bad mode".into()),
        };
        let bytes: u64 = it.next().and_then(|b| b.parse().ok()).ok_or("bad byte count")?;
        if bytes > MAX_BULK_BYTES {
            return Err(format!("at most {MAX_BULK_BYTES} bytes per test"));
        }
        if it.next().is_some() {
            return Err("trailing fields".into());
        }
        Ok(Self { test_id, mode, bytes })
    }
}

/// The deterministic payload both ends generate: byte `i` of a transfer.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 8)) as u8
}

/// Fills `buf` with the pattern starting at offset `start`.
pub fn fill_pattern(buf: &mut [u8], start: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(start + k as u64);
    }
}

/// The control port's answer for a test id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReport {
    pub protocol: u32,
    pub server_version: String,
    pub test_id: String,
    /// Whether the server had an observer running (SYN options seen on the wire).
    pub observer: bool,
    pub connections: Vec<ConnectionView>,
}

/// The control port's `/v1/info` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub protocol: u32,
    pub server_version: String,
    pub observer: bool,
    /// Ports by service name ("ftp", "http", "tls", "bulk", "echo", "control").
    pub ports: BTreeMap<String, u16>,
    /// Extra addresses the server announces with ADD_ADDR (for the add_addr test).
    pub announced: Vec<String>,
}

/// Where an end looks up what its observer saw of a connection's handshake. Implemented by the
/// observer service; `None` when no observer runs or it has not seen the connection.
pub trait HandshakeSource: Send + Sync {
    /// `local` and `peer` as this host's socket sees them.
    fn handshake(&self, local: SocketAddr, peer: SocketAddr) -> Option<HandshakeView>;

    /// What the wire showed of the whole connection so far: the data segments received and, if
    /// MPTCP fell back, why.
    fn wire(&self, _local: SocketAddr, _peer: SocketAddr) -> Option<WireSummary> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_round_trips_and_rejects_garbage() {
        let p = Preamble { test_id: "abc-1_2".into(), mode: BulkMode::Down, bytes: 4096 };
        assert_eq!(Preamble::parse(&p.line()), Ok(p));
        assert!(Preamble::parse("GET / HTTP/1.1\r\n").is_err());
        assert!(Preamble::parse("MPP1 a/b up 1\n").is_err());
        assert!(Preamble::parse("MPP1 id sideways 1\n").is_err());
        assert!(Preamble::parse(&format!("MPP1 id up {}\n", MAX_BULK_BYTES + 1)).is_err());
        assert!(Preamble::parse("MPP1 id up 1 extra\n").is_err());
    }

    #[test]
    fn test_ids_are_short_and_plain() {
        assert!(valid_test_id("3f2a-http-mptcp"));
        assert!(!valid_test_id(""));
        assert!(!valid_test_id(&"a".repeat(65)));
        assert!(!valid_test_id("a b"));
        assert!(!valid_test_id("../x"));
    }

    #[test]
    fn pattern_is_deterministic_from_any_offset() {
        let mut a = [0u8; 300];
        let mut b = [0u8; 100];
        fill_pattern(&mut a, 0);
        fill_pattern(&mut b, 200);
        assert_eq!(&a[200..], &b[..]);
        assert_ne!(a[1], a[2]);
    }
}
