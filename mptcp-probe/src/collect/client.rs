//! What the collector keeps of the address an upload came from: a truncated prefix, to count
//! distinct networks (never shown), or nothing; and the key uploads are rate-limited by.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How much of a client's address is kept: the first `v4` bits of an IPv4 address, the first
/// `v6` of an IPv6 one; 0 keeps nothing of that family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixPolicy {
    pub v4: u8,
    pub v6: u8,
}

impl Default for PrefixPolicy {
    fn default() -> Self {
        Self { v4: 24, v6: 48 }
    }
}

fn v4_prefix(a: Ipv4Addr, bits: u8) -> Ipv4Addr {
    let bits = bits.min(32);
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
    Ipv4Addr::from(u32::from(a) & mask)
}

fn v6_prefix(a: Ipv6Addr, bits: u8) -> Ipv6Addr {
    let bits = bits.min(128);
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
    Ipv6Addr::from(u128::from(a) & mask)
}

impl PrefixPolicy {
    /// The prefix kept of `ip` ("198.51.100.0/24"), or none. An IPv4-mapped IPv6 address (a
    /// dual-stack listener's view of an IPv4 client) is IPv4.
    pub fn keep(&self, ip: IpAddr) -> Option<String> {
        match ip.to_canonical() {
            IpAddr::V4(a) if self.v4 > 0 => Some(format!("{}/{}", v4_prefix(a, self.v4), self.v4.min(32))),
            IpAddr::V6(a) if self.v6 > 0 => Some(format!("{}/{}", v6_prefix(a, self.v6), self.v6.min(128))),
            _ => None,
        }
    }
}

/// The key an upload is rate-limited by: the IPv4 address, or the IPv6 /64 (one host may hold a
/// whole /64).
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => IpAddr::V6(v6_prefix(a, 64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_kept_as_the_operator_says_and_no_more() {
        let p = PrefixPolicy::default();
        assert_eq!(p.keep("198.51.100.77".parse().unwrap()).as_deref(), Some("198.51.100.0/24"));
        assert_eq!(p.keep("::ffff:198.51.100.77".parse().unwrap()).as_deref(), Some("198.51.100.0/24"));
        assert_eq!(p.keep("2001:db8:1:2:3::9".parse().unwrap()).as_deref(), Some("2001:db8:1::/48"));
        let q = PrefixPolicy { v4: 16, v6: 0 };
        assert_eq!(q.keep("198.51.100.77".parse().unwrap()).as_deref(), Some("198.51.0.0/16"));
        assert_eq!(q.keep("2001:db8::1".parse().unwrap()), None);
        assert_eq!(PrefixPolicy { v4: 0, v6: 0 }.keep("192.0.2.1".parse().unwrap()), None);
        assert_eq!(
            PrefixPolicy { v4: 32, v6: 128 }.keep("192.0.2.1".parse().unwrap()).as_deref(),
            Some("192.0.2.1/32")
        );
    }

    #[test]
    fn an_ipv6_host_is_limited_by_its_slash_64() {
        assert_eq!(
            rate_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(rate_key("::ffff:192.0.2.9".parse().unwrap()), "192.0.2.9".parse::<IpAddr>().unwrap());
    }
}
