//! The ftp test's client: a control connection on port 21, a passive-mode download (PASV) and an
//! active-mode upload (PORT). Application-level gateways in middleboxes rewrite the address in
//! PORT and PASV, changing the payload (and its length) under MPTCP's feet.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{tcp::OwnedWriteHalf, TcpListener},
};

use super::client::{
    connect, finish, open, pattern_digest, read_digest, send_pattern, sha256_hex, view, Run,
};
use mptcp_probe_model::{ConnectionKind, Part, Transport};

use crate::{host::sock, protocol::FTP_USER_PREFIX};

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;

/// Reads one (possibly multi-line) reply: returns the code and the text.
async fn reply(r: &mut Reader) -> std::io::Result<(u16, String)> {
    let mut text = String::new();
    let mut line = String::new();
    line.clear();
    (&mut *r).take(1024).read_line(&mut line).await?;
    if line.len() < 4 {
        return Err(std::io::Error::other(format!("malformed FTP reply {line:?}")));
    }
    let code: u16 =
        line[..3].parse().map_err(|_| std::io::Error::other(format!("malformed FTP reply {line:?}")))?;
    text.push_str(&line);
    if line.as_bytes()[3] == b'-' {
        // Multi-line: until "<code> ".
        let end = format!("{code} ");
        for _ in 0..64 {
            line.clear();
            (&mut *r).take(1024).read_line(&mut line).await?;
            text.push_str(&line);
            if line.starts_with(&end) || line.is_empty() {
                break;
            }
        }
    }
    Ok((code, text))
}

async fn command(r: &mut Reader, w: &mut OwnedWriteHalf, cmd: &str, want: u16) -> std::io::Result<String> {
    w.write_all(format!("{cmd}\r\n").as_bytes()).await?;
    let (code, text) = reply(r).await?;
    if code / 100 != want / 100 {
        return Err(std::io::Error::other(format!(
            "{} answered {}",
            cmd.split(' ').next().unwrap_or(cmd),
            text.trim()
        )));
    }
    Ok(text)
}

/// Parses a 227 reply: `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`.
pub fn parse_pasv(text: &str) -> Option<SocketAddr> {
    let inner = text.split('(').nth(1)?.split(')').next()?;
    let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().ok()).collect::<Option<_>>()?;
    if n.len() != 6 || n.iter().any(|x| *x > 255) {
        return None;
    }
    let ip = IpAddr::from([n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8]);
    Some(SocketAddr::new(ip, n[4] * 256 + n[5]))
}

/// Parses a 229 reply: `229 Entering Extended Passive Mode (|||port|)`.
pub fn parse_epsv(text: &str) -> Option<u16> {
    let inner = text.split('(').nth(1)?.split(')').next()?;
    inner.trim_matches('|').parse().ok()
}

/// The PORT (IPv4) or EPRT argument for a local listening address.
pub fn port_argument(addr: SocketAddr) -> (String, String) {
    match addr {
        SocketAddr::V4(a) => {
            let o = a.ip().octets();
            (
                "PORT".into(),
                format!("{},{},{},{},{},{}", o[0], o[1], o[2], o[3], a.port() >> 8, a.port() & 0xff),
            )
        }
        SocketAddr::V6(a) => ("EPRT".into(), format!("|2|{}|{}|", a.ip(), a.port())),
    }
}

pub async fn ftp(
    addr: SocketAddr,
    transport: Transport,
    test_id: &str,
    bytes: u64,
    timeout: Duration,
) -> Run {
    let (mut run, control, fd) = match open(addr, transport, timeout, ConnectionKind::FtpControl).await {
        Ok(opened) => opened,
        Err(failed) => return failed,
    };
    let local = control.local_addr().ok();
    let res = tokio::time::timeout(timeout * 4, async {
        let (rd, mut wr) = control.into_split();
        let mut rd = BufReader::new(rd);
        let (code, greeting) = reply(&mut rd).await?;
        if code != 220 {
            return Err(std::io::Error::other(format!("the server greeted with {}", greeting.trim())));
        }
        command(&mut rd, &mut wr, &format!("USER {FTP_USER_PREFIX}{test_id}"), 331).await?;
        command(&mut rd, &mut wr, "PASS probe", 230).await?;
        command(&mut rd, &mut wr, "TYPE I", 200).await?;

        // Passive download.
        let data_addr = if addr.is_ipv4() {
            let text = command(&mut rd, &mut wr, "PASV", 227).await?;
            let a = parse_pasv(&text)
                .ok_or_else(|| std::io::Error::other(format!("unreadable PASV reply {text:?}")))?;
            run.sent.push((Part::PasvReply, sha256_hex(text.trim().as_bytes())));
            // An ALG may rewrite the address; the data still goes to the server we talk to.
            SocketAddr::new(addr.ip(), a.port())
        } else {
            let text = command(&mut rd, &mut wr, "EPSV", 229).await?;
            let p = parse_epsv(&text)
                .ok_or_else(|| std::io::Error::other(format!("unreadable EPSV reply {text:?}")))?;
            SocketAddr::new(addr.ip(), p)
        };
        let mut data = connect(data_addr, transport, timeout).await?;
        run.connections.push(view(ConnectionKind::FtpData, &data));
        wr.write_all(format!("RETR probe-{bytes}\r\n").as_bytes()).await?;
        let (code, text) = reply(&mut rd).await?;
        if code / 100 != 1 {
            return Err(std::io::Error::other(format!("RETR answered {}", text.trim())));
        }
        let (digest, _) = read_digest(&mut data).await?;
        drop(data);
        run.received.push((Part::Retr, digest, pattern_digest(bytes)));
        let (code, text) = reply(&mut rd).await?;
        if code != 226 {
            return Err(std::io::Error::other(format!("RETR ended with {}", text.trim())));
        }

        // Active upload: the server connects back to us (over the test's transport: a plain-TCP
        // test stays plain TCP); ALGs rewrite this command.
        let bind_ip = local.map(|l| l.ip()).unwrap_or(addr.ip());
        let listener = TcpListener::from_std(sock::listener(&SocketAddr::new(bind_ip, 0), transport, 1)?)?;
        let (cmd, arg) = port_argument(listener.local_addr()?);
        command(&mut rd, &mut wr, &format!("{cmd} {arg}"), 200).await?;
        run.sent.push((Part::PortCommand, sha256_hex(arg.as_bytes())));
        wr.write_all(b"STOR probe-upload\r\n").await?;
        let (mut up, _) = tokio::time::timeout(timeout, listener.accept()).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the server did not connect back (PORT)")
        })??;
        run.connections.push(view(ConnectionKind::FtpData, &up));
        let (code, text) = reply(&mut rd).await?;
        if code / 100 != 1 {
            return Err(std::io::Error::other(format!("STOR answered {}", text.trim())));
        }
        send_pattern(&mut up, bytes).await?;
        up.shutdown().await?;
        drop(up);
        run.sent.push((Part::Data, pattern_digest(bytes)));
        let (code, text) = reply(&mut rd).await?;
        if code != 226 {
            return Err(std::io::Error::other(format!("STOR ended with {}", text.trim())));
        }
        let _ = command(&mut rd, &mut wr, "QUIT", 221).await;
        Ok(())
    })
    .await;
    finish(&mut run, res, fd.as_ref());
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasv_and_epsv_replies_parse() {
        assert_eq!(
            parse_pasv("227 Entering Passive Mode (203,0,113,2,117,48).\r\n"),
            Some("203.0.113.2:30000".parse().unwrap())
        );
        assert_eq!(parse_pasv("227 no address"), None);
        assert_eq!(parse_pasv("227 (1,2,3,4,5)"), None);
        assert_eq!(parse_pasv("227 (1,2,3,4,5,256)"), None);
        assert_eq!(parse_epsv("229 Entering Extended Passive Mode (|||30001|)\r\n"), Some(30001));
    }

    #[test]
    fn port_and_eprt_arguments() {
        assert_eq!(
            port_argument("192.0.2.1:40000".parse().unwrap()),
            ("PORT".into(), "192,0,2,1,156,64".into())
        );
        assert_eq!(
            port_argument("[2001:db8:1::1]:40000".parse().unwrap()),
            ("EPRT".into(), "|2|2001:db8:1::1|40000|".into())
        );
    }
}
