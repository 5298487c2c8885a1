//! The usual layouts that the parser reads at fixed offsets decode exactly as the walk decodes
//! them, and every other area is left to the walk with the same result.

use mptcp_probe_common::options::{
    option_area, parse_tcp_options, parse_tcp_options_walked, reads_as_usual_layout, MAX_OPTION_BYTES,
    TCPOPT_MPTCP, TCPOPT_NOP,
};
use proptest::prelude::*;

const TS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78];
/// MSS 1460, SACK_PERM, TS, NOP, WS 7: a Linux SYN's options before the MPTCP one.
const SYN: [u8; 20] = [2, 4, 5, 180, 4, 2, 8, 10, 0, 1, 2, 3, 4, 5, 6, 7, 1, 3, 3, 7];

fn mptcp(len: usize, fill: u8) -> Vec<u8> {
    let mut v = vec![TCPOPT_MPTCP, len as u8];
    v.extend(std::iter::repeat_n(fill, len.saturating_sub(2)));
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Both ways of parsing `bytes` (cut to `len`, maybe marked truncated) give the same options.
fn agree(bytes: &[u8], len: usize, truncated: bool) -> Result<(), TestCaseError> {
    let (buf, n) = option_area(bytes);
    let len = len.min(n);
    let read = parse_tcp_options(&buf, len, truncated);
    let walked = parse_tcp_options_walked(&buf, len, truncated);
    prop_assert_eq!(read, walked, "{:?} cut to {}", bytes, len);
    Ok(())
}

#[test]
fn linux_connection_layouts_are_read_at_fixed_offsets_and_decode_as_walked() {
    // SYN (MP_CAPABLE 4), SYN/ACK (12), third ACK (20), first data (22 + NOP NOP), a data
    // segment's DSS (data ACK + mapping + NOP NOP), a pure data ACK, plain TCP with timestamps,
    // a SYN of plain TCP, no options at all.
    let capable_syn = [0x01, 0x81];
    let cases: Vec<Vec<u8>> = vec![
        cat(&[&SYN, &[TCPOPT_MPTCP, 4, 0x01, 0x81]]),
        cat(&[&SYN, &mptcp(12, 0xab)]),
        cat(&[&TS, &mptcp(20, 0x01)]),
        cat(&[&TS, &mptcp(22, 0x01), &[TCPOPT_NOP, TCPOPT_NOP]]),
        cat(&[&TS, &[TCPOPT_MPTCP, 20, 0x20, 0x05], &[7; 16], &[TCPOPT_NOP, TCPOPT_NOP]]),
        cat(&[&TS, &[TCPOPT_MPTCP, 8, 0x20, 0x01, 0, 0, 0, 9]]),
        TS.to_vec(),
        SYN.to_vec(),
        vec![],
    ];
    for bytes in &cases {
        let (buf, n) = option_area(bytes);
        assert!(reads_as_usual_layout(&buf, n), "{bytes:?}");
        assert_eq!(parse_tcp_options(&buf, n, false), parse_tcp_options_walked(&buf, n, false), "{bytes:?}");
    }
    let (buf, n) = option_area(&cat(&[&SYN, &[TCPOPT_MPTCP, 4], &capable_syn]));
    let o = parse_tcp_options(&buf, n, false);
    assert_eq!((o.mss, o.wscale, o.mptcp_count, o.parsed_len), (1460, 7, 1, 24));
    assert_eq!((o.ts_val, o.ts_ecr), (0x0001_0203, 0x0405_0607));
    assert_eq!((o.mptcp[0].subtype, o.mptcp[0].version, o.mptcp[0].flags), (0, 1, 0x81));
}

#[test]
fn other_layouts_are_left_to_the_walk() {
    let sack = [1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let cases: Vec<Vec<u8>> = vec![
        // Two MPTCP options.
        cat(&[&TS, &mptcp(8, 0x20), &mptcp(8, 0x30)]),
        // SACK blocks after the timestamps.
        cat(&[&TS, &sack]),
        // EOL padding after the MPTCP option.
        cat(&[&TS, &mptcp(6, 0x20), &[0, 0]]),
        // A non-MPTCP option after the prefix.
        cat(&[&TS, &[TCPOPT_NOP, 3, 3, 7]]),
        // An MPTCP option claiming more than the area holds.
        cat(&[&TS, &[TCPOPT_MPTCP, 30, 0x20, 0x01]]),
        // A length below 2, and one whose length byte and next byte read as NOP NOP padding.
        cat(&[&TS, &[TCPOPT_MPTCP, 1, 0x20, 0x01]]),
        cat(&[&TS, &[TCPOPT_MPTCP, 1, TCPOPT_NOP]]),
    ];
    for bytes in &cases {
        let (buf, n) = option_area(bytes);
        assert!(!reads_as_usual_layout(&buf, n), "{bytes:?}");
        assert_eq!(parse_tcp_options(&buf, n, false), parse_tcp_options_walked(&buf, n, false), "{bytes:?}");
    }
}

/// The usual layouts and their near misses: a prefix (none, timestamps, a SYN's), then nothing,
/// an MPTCP option of any claimed length, NOP NOP or other bytes, with one byte changed
/// anywhere.
fn near_usual() -> impl Strategy<Value = (Vec<u8>, usize, bool)> {
    let prefix = prop_oneof![Just(vec![]), Just(TS.to_vec()), Just(SYN.to_vec())];
    let tail = prop_oneof![
        Just(vec![]),
        (0usize..=MAX_OPTION_BYTES, any::<u8>()).prop_map(|(l, f)| mptcp(l, f)),
        (0usize..=MAX_OPTION_BYTES, any::<u8>())
            .prop_map(|(l, f)| cat(&[&mptcp(l, f), &[TCPOPT_NOP, TCPOPT_NOP]])),
        prop::collection::vec(any::<u8>(), 0..=MAX_OPTION_BYTES),
    ];
    let mutation = prop::option::of((0usize..MAX_OPTION_BYTES, any::<u8>()));
    (prefix, tail, mutation, 0usize..=MAX_OPTION_BYTES, any::<bool>(), any::<bool>()).prop_map(
        |(p, t, m, cut, do_cut, truncated)| {
            let mut v = cat(&[&p, &t]);
            v.truncate(MAX_OPTION_BYTES);
            if let Some((at, b)) = m {
                if let Some(x) = v.get_mut(at) {
                    *x = b;
                }
            }
            let len = if do_cut { cut } else { v.len() };
            (v, len, truncated)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8192, ..ProptestConfig::default() })]

    #[test]
    fn near_usual_layouts_decode_as_walked((bytes, len, truncated) in near_usual()) {
        agree(&bytes, len, truncated)?;
    }

    #[test]
    fn arbitrary_areas_decode_as_walked(bytes in prop::collection::vec(any::<u8>(), 0..=MAX_OPTION_BYTES), truncated in any::<bool>()) {
        agree(&bytes, bytes.len(), truncated)?;
    }
}
