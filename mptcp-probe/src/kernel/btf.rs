//! Kernel struct member offsets from the running kernel's BTF, for the few pointer walks the
//! tracepoint programs make (socket → network namespace). Nothing is compiled in.

use btf_rs::{Btf, Type};
use mptcp_probe_common::config::{NetnsOffsets, SockFieldOffsets};

/// Byte offset of `path` (member names, anonymous members searched through) inside `struct name`.
pub fn member_offset(btf: &Btf, name: &str, path: &[&str]) -> Option<u32> {
    let mut ty = btf
        .resolve_types_by_name(name)
        .ok()?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_) | Type::Union(_)))?;
    let mut total = 0u32;
    for field in path {
        let (off, next) = find_member(btf, &ty, field)?;
        total += off;
        ty = next;
    }
    Some(total)
}

/// Finds `field` in a struct/union, descending into anonymous members; returns its byte offset
/// and its type with typedefs and qualifiers stripped.
fn find_member(btf: &Btf, ty: &Type, field: &str) -> Option<(u32, Type)> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return None,
    };
    for m in members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let off = m.bit_offset() / 8;
        let mty = strip(btf, btf.resolve_chained_type(m).ok()?)?;
        if name == field {
            return Some((off, mty));
        }
        if name.is_empty() {
            if let Some((inner, t)) = find_member(btf, &mty, field) {
                return Some((off + inner, t));
            }
        }
    }
    None
}

fn strip(btf: &Btf, mut ty: Type) -> Option<Type> {
    for _ in 0..16 {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t).ok()?,
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t).ok()?,
            Type::TypeTag(t) => btf.resolve_chained_type(t).ok()?,
            _ => return Some(ty),
        };
    }
    None
}

/// The running kernel's BTF, parsed once for every offset taken from it; None (said) when it
/// cannot be read.
pub fn kernel() -> Option<Btf> {
    match Btf::from_file("/sys/kernel/btf/vmlinux") {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!("kernel BTF unreadable ({e}): kernel events will not name their namespace");
            None
        }
    }
}

/// Offsets to find a socket's network namespace inode: `sk->__sk_common.skc_net.net->ns.inum`,
/// and the socket of an skb (`skb->sk`).
pub fn netns_offsets(btf: Option<&Btf>) -> NetnsOffsets {
    let mut o = NetnsOffsets::absent();
    let Some(btf) = btf else { return o };
    let skc_net = member_offset(btf, "sock_common", &["skc_net", "net"]);
    let inum = member_offset(btf, "net", &["ns", "inum"]);
    let skb_sk = member_offset(btf, "sk_buff", &["sk"]);
    match (skc_net, inum) {
        (Some(a), Some(b)) => {
            o.sk_net = a;
            o.net_inum = b;
        }
        _ => tracing::warn!(
            "kernel BTF lacks sock_common.skc_net or net.ns.inum: kernel events will not name their namespace"
        ),
    }
    if let Some(s) = skb_sk {
        o.skb_sk = s;
    }
    o
}

/// Offsets of the socket's members the socket-state BTF tracepoint reads; all absent when the
/// BTF is unreadable or lacks one (the classic tracepoint is used then).
pub fn sock_field_offsets(btf: Option<&Btf>) -> SockFieldOffsets {
    let absent = SockFieldOffsets::absent();
    let Some(btf) = btf else { return absent };
    let common = |f: &str| member_offset(btf, "sock_common", &[f]);
    let found = (|| {
        Some(SockFieldOffsets {
            family: common("skc_family")?,
            protocol: member_offset(btf, "sock", &["sk_protocol"])?,
            inet_sport: member_offset(btf, "inet_sock", &["inet_sport"])?,
            dport: common("skc_dport")?,
            inet_saddr: member_offset(btf, "inet_sock", &["inet_saddr"])?,
            daddr: common("skc_daddr")?,
            v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
            v6_daddr: common("skc_v6_daddr")?,
        })
    })();
    found.unwrap_or(absent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_has_the_offsets_the_tracepoints_use() {
        let btf = match Btf::from_file("/sys/kernel/btf/vmlinux") {
            Ok(b) => b,
            Err(_) => panic!("this host has no readable /sys/kernel/btf/vmlinux"),
        };
        // skc_net sits well inside sock_common; net.ns.inum inside struct net; both non-zero.
        let a = member_offset(&btf, "sock_common", &["skc_net", "net"]).expect("sock_common.skc_net");
        let b = member_offset(&btf, "net", &["ns", "inum"]).expect("net.ns.inum");
        assert!(a > 0 && a < 256, "{a}");
        assert!(b > 0 && b < 4096, "{b}");
        // A member behind anonymous unions/structs is found (sk_buff.sk is in a union).
        assert!(member_offset(&btf, "sk_buff", &["sk"]).is_some());
        assert!(member_offset(&btf, "sock_common", &["no_such_member"]).is_none());
    }

    #[test]
    fn running_kernel_has_the_socket_members_the_btf_tracepoint_reads() {
        let btf = Btf::from_file("/sys/kernel/btf/vmlinux").expect("kernel BTF");
        let o = sock_field_offsets(Some(&btf));
        assert_ne!(o, SockFieldOffsets::absent(), "this kernel's BTF lacks a member");
        // The sock_common members come first in struct sock, its protocol after them;
        // inet_sock's own members after all of struct sock.
        let sk_end = member_offset(&btf, "inet_sock", &["pinet6"]).expect("inet_sock.pinet6");
        for (name, off) in [
            ("family", o.family),
            ("dport", o.dport),
            ("daddr", o.daddr),
            ("v6_daddr", o.v6_daddr),
            ("v6_rcv_saddr", o.v6_rcv_saddr),
        ] {
            assert!(off < o.protocol, "{name} at {off}: {o:?}");
        }
        assert_ne!(o.v6_rcv_saddr, o.v6_daddr, "{o:?}");
        assert!(o.protocol < sk_end, "{o:?}");
        assert!(o.inet_saddr > sk_end && o.inet_sport > o.inet_saddr, "{o:?}");
    }
}
