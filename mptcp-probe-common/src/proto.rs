//! Protocol and kernel numbers, named once for the kernel programs and user space alike.

/// Address families (`linux/socket.h`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// IP protocol numbers (`linux/in.h`). `IPPROTO_MPTCP` is the socket protocol of MPTCP sockets;
/// on the wire MPTCP is TCP.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_MPTCP: u16 = 262;
/// IPv6 extension headers the TC programs walk.
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Ethernet types (`linux/if_ether.h`), in host order.
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// "None" in one-byte fields of the kernel's records (no MPTCP option, no window scale, no
/// MP_TCPRST, no mapping status, no malformed offset).
pub const NONE_U8: u8 = 0xff;

/// TCP socket states (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT1: i32 = 4;
    pub const FIN_WAIT2: i32 = 5;
    pub const TIME_WAIT: i32 = 6;
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LAST_ACK: i32 = 9;
    pub const LISTEN: i32 = 10;
    pub const CLOSING: i32 = 11;
    pub const NEW_SYN_RECV: i32 = 12;
}

/// `enum mapping_status` of `net/mptcp/subflow.c`, as `mptcp:subflow_check_data_avail` reports
/// it.
pub mod mapping_status {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const EMPTY: u8 = 2;
    pub const DATA_FIN: u8 = 3;
    pub const DUMMY: u8 = 4;
}
