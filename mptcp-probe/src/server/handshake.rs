//! What the server saw of a connection's handshake: from the observer when one runs, else from
//! the SYN the kernel saved for the listener (`TCP_SAVE_SYN`), where it keeps one.
//!
//! On Linux 6.18 MPTCP listeners refuse `TCP_SAVE_SYN` (ENOPROTOOPT), and an MPTCP listener is
//! what every test port uses; the saved SYN is read wherever the kernel accepts the option, so a
//! kernel that learns it gives handshake views without an observer.

use std::{
    io,
    net::SocketAddr,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use mptcp_probe_common::options::{option_area, parse_tcp_options};

use mptcp_probe_model::{HandshakeView, Subtype, ViewSource};

use crate::protocol::HandshakeSource;

const TCP_SAVE_SYN: libc::c_int = 27;
const TCP_SAVED_SYN: libc::c_int = 28;
/// Largest saved SYN: an IPv6 header with extension headers and a full TCP header.
const MAX_SAVED_SYN: usize = 512;

/// How long the observer gets to report a handshake: its events arrive asynchronously.
const OBSERVER_WAIT: Duration = Duration::from_millis(300);
const OBSERVER_POLL: Duration = Duration::from_millis(20);

/// Asks the kernel to keep the SYN of each connection this listener accepts.
pub(super) fn enable_saved_syn(listener: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd; the value is a c_int and its size is given.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_SAVE_SYN,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The handshake view from an accepted connection's saved SYN (the kernel hands it out once).
pub(super) fn saved_syn(stream: &impl AsRawFd) -> Option<HandshakeView> {
    let mut buf = [0u8; MAX_SAVED_SYN];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: valid fd; buffer and its length.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_SAVED_SYN,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 || len == 0 {
        return None;
    }
    parse_syn(&buf[..(len as usize).min(buf.len())])
}

/// A SYN's IP and TCP headers as the kernel saved them.
pub(super) fn parse_syn(bytes: &[u8]) -> Option<HandshakeView> {
    let p = SlicedPacket::from_ip(bytes).ok()?;
    let ttl = match p.net? {
        NetSlice::Ipv4(v4) => v4.header().ttl(),
        NetSlice::Ipv6(v6) => v6.header().hop_limit(),
        NetSlice::Arp(_) => return None,
    };
    let Some(TransportSlice::Tcp(tcp)) = p.transport else { return None };
    if !tcp.syn() || tcp.ack() {
        return None;
    }
    let (area, len) = option_area(tcp.options());
    let opts = parse_tcp_options(&area, len, false);
    let mptcp = opts.mptcp_options().first();
    Some(HandshakeView {
        source: ViewSource::SavedSyn,
        syn_mptcp: mptcp.map(|o| Subtype::from_code(o.subtype)),
        syn_mptcp_len: mptcp.map(|o| o.len),
        syn_mss: (opts.mss != 0).then_some(opts.mss),
        syn_isn: Some(tcp.sequence_number()),
        syn_ttl: Some(ttl),
        ..Default::default()
    })
}

/// Polls the observer for a connection's handshake until it answers or `OBSERVER_WAIT` passes.
pub(super) async fn from_observer(
    source: &dyn HandshakeSource,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<HandshakeView> {
    let deadline = Instant::now() + OBSERVER_WAIT;
    loop {
        if let Some(h) = source.handshake(local, peer) {
            return Some(h);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(OBSERVER_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use mptcp_probe_model::Transport;

    use crate::host::sock;

    /// SYNs saved by this kernel for a plain TCP listener on loopback, from an MPTCP client.
    const SYN_V4: &str = "45000040e174400040065b417f0000017f000001b7b2d18de22a2e2000000000b002ffd7fe3400000204ffd70402080a882a5b2d000000000103030a1e040101";
    const SYN_V6: &str = "600f4240002c06400000000000000000000000000000000100000000000000000000000000000001dedadee3024cf31900000000b002ffc4003400000204ffc40402080a41505ced000000000103030a1e040101";

    #[test]
    fn saved_syns_are_parsed() {
        let v4 = parse_syn(&hex::decode(SYN_V4).unwrap()).expect("IPv4 SYN");
        assert_eq!(v4.source, ViewSource::SavedSyn);
        assert_eq!(v4.syn_mptcp, Some(Subtype::MpCapable));
        assert_eq!(v4.syn_mptcp_len, Some(4));
        assert_eq!(v4.syn_mss, Some(65495));
        assert_eq!(v4.syn_isn, Some(0xe22a2e20));
        assert_eq!(v4.syn_ttl, Some(64));
        let v6 = parse_syn(&hex::decode(SYN_V6).unwrap()).expect("IPv6 SYN");
        assert_eq!((v6.syn_mptcp, v6.syn_mptcp_len), (Some(Subtype::MpCapable), Some(4)));
        assert_eq!(v6.syn_mss, Some(65476));
        assert_eq!(v6.syn_isn, Some(0x024cf319));
        assert_eq!(v6.syn_ttl, Some(64));
        assert_eq!(v6.synack_mptcp, None);
    }

    #[test]
    fn truncated_or_non_syn_headers_give_nothing() {
        let syn = hex::decode(SYN_V4).unwrap();
        assert_eq!(parse_syn(&syn[..30]), None);
        assert_eq!(parse_syn(&[]), None);
        let mut ack = syn.clone();
        ack[20 + 13] = 0x10; // ACK only
        assert_eq!(parse_syn(&ack), None);
    }

    /// The kernel path end to end, on a listener that keeps SYNs (plain TCP here: MPTCP
    /// listeners refuse the option on the kernels this runs on).
    #[test]
    fn the_kernel_saves_an_mptcp_syn_for_a_tcp_listener() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let s = sock::socket(&addr, Transport::Tcp).unwrap();
        s.bind(&addr.into()).unwrap();
        enable_saved_syn(&s).unwrap();
        s.listen(4).unwrap();
        let l: std::net::TcpListener = s.into();
        let target = l.local_addr().unwrap();
        let c = sock::socket(&target, Transport::Mptcp).unwrap();
        c.connect(&target.into()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let h = saved_syn(&accepted).expect("saved SYN");
        assert_eq!(h.syn_mptcp, Some(Subtype::MpCapable));
        assert_eq!(h.syn_mptcp_len, Some(4));
        assert_eq!(h.syn_ttl, Some(64));
        assert!(h.syn_mss.is_some_and(|m| m > 1000));
        assert_eq!(saved_syn(&accepted), None, "the kernel hands the SYN out once");
    }

    struct Late(AtomicU32);
    impl HandshakeSource for Late {
        fn handshake(&self, _: SocketAddr, _: SocketAddr) -> Option<HandshakeView> {
            (self.0.fetch_add(1, Ordering::SeqCst) >= 2)
                .then(|| HandshakeView { source: ViewSource::Observer, ..Default::default() })
        }
    }

    #[tokio::test]
    async fn the_observer_gets_time_to_see_the_handshake() {
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let late = Late(AtomicU32::new(0));
        let h = from_observer(&late, a, a).await.expect("third poll answers");
        assert_eq!(h.source, ViewSource::Observer);
        struct Never;
        impl HandshakeSource for Never {
            fn handshake(&self, _: SocketAddr, _: SocketAddr) -> Option<HandshakeView> {
                None
            }
        }
        let t = Instant::now();
        assert_eq!(from_observer(&Never, a, a).await, None);
        assert!(t.elapsed() >= OBSERVER_WAIT && t.elapsed() < Duration::from_secs(2));
    }
}
