//! The kernel's per-socket view of MPTCP connections, as `ss -M` shows it: a sock_diag dump
//! (`NETLINK_SOCK_DIAG`, `inet_diag_req_v2` with `INET_DIAG_REQ_PROTOCOL` = `IPPROTO_MPTCP`) of
//! every MPTCP socket of the namespace the netlink socket was opened in, with its
//! `struct mptcp_info`. The socket stays in that namespace whichever thread uses it.
//!
//! Hand-written on libc: the request needs the `INET_DIAG_REQ_PROTOCOL` attribute (the
//! protocol, 262, does not fit the request's u8), which the netlink crates' typed inet_diag
//! requests do not carry; the messages are three fixed layouts and one attribute.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use mptcp_probe_common::proto::IPPROTO_MPTCP;

use super::sock::{MptcpInfo, MPTCP_INFO_FLAG_FALLBACK};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
/// `INET_DIAG_INFO`: for an MPTCP socket, its `struct mptcp_info`.
const INET_DIAG_INFO: u16 = 2;
/// `INET_DIAG_REQ_PROTOCOL`: the protocol as a u32 attribute of the request.
const INET_DIAG_REQ_PROTOCOL: u16 = 3;
const TCP_LISTEN: u32 = 10;
/// The state of an established connection's socket.
pub const TCP_ESTABLISHED: u8 = 1;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;

/// One MPTCP connection as the kernel holds it.
#[derive(Clone, Copy, Debug)]
pub struct MptcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The TCP state of the MPTCP socket (`TCP_ESTABLISHED` = 1, ...).
    pub state: u8,
    pub info: MptcpInfo,
    /// Bytes of `mptcp_info` the kernel gave: the retransmission and byte counts are there from
    /// [`INFO_WITH_BYTES`] (Linux 6.5) on.
    pub info_len: usize,
}

/// `mptcp_info` up to `mptcpi_bytes_acked`: the kernel counts retransmissions and bytes.
pub const INFO_WITH_BYTES: usize = 80;

impl MptcpSocket {
    /// The connection fell back to TCP.
    pub fn fallback(&self) -> bool {
        self.info.flags & MPTCP_INFO_FLAG_FALLBACK != 0
    }
}

/// A sock_diag socket of the namespace it was opened in.
pub struct Diag {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// The dump request for one address family: every state but LISTEN, with `mptcp_info`.
fn request(family: u8, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR + REQ_LEN + 8;
    let mut b = Vec::with_capacity(len);
    b.extend((len as u32).to_ne_bytes());
    b.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend(seq.to_ne_bytes());
    b.extend(0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol (the low byte; the attribute says the rest), the
    // extensions wanted (INET_DIAG_INFO), pad, states, then a zeroed socket id (48 bytes).
    b.extend([family, IPPROTO_MPTCP as u8, 1 << (INET_DIAG_INFO - 1), 0]);
    b.extend((!(1u32 << TCP_LISTEN)).to_ne_bytes());
    b.extend([0u8; 48]);
    b.extend(8u16.to_ne_bytes());
    b.extend(INET_DIAG_REQ_PROTOCOL.to_ne_bytes());
    b.extend(u32::from(IPPROTO_MPTCP).to_ne_bytes());
    b
}

fn addr(family: u8, raw: &[u8], port: u16) -> Option<SocketAddr> {
    let ip = match i32::from(family) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(raw.get(..16)?).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

/// One `inet_diag_msg` with its attributes.
fn parse_socket(m: &[u8]) -> Option<MptcpSocket> {
    if m.len() < MSG_LEN {
        return None;
    }
    let family = m[0];
    let state = m[1];
    let sport = u16::from_be_bytes([m[4], m[5]]);
    let dport = u16::from_be_bytes([m[6], m[7]]);
    let local = addr(family, &m[8..24], sport)?;
    let remote = addr(family, &m[24..40], dport)?;
    let mut info = MptcpInfo::default();
    let mut info_len = 0;
    let mut at = MSG_LEN;
    while at + 4 <= m.len() {
        let len = usize::from(u16::from_ne_bytes([m[at], m[at + 1]]));
        let kind = u16::from_ne_bytes([m[at + 2], m[at + 3]]) & 0x3fff;
        if len < 4 || at + len > m.len() {
            break;
        }
        if kind == INET_DIAG_INFO {
            let payload = &m[at + 4..at + len];
            let n = payload.len().min(size_of::<MptcpInfo>());
            info_len = payload.len();
            // SAFETY: MptcpInfo is repr(C) plain data, every bit pattern valid; n bytes fit.
            unsafe {
                std::ptr::copy_nonoverlapping(payload.as_ptr(), (&mut info as *mut MptcpInfo).cast::<u8>(), n)
            };
        }
        at += align4(len);
    }
    Some(MptcpSocket { local, remote, state, info, info_len })
}

impl Diag {
    /// A sock_diag socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just made and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A scrape waits for the dump: never more than a few seconds.
        let timeout = libc::timeval { tv_sec: 3, tv_usec: 0 };
        // SAFETY: setting SO_RCVTIMEO from a timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Self { fd, seq: 0 })
    }

    /// Every MPTCP socket of the namespace but the listening ones, IPv4 and IPv6.
    pub fn mptcp_sockets(&mut self) -> io::Result<Vec<MptcpSocket>> {
        let mut out = Vec::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            self.dump(family, &mut out)?;
        }
        Ok(out)
    }

    fn dump(&mut self, family: u8, out: &mut Vec<MptcpSocket>) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(family, self.seq);
        // SAFETY: a buffer of req.len() bytes to a netlink socket (the kernel is the peer).
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        // Bounded: a dump ends with NLMSG_DONE; a kernel that never sends it is cut off.
        for _ in 0..100_000 {
            // SAFETY: receiving into a buffer of buf.len() bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + NLMSG_HDR <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
                if len < NLMSG_HDR || at + len > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a truncated sock_diag message"));
                }
                let body = &buf[at + NLMSG_HDR..at + len];
                at += align4(len);
                if seq != self.seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let Some(code) =
                            body.get(..4).map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                        else {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "a truncated netlink error",
                            ));
                        };
                        if code == 0 {
                            return Ok(());
                        }
                        // A kernel without MPTCP diag (CONFIG_INET_MPTCP_DIAG off) answers ENOENT.
                        return Err(io::Error::from_raw_os_error(code.wrapping_neg()));
                    }
                    SOCK_DIAG_BY_FAMILY => out.extend(parse_socket(body)),
                    _ => {}
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "the sock_diag dump did not end"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sock::{listener, socket, Transport};

    #[test]
    fn the_request_is_as_the_kernel_reads_it() {
        let r = request(libc::AF_INET as u8, 7);
        assert_eq!(r.len(), NLMSG_HDR + REQ_LEN + 8);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize, r.len());
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], 6, "262 & 0xff: the attribute carries the protocol");
        assert_eq!(u32::from_ne_bytes(r[r.len() - 4..].try_into().unwrap()), 262);
    }

    #[test]
    fn a_loopback_mptcp_connection_is_in_the_dump_with_its_info() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let l = listener(&addr, Transport::Mptcp, 4).expect("an MPTCP listener on loopback");
        l.set_nonblocking(false).unwrap();
        let target = l.local_addr().unwrap();
        let c = socket(&target, Transport::Mptcp).unwrap();
        c.connect(&target.into()).unwrap();
        let (_s, _) = l.accept().unwrap();
        let local = c.local_addr().unwrap().as_socket().unwrap();
        let mut d = Diag::open().expect("a sock_diag socket");
        let all = d.mptcp_sockets().expect("the dump");
        let mine =
            all.iter().find(|s| s.local == local && s.remote == target).unwrap_or_else(|| panic!("{all:?}"));
        assert_eq!(mine.state, TCP_ESTABLISHED);
        assert!(!mine.fallback());
        assert_eq!(mine.info.token, crate::host::sock::mptcp_info(&c).unwrap().token);
        assert!(all.iter().any(|s| s.local == target && s.remote == local), "the server's end too");
        assert!(!all.iter().any(|s| s.local == target && s.remote.port() == 0), "no listener");
    }
}
