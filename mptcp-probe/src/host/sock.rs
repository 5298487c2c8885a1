//! MPTCP sockets (`IPPROTO_MPTCP`) and the kernel's per-socket view of them.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
};

use mptcp_probe_common::proto::IPPROTO_MPTCP;
pub use mptcp_probe_model::Transport;
use socket2::{Domain, Protocol, Socket, Type};

pub const SOL_MPTCP: i32 = 284;
pub const TCP_IS_MPTCP: i32 = 43;
pub const MPTCP_INFO: i32 = 1;
pub const MPTCP_SUBFLOW_ADDRS: i32 = 3;
pub const MPTCP_INFO_FLAG_FALLBACK: u32 = 1;

/// An address as one end names it: IPv4-mapped IPv6 addresses (from dual-stack sockets) as IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A stream socket of the given transport for `addr`'s family.
pub fn socket(addr: &SocketAddr, transport: Transport) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let proto = match transport {
        Transport::Mptcp => Protocol::from(i32::from(IPPROTO_MPTCP)),
        Transport::Tcp => Protocol::TCP,
    };
    Socket::new(domain, Type::STREAM.cloexec(), Some(proto)).map_err(|e| {
        if transport == Transport::Mptcp && e.raw_os_error() == Some(libc::EPROTONOSUPPORT) {
            io::Error::new(
                e.kind(),
                "MPTCP sockets are not supported here (kernel without CONFIG_MPTCP, or net.mptcp.enabled=0)",
            )
        } else {
            e
        }
    })
}

/// A listening socket, dual-stack for `[::]`; an MPTCP listener accepts plain TCP too.
pub fn listener(addr: &SocketAddr, transport: Transport, backlog: i32) -> io::Result<std::net::TcpListener> {
    let s = socket(addr, transport)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        s.set_only_v6(false)?;
    }
    s.bind(&(*addr).into())?;
    s.listen(backlog)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn getsockopt<T: Default>(fd: RawFd, level: i32, name: i32) -> io::Result<(T, usize)> {
    let mut v = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: valid fd, buffer of size_of::<T>() bytes and its length.
    let r = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut T).cast(), &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((v, len as usize))
}

/// `TCP_IS_MPTCP`: true while the connection speaks MPTCP, false after fallback or for TCP.
/// Kernels before 6.10 do not know it: there `MPTCP_INFO`, which an MPTCP socket answers until
/// it falls back, says it instead.
pub fn is_mptcp(fd: &impl AsRawFd) -> Option<bool> {
    is_mptcp_or(fd, || mptcp_info(fd))
}

/// [`is_mptcp`], with `info` giving `MPTCP_INFO` where `TCP_IS_MPTCP` is not known (a caller
/// that has read it already passes it on).
fn is_mptcp_or(fd: &impl AsRawFd, info: impl FnOnce() -> Option<MptcpInfo>) -> Option<bool> {
    match getsockopt::<i32>(fd.as_raw_fd(), libc::IPPROTO_TCP, TCP_IS_MPTCP) {
        Ok((v, _)) => Some(v == 1),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP)) => {
            Some(info().is_some_and(|info| info.flags & MPTCP_INFO_FLAG_FALLBACK == 0))
        }
        Err(_) => None,
    }
}

/// `struct mptcp_info`, the fields this tool reads (the kernel fills what it has).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MptcpInfo {
    pub subflows: u8,
    pub add_addr_signal: u8,
    pub add_addr_accepted: u8,
    pub subflows_max: u8,
    pub add_addr_signal_max: u8,
    pub add_addr_accepted_max: u8,
    pub flags: u32,
    pub token: u32,
    pub write_seq: u64,
    pub snd_una: u64,
    pub rcv_nxt: u64,
    pub local_addr_used: u8,
    pub local_addr_max: u8,
    pub csum_enabled: u8,
    pub retransmits: u32,
    pub bytes_retrans: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_acked: u64,
    pub subflows_total: u8,
    pub _reserved: [u8; 3],
    pub last_data_sent: u32,
    pub last_data_recv: u32,
    pub last_ack_recv: u32,
}

impl MptcpInfo {
    /// Every subflow of the connection, the initial one included: `subflows` counts those beyond
    /// the first; `subflows_total` (Linux 6.10+) counts them all.
    pub fn all_subflows(&self) -> u8 {
        if self.subflows_total > 0 {
            self.subflows_total
        } else {
            self.subflows.saturating_add(1)
        }
    }
}

/// `MPTCP_INFO`; None after fallback (EOPNOTSUPP) or for plain TCP.
pub fn mptcp_info(fd: &impl AsRawFd) -> Option<MptcpInfo> {
    getsockopt::<MptcpInfo>(fd.as_raw_fd(), SOL_MPTCP, MPTCP_INFO).ok().map(|(v, _)| v)
}

/// Parses a `sockaddr_in`/`sockaddr_in6` held in a `sockaddr_storage`-sized slot.
fn sockaddr_at(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]) as i32;
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        libc::AF_INET => Some(SocketAddr::new(std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7]).into(), port)),
        libc::AF_INET6 => {
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), port))
        }
        _ => None,
    }
}

/// The getsockopts that answer with a `struct mptcp_subflow_data` header and one entry per
/// subflow (`MPTCP_TCPINFO`, `MPTCP_SUBFLOW_ADDRS`): the entries (at most 8) as the kernel wrote
/// them, each `elem` bytes or what the kernel has of them; None when refused (fallback, TCP).
fn subflow_entries(fd: &impl AsRawFd, optname: i32, elem: usize) -> Option<Vec<Vec<u8>>> {
    const HEADER: usize = 16;
    const MAX_SUBFLOWS: usize = 8;
    let mut buf = vec![0u8; HEADER + MAX_SUBFLOWS * elem];
    buf[0..4].copy_from_slice(&(HEADER as u32).to_ne_bytes());
    buf[12..16].copy_from_slice(&(elem as u32).to_ne_bytes());
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: valid fd, buffer and length; the kernel writes at most `len` bytes.
    let r =
        unsafe { libc::getsockopt(fd.as_raw_fd(), SOL_MPTCP, optname, buf.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return None;
    }
    let n = u32::from_ne_bytes(buf[4..8].try_into().ok()?) as usize;
    // The kernel lays entries out at the size both sides know (its own if smaller than asked).
    let size = u32::from_ne_bytes(buf[12..16].try_into().ok()?) as usize;
    if size == 0 {
        return None;
    }
    let written = &buf[..(len as usize).min(buf.len())];
    Some(
        (0..n.min(MAX_SUBFLOWS))
            .map_while(|i| written.get(HEADER + i * size..HEADER + (i + 1) * size))
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

/// `MPTCP_SUBFLOW_ADDRS`: (local, remote) of each subflow; None after fallback or for TCP.
pub fn subflow_addrs(fd: &impl AsRawFd) -> Option<Vec<(SocketAddr, SocketAddr)>> {
    const SLOT: usize = 128;
    let entries = subflow_entries(fd, MPTCP_SUBFLOW_ADDRS, 2 * SLOT)?;
    Some(
        entries
            .iter()
            .filter_map(|e| Some((sockaddr_at(e.get(..SLOT)?)?, sockaddr_at(e.get(SLOT..2 * SLOT)?)?)))
            .collect(),
    )
}

/// `MPTCP_TCPINFO`: how many subflows have completed their handshake (a join whose SYN went
/// unanswered is listed by the kernel, and counted by `MPTCP_INFO`, while it is still trying).
pub fn synchronized_subflows(fd: &impl AsRawFd) -> Option<u8> {
    const MPTCP_TCPINFO: i32 = 2;
    let entries = subflow_entries(fd, MPTCP_TCPINFO, size_of::<libc::tcp_info>())?;
    // tcpi_state is the first byte of each entry: SYN_SENT 2, SYN_RECV 3, CLOSE 7 did not (or no
    // longer) carry data.
    Some(entries.iter().filter_map(|e| e.first()).filter(|state| !matches!(state, 2 | 3 | 7)).count() as u8)
}

/// `TCP_INFO` of a socket (of an MPTCP socket: its first subflow's).
pub fn tcp_info(fd: &impl AsRawFd) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain data; zero is a valid value.
    let mut v: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: valid fd, buffer and length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut v as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// Sending and receiving MSS from `TCP_INFO`.
pub fn mss(fd: &impl AsRawFd) -> Option<(u32, u32)> {
    tcp_info(fd).map(|v| (v.tcpi_snd_mss, v.tcpi_rcv_mss))
}

/// The socket-level facts both ends record about a connection.
pub fn fill_view(fd: &impl AsRawFd, view: &mut mptcp_probe_model::ConnectionView) {
    let info = mptcp_info(fd);
    view.is_mptcp = is_mptcp_or(fd, || info);
    if let Some(info) = info {
        view.fallback = Some(info.flags & MPTCP_INFO_FLAG_FALLBACK != 0);
        // Keep the largest values seen: subflows come and go over a connection's life.
        let total = info.all_subflows();
        // Only subflows that completed their handshake, where the kernel says which those are.
        let total = synchronized_subflows(fd).map(|n| n.min(total)).unwrap_or(total);
        view.subflows = Some(total.max(view.subflows.unwrap_or(0)));
        view.add_addr_signal = Some(info.add_addr_signal.max(view.add_addr_signal.unwrap_or(0)));
        view.add_addr_accepted = Some(info.add_addr_accepted.max(view.add_addr_accepted.unwrap_or(0)));
    } else if view.is_mptcp == Some(false) {
        view.fallback = Some(true);
    }
    if let Some(addrs) = subflow_addrs(fd) {
        // Keep the fullest list seen: subflows close before the connection does.
        if addrs.len() >= view.subflow_addrs.len() {
            view.subflow_addrs = addrs;
        }
    }
    if let Some((snd, rcv)) = mss(fd) {
        view.snd_mss = Some(snd);
        view.rcv_mss = Some(rcv);
    }
}

/// A second descriptor of a socket, to read its final state after the stream is consumed.
pub fn dup(fd: &impl std::os::fd::AsFd) -> Option<std::os::fd::OwnedFd> {
    fd.as_fd().try_clone_to_owned().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mptcp_info_layout_matches_the_kernel_uapi() {
        // struct mptcp_info in include/uapi/linux/mptcp.h: 80 bytes up to mptcpi_bytes_acked,
        // then subflows_total, endp_laminar_max, reserved[2], three u32 timestamps.
        assert_eq!(std::mem::offset_of!(MptcpInfo, flags), 8);
        assert_eq!(std::mem::offset_of!(MptcpInfo, write_seq), 16);
        assert_eq!(std::mem::offset_of!(MptcpInfo, retransmits), 44);
        assert_eq!(std::mem::offset_of!(MptcpInfo, bytes_acked), 72);
        assert_eq!(std::mem::offset_of!(MptcpInfo, subflows_total), 80);
        assert_eq!(std::mem::offset_of!(MptcpInfo, last_data_sent), 84);
        assert_eq!(size_of::<MptcpInfo>(), 96);
    }

    #[test]
    fn loopback_mptcp_connection_reports_mptcp() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let l = match listener(&addr, Transport::Mptcp, 4) {
            Ok(l) => l,
            Err(e) => panic!("MPTCP listener on loopback: {e}"),
        };
        l.set_nonblocking(false).unwrap();
        let target = l.local_addr().unwrap();
        let c = socket(&target, Transport::Mptcp).unwrap();
        c.connect(&target.into()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(is_mptcp(&c), Some(true));
        assert_eq!(is_mptcp(&s), Some(true));
        let info = mptcp_info(&c).expect("MPTCP_INFO on an MPTCP socket");
        assert_eq!(info.flags & MPTCP_INFO_FLAG_FALLBACK, 0);
        let subflows = subflow_addrs(&c).expect("MPTCP_SUBFLOW_ADDRS on an MPTCP socket");
        assert_eq!(subflows, vec![(c.local_addr().unwrap().as_socket().unwrap(), target)]);
        assert_eq!(synchronized_subflows(&c), Some(1), "one established subflow");
        let t = socket(&target, Transport::Tcp).unwrap();
        t.connect(&target.into()).unwrap();
        let (ts, _) = l.accept().unwrap();
        assert_eq!(is_mptcp(&t), Some(false), "plain TCP client");
        assert_eq!(is_mptcp(&ts), Some(false), "MPTCP listener, plain TCP peer: fallback");
    }
}
