//! Bulk and echo connections (plain on their own ports, or inside TLS): a preamble line names the
//! test, the mode and the size, then data flows.
//!
//! - `up`: the client sends exactly `bytes`; the server answers `OK <bytes> <sha256hex>\n` (or
//!   `ERR short transfer: <got> of <bytes> bytes\n`).
//! - `down`: the server sends `bytes` pattern bytes and closes its side.
//! - `echo`: everything that arrives goes back, until the client closes its side (at most
//!   `MAX_BULK_BYTES`).
//!
//! A bad preamble gets `ERR <reason>\n` and the connection is closed. The view is complete before
//! the server's last word (the `OK` line, or its FIN), so a client that waits for it can query the
//! control port at once.

use std::os::fd::RawFd;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::{
    read_line,
    store::{self, Slot},
    LineError, Recorder,
};
use mptcp_probe_model::{ConnectionView, Part};

use crate::protocol::{BulkMode, Preamble, MAX_BULK_BYTES, MAX_PREAMBLE};

const CHUNK: usize = 64 * 1024;

/// A transfer's stored view, with the socket to take its final state from.
struct Transfer<'a> {
    rec: &'a Recorder,
    fd: RawFd,
    slot: Slot,
}

impl Transfer<'_> {
    /// Records the outcome and the socket's state as it is now.
    fn settle(&self, f: impl FnOnce(&mut ConnectionView)) {
        store::with(&self.slot, f);
        self.rec.refresh(self.fd);
    }
}

/// Serves one bulk or echo connection. `fd` is the socket under `stream` (which may be TLS).
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, rec: &Recorder, fd: RawFd) {
    let mut s = BufReader::new(stream);
    let pre = match read_preamble(&mut s).await {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(reason) => {
            refuse(&mut s, &reason).await;
            return;
        }
    };
    let Some(slot) = rec.attach(&pre.test_id) else {
        refuse(&mut s, "too many connections for this test").await;
        return;
    };
    let mode = match pre.mode {
        BulkMode::Up => "up",
        BulkMode::Down => "down",
        BulkMode::Echo => "echo",
    };
    store::with(&slot, |v| {
        v.notes.insert("mode".into(), mode.into());
        v.notes.insert("requested_bytes".into(), pre.bytes.to_string());
    });
    let t = Transfer { rec, fd, slot };
    let res = match pre.mode {
        BulkMode::Up => up(&mut s, &t, pre.bytes).await,
        BulkMode::Down => down(&mut s, &t, pre.bytes).await,
        BulkMode::Echo => echo(&mut s, &t).await,
    };
    if let Err(e) = res {
        tracing::debug!("{mode} transfer of test {}: {e}", pre.test_id);
        t.settle(|v| v.error = Some(e.to_string()));
    }
}

/// The preamble, None when the client closed without one, or the reason it is refused.
async fn read_preamble<S: AsyncRead + Unpin>(s: &mut BufReader<S>) -> Result<Option<Preamble>, String> {
    let line = match read_line(s, MAX_PREAMBLE).await {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(None),
        Err(LineError::TooLong(n)) => return Err(format!("preamble longer than {n} bytes")),
        Err(LineError::Io(e)) => return Err(format!("preamble: {e}")),
    };
    let text = std::str::from_utf8(&line).map_err(|_| "the preamble is not text".to_string())?;
    Preamble::parse(text).map(Some)
}

async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, reason: &str) {
    // The client may be gone already; nothing to do about it.
    let _ = s.write_all(format!("ERR {reason}\n").as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn up<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    t: &Transfer<'_>,
    bytes: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut got = 0u64;
    while got < bytes {
        let want = (bytes - got).min(CHUNK as u64) as usize;
        let n = s.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        got += n as u64;
    }
    let digest = hex::encode(hash.finalize());
    let reply = if got == bytes {
        t.settle(|v| {
            v.bytes_received = got;
            v.digests.insert(Part::Data, digest.clone());
        });
        format!("OK {bytes} {digest}\n")
    } else {
        let msg = format!("short transfer: {got} of {bytes} bytes");
        t.settle(|v| {
            v.bytes_received = got;
            v.digests.insert(Part::Data, digest.clone());
            v.error = Some(msg.clone());
        });
        format!("ERR {msg}\n")
    };
    s.write_all(reply.as_bytes()).await?;
    s.shutdown().await
}

async fn down<S: AsyncWrite + Unpin>(s: &mut S, t: &Transfer<'_>, bytes: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut sent = 0u64;
    while sent < bytes {
        let k = (bytes - sent).min(CHUNK as u64) as usize;
        crate::protocol::fill_pattern(&mut buf[..k], sent);
        s.write_all(&buf[..k]).await?;
        hash.update(&buf[..k]);
        sent += k as u64;
    }
    s.flush().await?;
    let digest = hex::encode(hash.finalize());
    t.settle(|v| {
        v.bytes_sent = sent;
        v.digests.insert(Part::Sent, digest);
    });
    s.shutdown().await
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, t: &Transfer<'_>) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut total = 0u64;
    let mut error = None;
    loop {
        let room = MAX_BULK_BYTES - total;
        if room == 0 {
            error = Some(format!("echo stopped after {MAX_BULK_BYTES} bytes"));
            break;
        }
        let n = s.read(&mut buf[..room.min(CHUNK as u64) as usize]).await?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await?;
        s.flush().await?;
        hash.update(&buf[..n]);
        total += n as u64;
    }
    let digest = hex::encode(hash.finalize());
    t.settle(|v| {
        v.bytes_received = total;
        v.bytes_sent = total;
        v.digests.insert(Part::Data, digest.clone());
        v.digests.insert(Part::Sent, digest);
        v.error = error;
    });
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn preamble_of(input: &[u8]) -> Result<Option<Preamble>, String> {
        let (mut a, b) = tokio::io::duplex(4096);
        a.write_all(input).await.unwrap();
        drop(a);
        let mut r = BufReader::new(b);
        read_preamble(&mut r).await
    }

    #[tokio::test]
    async fn preambles_are_read_up_to_their_newline_only() {
        let (mut a, b) = tokio::io::duplex(4096);
        a.write_all(b"MPP1 t-1 up 5\nhello").await.unwrap();
        drop(a);
        let mut r = BufReader::new(b);
        let p = read_preamble(&mut r).await.unwrap().unwrap();
        assert_eq!(p, Preamble { test_id: "t-1".into(), mode: BulkMode::Up, bytes: 5 });
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"hello", "the data after the preamble stays for the transfer");
    }

    #[tokio::test]
    async fn bad_preambles_are_refused_with_a_reason() {
        assert_eq!(preamble_of(b"").await, Ok(None));
        let long = format!("MPP1 {} up 1\n", "a".repeat(MAX_PREAMBLE));
        assert_eq!(
            preamble_of(long.as_bytes()).await,
            Err(format!("preamble longer than {MAX_PREAMBLE} bytes"))
        );
        assert_eq!(preamble_of(b"GET / HTTP/1.1\r\n").await, Err("not an MPP1 preamble".into()));
        assert_eq!(
            preamble_of(b"MPP1 t down 99999999999\n").await,
            Err(format!("at most {MAX_BULK_BYTES} bytes per test"))
        );
        assert_eq!(preamble_of(b"MPP1 t echo 0\xff\n").await, Err("the preamble is not text".into()));
        assert!(preamble_of(b"MPP1 t up 1").await.unwrap_err().contains("stream ended inside a line"));
    }
}
