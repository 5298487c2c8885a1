//! Scenario tests of the shared TCP/MPTCP option parser (`mptcp_probe_common::options`).
//!
//! Every option area is built byte by byte, the way it appears on the wire (RFC 793/7323/2018 for
//! TCP, RFC 8684 for MPTCP), and every test checks concrete decoded values.

use mptcp_probe_common::options::{
    dss, mptcp_status, next_option, opt_flags, option_area, parse_mptcp, parse_tcp_options, subtype,
    MpCapablePacket, MpCapableRejection, MptcpOption, OptionWalk, Step, TcpOptions, MAX_MPTCP_OPTIONS,
    MAX_OPTION_BYTES, TCPOPT_MPTCP, TCPOPT_NOP,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Parses `bytes` as a complete (not truncated) option area.
fn parse(bytes: &[u8]) -> TcpOptions {
    let (buf, n) = option_area(bytes);
    parse_tcp_options(&buf, n, false)
}

/// The steps of the walk over `bytes`, up to and including the final End/Malformed.
fn walk(bytes: &[u8]) -> Vec<Step> {
    OptionWalk::new(bytes).collect()
}

/// An MPTCP option: kind 30, length, subtype in the high nibble of the third byte, `low` in its
/// low nibble, then `rest`.
fn mptcp(st: u8, low: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![TCPOPT_MPTCP, (3 + rest.len()) as u8, (st << 4) | (low & 0x0f)];
    v.extend_from_slice(rest);
    v
}

/// Parses an area that holds exactly one well-formed MPTCP option and returns the decoded option,
/// checking the TCP-level bookkeeping on the way.
fn only_mptcp(bytes: &[u8]) -> MptcpOption {
    let o = parse(bytes);
    assert_eq!(o.flags, 0, "TCP-level flags for {bytes:?}");
    assert_eq!(o.mptcp_count, 1);
    assert_eq!(o.parsed_len as usize, bytes.len());
    assert_eq!(o.malformed_at, 0xff);
    assert_eq!(o.mptcp_options().len(), 1);
    // The decoder used by parse_tcp_options and the public one agree.
    let (buf, _) = option_area(bytes);
    assert_eq!(o.mptcp[0], parse_mptcp(&buf, 0, bytes.len()));
    o.mptcp[0]
}

fn mss(v: u16) -> Vec<u8> {
    let b = v.to_be_bytes();
    vec![2, 4, b[0], b[1]]
}

fn wscale(v: u8) -> Vec<u8> {
    vec![3, 3, v]
}

fn sack_perm() -> Vec<u8> {
    vec![4, 2]
}

fn timestamps(val: u32, ecr: u32) -> Vec<u8> {
    let mut v = vec![8, 10];
    v.extend_from_slice(&val.to_be_bytes());
    v.extend_from_slice(&ecr.to_be_bytes());
    v
}

fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut v = vec![5, (2 + 8 * blocks.len()) as u8];
    for (l, r) in blocks {
        v.extend_from_slice(&l.to_be_bytes());
        v.extend_from_slice(&r.to_be_bytes());
    }
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const NOP: u8 = TCPOPT_NOP;
const EOL: u8 = 0;

const KEY_A: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
const KEY_B: [u8; 8] = [0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01];

// ---------------------------------------------------------------------------------------------
// MP_CAPABLE
// ---------------------------------------------------------------------------------------------

#[test]
fn mp_capable_syn_v1_with_checksum_required_and_hmac_sha256() {
    let o = only_mptcp(&[30, 4, 0x01, 0x81]);
    assert_eq!(
        o,
        MptcpOption { subtype: subtype::MP_CAPABLE, len: 4, version: 1, flags: 0x81, ..Default::default() }
    );
}

#[test]
fn mp_capable_synack_carries_the_listener_key() {
    let o = only_mptcp(&mptcp(subtype::MP_CAPABLE, 1, &cat(&[&[0x01], &KEY_B])));
    assert_eq!(
        o,
        MptcpOption { subtype: subtype::MP_CAPABLE, len: 12, version: 1, flags: 0x01, ..Default::default() }
    );
}

#[test]
fn mp_capable_third_ack_carries_both_keys() {
    let o = only_mptcp(&mptcp(subtype::MP_CAPABLE, 1, &cat(&[&[0x01], &KEY_A, &KEY_B])));
    assert_eq!(
        o,
        MptcpOption { subtype: subtype::MP_CAPABLE, len: 20, version: 1, flags: 0x01, ..Default::default() }
    );
}

#[test]
fn mp_capable_first_data_without_checksum_has_data_len() {
    let o = only_mptcp(&mptcp(subtype::MP_CAPABLE, 1, &cat(&[&[0x01], &KEY_A, &KEY_B, &[0x05, 0xdc]])));
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::MP_CAPABLE,
            len: 22,
            version: 1,
            flags: 0x01,
            data_len: 1500,
            ..Default::default()
        }
    );
}

#[test]
fn mp_capable_first_data_with_checksum_sets_checksum_status() {
    let o = only_mptcp(&mptcp(
        subtype::MP_CAPABLE,
        1,
        &cat(&[&[0x81], &KEY_A, &KEY_B, &[0x05, 0x78], &[0xbe, 0xef]]),
    ));
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::MP_CAPABLE,
            len: 24,
            version: 1,
            flags: 0x81,
            data_len: 1400,
            status: mptcp_status::CHECKSUM,
            ..Default::default()
        }
    );
}

#[test]
fn mp_capable_version_0_syn_is_decoded_with_version_0() {
    let o = only_mptcp(&[30, 4, 0x00, 0x81]);
    assert_eq!(o.version, 0);
    assert_eq!(o.flags, 0x81);
    assert_eq!(o.status, 0);
}

#[test]
fn mp_capable_with_impossible_lengths_is_bad_length() {
    for len in [3usize, 5, 8, 16, 21, 23, 26] {
        let mut bytes = vec![30, len as u8, 0x01];
        bytes.resize(len, 0x01);
        let o = only_mptcp(&bytes);
        assert_eq!(o.subtype, subtype::MP_CAPABLE, "len {len}");
        assert_eq!(o.len as usize, len);
        assert_eq!(o.version, 1);
        assert_eq!(o.status & mptcp_status::BAD_LENGTH, mptcp_status::BAD_LENGTH, "len {len}");
        assert_eq!(o.status & mptcp_status::CHECKSUM, 0, "len {len}");
    }
}

#[test]
fn mp_capable_is_accepted_as_linux_accepts_it() {
    let ack = MpCapablePacket::Ack { data: false };
    let third = only_mptcp(&mptcp(subtype::MP_CAPABLE, 1, &cat(&[&[0x01], &KEY_A, &KEY_B])));
    assert_eq!(third.mp_capable_rejection(ack), None);
    // The checksum bit (A) and "no join to the initial address" (C) are fine.
    let a_c = MptcpOption { flags: 0x81 | 0x20, ..third };
    assert_eq!(a_c.mp_capable_rejection(ack), None);
    // A third ACK of version 0 after version-1 SYN and SYN/ACK: Linux ignores it.
    let v0 = only_mptcp(&mptcp(subtype::MP_CAPABLE, 0, &cat(&[&[0x01], &KEY_A, &KEY_B])));
    assert_eq!(v0.mp_capable_rejection(ack), Some(MpCapableRejection::Version(0)));
    // Extensibility (B), no algorithm, or SHA-1 beside SHA-256.
    for flags in [0x41, 0x00, 0x03] {
        let o = MptcpOption { flags, ..third };
        assert_eq!(o.mp_capable_rejection(ack), Some(MpCapableRejection::Flags(flags)), "{flags:#x}");
    }
    // Each packet has its own length: 20 bytes on the first data segment is not accepted.
    assert_eq!(
        third.mp_capable_rejection(MpCapablePacket::Ack { data: true }),
        Some(MpCapableRejection::Length(20))
    );
    assert_eq!(third.mp_capable_rejection(MpCapablePacket::SynAck), Some(MpCapableRejection::Length(20)));
}

#[test]
fn a_syn_may_offer_a_later_version_nothing_else_may() {
    let syn = only_mptcp(&[30, 4, 0x02, 0x01]);
    assert_eq!(syn.version, 2);
    assert_eq!(syn.mp_capable_rejection(MpCapablePacket::Syn), None);
    let synack = only_mptcp(&mptcp(subtype::MP_CAPABLE, 2, &cat(&[&[0x01], &KEY_A])));
    assert_eq!(synack.mp_capable_rejection(MpCapablePacket::SynAck), Some(MpCapableRejection::Version(2)));
    let v0_syn = only_mptcp(&[30, 4, 0x00, 0x01]);
    assert_eq!(v0_syn.mp_capable_rejection(MpCapablePacket::Syn), Some(MpCapableRejection::Version(0)));
}

// ---------------------------------------------------------------------------------------------
// MP_JOIN
// ---------------------------------------------------------------------------------------------

#[test]
fn mp_join_syn_with_backup_bit_and_address_id() {
    // Receiver's token 0xa1b2c3d4, sender's random number 0x01020304.
    let o = only_mptcp(&mptcp(subtype::MP_JOIN, 0x01, &[3, 0xa1, 0xb2, 0xc3, 0xd4, 1, 2, 3, 4]));
    assert_eq!(
        o,
        MptcpOption { subtype: subtype::MP_JOIN, len: 12, flags: 0x01, addr_id: 3, ..Default::default() }
    );
}

#[test]
fn mp_join_synack_without_backup_bit() {
    let o = only_mptcp(&mptcp(subtype::MP_JOIN, 0, &cat(&[&[7], &KEY_A, &[9, 9, 9, 9]])));
    assert_eq!(
        o,
        MptcpOption { subtype: subtype::MP_JOIN, len: 16, flags: 0, addr_id: 7, ..Default::default() }
    );
}

#[test]
fn mp_join_third_ack_carries_full_hmac() {
    let o = only_mptcp(&mptcp(subtype::MP_JOIN, 0, &cat(&[&[0], &[0x5a; 20]])));
    assert_eq!(o, MptcpOption { subtype: subtype::MP_JOIN, len: 24, ..Default::default() });
}

#[test]
fn mp_join_with_length_20_is_bad_length() {
    let o = only_mptcp(&mptcp(subtype::MP_JOIN, 1, &cat(&[&[2], &[0; 16]])));
    assert_eq!(o.len, 20);
    assert_eq!(o.flags, 1);
    assert_eq!(o.addr_id, 2);
    assert_eq!(o.status, mptcp_status::BAD_LENGTH);
}

// ---------------------------------------------------------------------------------------------
// DSS
// ---------------------------------------------------------------------------------------------

#[test]
fn dss_with_only_a_4_byte_data_ack() {
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &[dss::DATA_ACK, 0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::DSS,
            len: 8,
            flags: 0x01,
            data_ack: 0xdead_beef,
            ..Default::default()
        }
    );
}

#[test]
fn dss_with_only_an_8_byte_data_ack() {
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &[0x03, 1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::DSS,
            len: 12,
            flags: 0x03,
            data_ack: 0x0102_0304_0506_0708,
            ..Default::default()
        }
    );
}

#[test]
fn dss_with_4_byte_ack_and_4_byte_mapping_without_checksum() {
    let bytes = mptcp(
        subtype::DSS,
        0,
        &cat(&[
            &[dss::DATA_ACK | dss::MAPPING],
            &0x1122_3344u32.to_be_bytes(), // data ack
            &0xaabb_ccddu32.to_be_bytes(), // DSN
            &1u32.to_be_bytes(),           // subflow seq
            &1428u16.to_be_bytes(),        // data-level length
        ]),
    );
    assert_eq!(bytes.len(), 18);
    let o = only_mptcp(&bytes);
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::DSS,
            len: 18,
            flags: 0x05,
            data_ack: 0x1122_3344,
            dsn: 0xaabb_ccdd,
            ssn: 1,
            data_len: 1428,
            ..Default::default()
        }
    );
}

#[test]
fn dss_with_4_byte_ack_and_mapping_and_checksum() {
    let bytes = mptcp(
        subtype::DSS,
        0,
        &cat(&[
            &[0x05],
            &7u32.to_be_bytes(),
            &100u32.to_be_bytes(),
            &2u32.to_be_bytes(),
            &10u16.to_be_bytes(),
            &[0xab, 0xcd],
        ]),
    );
    assert_eq!(bytes.len(), 20);
    let o = only_mptcp(&bytes);
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::DSS,
            len: 20,
            flags: 0x05,
            data_ack: 7,
            dsn: 100,
            ssn: 2,
            data_len: 10,
            status: mptcp_status::CHECKSUM,
            ..Default::default()
        }
    );
}

#[test]
fn dss_with_8_byte_ack_and_8_byte_dsn_without_and_with_checksum() {
    let body = cat(&[
        &[0x0f],
        &0x0000_0001_0000_0002u64.to_be_bytes(),
        &0xffee_ddcc_bbaa_9988u64.to_be_bytes(),
        &0x8000_0000u32.to_be_bytes(),
        &0xffffu16.to_be_bytes(),
    ]);
    let expected = MptcpOption {
        subtype: subtype::DSS,
        len: 26,
        flags: 0x0f,
        data_ack: 0x0000_0001_0000_0002,
        dsn: 0xffee_ddcc_bbaa_9988,
        ssn: 0x8000_0000,
        data_len: 0xffff,
        ..Default::default()
    };
    assert_eq!(only_mptcp(&mptcp(subtype::DSS, 0, &body)), expected);

    let with_csum = cat(&[&body, &[0x12, 0x34]]);
    assert_eq!(
        only_mptcp(&mptcp(subtype::DSS, 0, &with_csum)),
        MptcpOption { len: 28, status: mptcp_status::CHECKSUM, ..expected }
    );
}

#[test]
fn dss_with_only_an_8_byte_mapping() {
    let bytes = mptcp(
        subtype::DSS,
        0,
        &cat(&[&[dss::MAPPING | dss::DSN_8], &42u64.to_be_bytes(), &5u32.to_be_bytes(), &3u16.to_be_bytes()]),
    );
    assert_eq!(bytes.len(), 18);
    assert_eq!(
        only_mptcp(&bytes),
        MptcpOption {
            subtype: subtype::DSS,
            len: 18,
            flags: 0x0c,
            dsn: 42,
            ssn: 5,
            data_len: 3,
            ..Default::default()
        }
    );
}

#[test]
fn dss_infinite_mapping_has_data_len_zero() {
    let body =
        cat(&[&[0x05], &9u32.to_be_bytes(), &0x0102_0304u32.to_be_bytes(), &0u32.to_be_bytes(), &[0, 0]]);
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &body));
    assert_eq!(o.len, 18);
    assert_eq!(o.dsn, 0x0102_0304);
    assert_eq!(o.ssn, 0);
    assert_eq!(o.data_len, 0);
    assert_eq!(o.status, mptcp_status::INFINITE_MAPPING);

    // Same infinite mapping on a connection that negotiated checksums.
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &cat(&[&body, &[0, 0]])));
    assert_eq!(o.len, 20);
    assert_eq!(o.status, mptcp_status::INFINITE_MAPPING | mptcp_status::CHECKSUM);
}

#[test]
fn an_empty_mapping_is_infinite_only_on_a_segment_with_data() {
    // dack8, dsn8, ssn, dll = 0: as a pure ACK (or an empty PSH/ACK) it maps nothing.
    let flags = dss::DATA_ACK | dss::DATA_ACK_8 | dss::MAPPING | dss::DSN_8;
    let body = cat(&[&[flags], &7u64.to_be_bytes(), &9u64.to_be_bytes(), &1u32.to_be_bytes(), &[0, 0]]);
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &body));
    assert_eq!(o.len, 26);
    assert_eq!(o.data_len, 0);
    assert!(!o.is_infinite_mapping(0), "no payload: nothing is mapped");
    assert!(o.is_infinite_mapping(1), "with data: an infinite mapping");
    // A mapping with a length is never infinite, nor is another subtype.
    let mapped = MptcpOption { data_len: 1, status: 0, ..o };
    assert!(!mapped.is_infinite_mapping(1));
    let other = MptcpOption { subtype: subtype::MP_FAIL, ..o };
    assert!(!other.is_infinite_mapping(1));
}

#[test]
fn dss_data_fin_with_mapping_keeps_the_fin_flag() {
    let flags = dss::DATA_ACK | dss::MAPPING | dss::DATA_FIN;
    let body = cat(&[
        &[flags],
        &1000u32.to_be_bytes(),
        &2000u32.to_be_bytes(),
        &0u32.to_be_bytes(),
        &1u16.to_be_bytes(),
    ]);
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &body));
    assert_eq!(o.flags, 0x15);
    assert_eq!(o.flags & dss::DATA_FIN, dss::DATA_FIN);
    assert_eq!((o.data_ack, o.dsn, o.ssn, o.data_len), (1000, 2000, 0, 1));
    assert_eq!(o.status, 0);
}

#[test]
fn dss_without_any_field_is_4_bytes() {
    assert_eq!(
        only_mptcp(&[30, 4, 0x20, 0x00]),
        MptcpOption { subtype: subtype::DSS, len: 4, ..Default::default() }
    );
}

#[test]
fn dss_lengths_that_do_not_match_the_flags_are_bad_length() {
    // Mapping with a 4-byte ack needs 18 or 20 bytes.
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &cat(&[&[0x05], &[0; 12]])));
    assert_eq!(o.len, 16);
    assert_eq!(o.status & mptcp_status::BAD_LENGTH, mptcp_status::BAD_LENGTH);
    // A checksum without a mapping does not exist.
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &[0x01, 0, 0, 0, 1, 0xaa, 0xbb]));
    assert_eq!(o.len, 10);
    assert_eq!(o.data_ack, 1);
    assert_eq!(o.status, mptcp_status::BAD_LENGTH);
    // An 8-byte ack in an 8-byte option.
    let o = only_mptcp(&mptcp(subtype::DSS, 0, &[0x03, 0, 0, 0, 1]));
    assert_eq!(o.status & mptcp_status::BAD_LENGTH, mptcp_status::BAD_LENGTH);
    // A 3-byte DSS has no flag byte.
    let o = only_mptcp(&[30, 3, 0x20]);
    assert_eq!((o.subtype, o.flags, o.status), (subtype::DSS, 0, mptcp_status::BAD_LENGTH));
}

// ---------------------------------------------------------------------------------------------
// ADD_ADDR
// ---------------------------------------------------------------------------------------------

const V4: [u8; 4] = [192, 0, 2, 1];
const V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
const HMAC: [u8; 8] = [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7];

fn v4_addr() -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&V4);
    a
}

#[test]
fn add_addr_ipv4_with_hmac() {
    let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 0, &cat(&[&[2], &V4, &HMAC])));
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::ADD_ADDR,
            len: 16,
            addr_id: 2,
            addr: v4_addr(),
            status: mptcp_status::HMAC,
            ..Default::default()
        }
    );
}

#[test]
fn add_addr_ipv4_with_port_and_hmac() {
    let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 0, &cat(&[&[2], &V4, &8080u16.to_be_bytes(), &HMAC])));
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::ADD_ADDR,
            len: 18,
            addr_id: 2,
            addr: v4_addr(),
            port: 8080,
            status: mptcp_status::PORT | mptcp_status::HMAC,
            ..Default::default()
        }
    );
}

#[test]
fn add_addr_ipv6_with_hmac() {
    let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 0, &cat(&[&[4], &V6, &HMAC])));
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::ADD_ADDR,
            len: 28,
            addr_id: 4,
            addr: V6,
            status: mptcp_status::IPV6 | mptcp_status::HMAC,
            ..Default::default()
        }
    );
}

#[test]
fn add_addr_ipv6_with_port_and_hmac() {
    let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 0, &cat(&[&[4], &V6, &443u16.to_be_bytes(), &HMAC])));
    assert_eq!(
        o,
        MptcpOption {
            subtype: subtype::ADD_ADDR,
            len: 30,
            addr_id: 4,
            addr: V6,
            port: 443,
            status: mptcp_status::IPV6 | mptcp_status::PORT | mptcp_status::HMAC,
            ..Default::default()
        }
    );
}

#[test]
fn add_addr_echo_forms_carry_no_hmac() {
    // (option body after the subtype byte, length, status, port, address)
    type Case = (Vec<u8>, u8, u8, u16, [u8; 16]);
    let cases: [Case; 4] = [
        (cat(&[&[1], &V4]), 8, 0, 0, v4_addr()),
        (cat(&[&[1], &V4, &5000u16.to_be_bytes()]), 10, mptcp_status::PORT, 5000, v4_addr()),
        (cat(&[&[1], &V6]), 20, mptcp_status::IPV6, 0, V6),
        (cat(&[&[1], &V6, &5001u16.to_be_bytes()]), 22, mptcp_status::IPV6 | mptcp_status::PORT, 5001, V6),
    ];
    for (body, len, status, port, addr) in cases {
        let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 0x01, &body));
        assert_eq!(
            o,
            MptcpOption {
                subtype: subtype::ADD_ADDR,
                len,
                flags: 0x01,
                addr_id: 1,
                addr,
                port,
                status,
                ..Default::default()
            },
            "echo len {len}"
        );
    }
}

#[test]
fn add_addr_with_a_length_of_no_form_is_bad_length_and_decodes_no_address() {
    let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 0, &cat(&[&[3], &V4, &[1, 2, 3, 4]])));
    assert_eq!(o.len, 12);
    assert_eq!(o.addr_id, 3);
    assert_eq!(o.addr, [0; 16]);
    assert_eq!(o.port, 0);
    assert_eq!(o.status, mptcp_status::BAD_LENGTH);
}

#[test]
fn add_addr_whose_echo_bit_contradicts_its_hmac_is_bad_length() {
    // Not an echo (E = 0) but no HMAC: 8 bytes fit only the echo form.
    let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 0, &cat(&[&[1], &V4])));
    assert_eq!((o.len, o.flags, o.status), (8, 0, mptcp_status::BAD_LENGTH));
    assert_eq!(o.addr, [0; 16]);
    // An echo (E = 1) of 16 bytes would carry an HMAC, which echoes never do.
    let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 1, &cat(&[&[1], &V4, &HMAC])));
    assert_eq!((o.len, o.flags, o.status), (16, 1, mptcp_status::BAD_LENGTH));
    // Same for IPv6 with port: 30 bytes with E = 1.
    let o = only_mptcp(&mptcp(subtype::ADD_ADDR, 1, &cat(&[&[1], &V6, &[0, 80], &HMAC])));
    assert_eq!((o.len, o.status, o.port), (30, mptcp_status::BAD_LENGTH, 0));
}

// ---------------------------------------------------------------------------------------------
// REMOVE_ADDR, MP_PRIO, MP_FAIL, MP_FASTCLOSE, MP_TCPRST, others
// ---------------------------------------------------------------------------------------------

#[test]
fn remove_addr_with_one_id() {
    let mut addr = [0u8; 16];
    addr[0] = 5;
    assert_eq!(
        only_mptcp(&mptcp(subtype::REMOVE_ADDR, 0, &[5])),
        MptcpOption { subtype: subtype::REMOVE_ADDR, len: 4, count: 1, addr, ..Default::default() }
    );
}

#[test]
fn remove_addr_with_three_ids() {
    let o = only_mptcp(&mptcp(subtype::REMOVE_ADDR, 0, &[1, 7, 200]));
    assert_eq!((o.len, o.count, o.status), (6, 3, 0));
    assert_eq!(&o.addr[..4], &[1, 7, 200, 0]);
}

#[test]
fn remove_addr_with_twenty_ids_counts_all_and_keeps_sixteen() {
    let ids: Vec<u8> = (1..=20).collect();
    let o = only_mptcp(&mptcp(subtype::REMOVE_ADDR, 0, &ids));
    assert_eq!((o.len, o.count, o.status), (23, 20, 0));
    let first16: Vec<u8> = (1..=16).collect();
    assert_eq!(&o.addr[..], &first16[..]);
}

#[test]
fn remove_addr_without_ids_is_bad_length() {
    let o = only_mptcp(&[30, 3, 0x40]);
    assert_eq!((o.subtype, o.len, o.count, o.status), (subtype::REMOVE_ADDR, 3, 0, mptcp_status::BAD_LENGTH));
}

#[test]
fn mp_prio_short_form_with_backup_bit() {
    assert_eq!(
        only_mptcp(&[30, 3, 0x51]),
        MptcpOption { subtype: subtype::MP_PRIO, len: 3, flags: 0x01, ..Default::default() }
    );
}

#[test]
fn mp_prio_long_form_with_address_id() {
    assert_eq!(
        only_mptcp(&[30, 4, 0x50, 7]),
        MptcpOption { subtype: subtype::MP_PRIO, len: 4, flags: 0, addr_id: 7, ..Default::default() }
    );
    assert_eq!(
        only_mptcp(&[30, 4, 0x51, 9]),
        MptcpOption { subtype: subtype::MP_PRIO, len: 4, flags: 1, addr_id: 9, ..Default::default() }
    );
}

#[test]
fn mp_prio_of_five_bytes_is_bad_length() {
    let o = only_mptcp(&[30, 5, 0x51, 7, 0]);
    assert_eq!((o.subtype, o.flags, o.addr_id, o.status), (subtype::MP_PRIO, 1, 0, mptcp_status::BAD_LENGTH));
}

#[test]
fn mp_fail_carries_an_8_byte_dsn() {
    let o = only_mptcp(&mptcp(subtype::MP_FAIL, 0, &cat(&[&[0], &0x0123_4567_89ab_cdefu64.to_be_bytes()])));
    assert_eq!(
        o,
        MptcpOption { subtype: subtype::MP_FAIL, len: 12, dsn: 0x0123_4567_89ab_cdef, ..Default::default() }
    );
}

#[test]
fn mp_fail_of_eight_bytes_is_bad_length_without_dsn() {
    let o = only_mptcp(&mptcp(subtype::MP_FAIL, 0, &[0, 1, 2, 3, 4]));
    assert_eq!((o.subtype, o.len, o.dsn, o.status), (subtype::MP_FAIL, 8, 0, mptcp_status::BAD_LENGTH));
}

#[test]
fn mp_fastclose_carries_the_receiver_key() {
    assert_eq!(
        only_mptcp(&mptcp(subtype::MP_FASTCLOSE, 0, &cat(&[&[0], &KEY_B]))),
        MptcpOption { subtype: subtype::MP_FASTCLOSE, len: 12, ..Default::default() }
    );
    let o = only_mptcp(&mptcp(subtype::MP_FASTCLOSE, 0, &cat(&[&[0], &KEY_B[..7]])));
    assert_eq!((o.len, o.status), (11, mptcp_status::BAD_LENGTH));
}

#[test]
fn mp_tcprst_decodes_every_reason_code() {
    for reason in 0u8..=6 {
        assert_eq!(
            only_mptcp(&[30, 4, 0x81, reason]),
            MptcpOption { subtype: subtype::MP_TCPRST, len: 4, flags: 0x01, reason, ..Default::default() },
            "reason {reason}"
        );
    }
}

#[test]
fn mp_tcprst_keeps_all_four_flag_bits() {
    let o = only_mptcp(&[30, 4, 0x8f, 2]);
    assert_eq!((o.subtype, o.flags, o.reason, o.status), (subtype::MP_TCPRST, 0x0f, 2, 0));
    let o = only_mptcp(&[30, 4, 0x80, 4]);
    assert_eq!((o.flags, o.reason), (0, 4));
}

#[test]
fn mp_tcprst_of_three_or_five_bytes_is_bad_length() {
    let o = only_mptcp(&[30, 3, 0x81]);
    assert_eq!(
        (o.subtype, o.flags, o.reason, o.status),
        (subtype::MP_TCPRST, 1, 0, mptcp_status::BAD_LENGTH)
    );
    let o = only_mptcp(&[30, 5, 0x81, 1, 0]);
    assert_eq!((o.reason, o.status), (1, mptcp_status::BAD_LENGTH));
}

#[test]
fn mp_experimental_and_unassigned_subtypes_are_kept_without_judging_length() {
    let o = only_mptcp(&[30, 6, 0xf0, 1, 2, 3]);
    assert_eq!(o, MptcpOption { subtype: subtype::MP_EXPERIMENTAL, len: 6, ..Default::default() });
    let o = only_mptcp(&[30, 4, 0x90, 0]);
    assert_eq!(o, MptcpOption { subtype: 9, len: 4, ..Default::default() });
}

#[test]
fn mptcp_option_of_two_bytes_has_no_subtype() {
    let o = only_mptcp(&[30, 2]);
    assert_eq!(
        o,
        MptcpOption { subtype: 0xff, len: 2, status: mptcp_status::BAD_LENGTH, ..Default::default() }
    );
}

// ---------------------------------------------------------------------------------------------
// Plain TCP options
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_option_area_parses_to_the_empty_value() {
    assert_eq!(parse(&[]), TcpOptions::empty());
    assert_eq!(walk(&[]), vec![Step::End { at: 0 }]);
    let e = TcpOptions::empty();
    assert_eq!((e.mss, e.wscale, e.flags, e.malformed_at, e.parsed_len), (0, 0xff, 0, 0xff, 0));
}

#[test]
fn mss_only() {
    let o = parse(&mss(1460));
    let mut want = TcpOptions::empty();
    want.mss = 1460;
    want.parsed_len = 4;
    assert_eq!(o, want);
}

#[test]
fn window_scale_after_nop() {
    let o = parse(&cat(&[&[NOP], &wscale(14)]));
    assert_eq!((o.wscale, o.flags, o.parsed_len), (14, 0, 4));
}

#[test]
fn window_scale_zero_is_distinguished_from_absent() {
    assert_eq!(parse(&wscale(0)).wscale, 0);
    assert_eq!(parse(&mss(536)).wscale, 0xff);
}

#[test]
fn sack_permitted_sets_its_flag() {
    let o = parse(&cat(&[&[NOP, NOP], &sack_perm()]));
    assert_eq!((o.flags, o.parsed_len), (opt_flags::SACK_PERM, 4));
}

#[test]
fn timestamps_after_two_nops() {
    let o = parse(&cat(&[&[NOP, NOP], &timestamps(0x0a0b_0c0d, 0xfedc_ba98)]));
    assert_eq!(o.flags, opt_flags::TIMESTAMPS);
    assert_eq!((o.ts_val, o.ts_ecr, o.parsed_len), (0x0a0b_0c0d, 0xfedc_ba98, 12));
}

#[test]
fn sack_with_one_to_four_blocks() {
    let blocks = [(1000u32, 2000u32), (3000, 4000), (5000, 6000), (7000, 8000)];
    for n in 1..=4 {
        let bytes = cat(&[&[NOP, NOP], &sack(&blocks[..n])]);
        let o = parse(&bytes);
        assert_eq!(o.flags, opt_flags::SACK, "{n} blocks");
        assert_eq!(o.parsed_len as usize, 2 + 2 + 8 * n);
        assert_eq!(walk(&bytes)[2], Step::Option { kind: 5, start: 2, len: 2 + 8 * n });
    }
}

#[test]
fn sack_whose_length_is_not_a_whole_number_of_blocks_is_malformed() {
    for len in [2u8, 4, 9, 12] {
        let mut bytes = vec![NOP, NOP, 5, len];
        bytes.resize(2 + len as usize, 0x33);
        let o = parse(&bytes);
        assert_eq!(o.flags, opt_flags::MALFORMED, "SACK len {len}");
        assert_eq!((o.malformed_at, o.parsed_len), (2, 2), "SACK len {len}");
    }
}

#[test]
fn unknown_kinds_are_skipped_by_their_length() {
    // Kind 254 (RFC 6994 experimental) of 6 bytes, then MSS.
    let bytes = cat(&[&[254, 6, 0xf9, 0x89, 0, 0], &mss(1400)]);
    let o = parse(&bytes);
    assert_eq!((o.mss, o.flags, o.parsed_len), (1400, 0, 10));
    assert_eq!(
        walk(&bytes),
        vec![
            Step::Option { kind: 254, start: 0, len: 6 },
            Step::Option { kind: 2, start: 6, len: 4 },
            Step::End { at: 10 }
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Padding, EOL and the end of the area
// ---------------------------------------------------------------------------------------------

#[test]
fn eol_ends_parsing_and_later_bytes_are_ignored() {
    let bytes = cat(&[&mss(1460), &[EOL], &wscale(7), &[30, 4, 0x01, 0x81]]);
    let o = parse(&bytes);
    assert_eq!((o.mss, o.wscale, o.mptcp_count, o.flags, o.parsed_len), (1460, 0xff, 0, 0, 4));
    assert_eq!(walk(&bytes), vec![Step::Option { kind: 2, start: 0, len: 4 }, Step::End { at: 4 }]);
}

#[test]
fn garbage_after_eol_is_not_malformed() {
    let o = parse(&[EOL, 2, 0, 99, 30]);
    assert_eq!((o.flags, o.parsed_len, o.malformed_at), (0, 0, 0xff));
}

#[test]
fn eol_padding_to_a_word_boundary() {
    // MSS, wscale, EOL, then zero padding to 8 bytes.
    let o = parse(&cat(&[&mss(1200), &wscale(2), &[EOL]]));
    assert_eq!((o.mss, o.wscale, o.parsed_len, o.flags), (1200, 2, 7, 0));
}

#[test]
fn nop_padding_fills_the_whole_area() {
    let bytes = [NOP; MAX_OPTION_BYTES];
    let o = parse(&bytes);
    assert_eq!((o.flags, o.parsed_len, o.mptcp_count), (0, 40, 0));
    let steps = walk(&bytes);
    assert_eq!(steps.len(), 41);
    assert_eq!(steps[39], Step::Option { kind: NOP, start: 39, len: 1 });
    assert_eq!(steps[40], Step::End { at: 40 });
}

#[test]
fn nop_as_the_last_byte_is_complete() {
    let o = parse(&cat(&[&mss(1460), &[NOP]]));
    assert_eq!((o.mss, o.flags, o.parsed_len), (1460, 0, 5));
}

#[test]
fn claimed_length_shorter_than_the_bytes_limits_the_walk() {
    let bytes = cat(&[&mss(1460), &wscale(7)]);
    let (buf, _) = option_area(&bytes);
    let o = parse_tcp_options(&buf, 4, false);
    assert_eq!((o.mss, o.wscale, o.parsed_len, o.flags), (1460, 0xff, 4, 0));
}

#[test]
fn truncated_flag_is_reported_with_the_decoded_options() {
    let bytes = cat(&[&[NOP, NOP], &timestamps(5, 6)]);
    let (buf, n) = option_area(&bytes);
    let o = parse_tcp_options(&buf, n, true);
    assert_eq!(o.flags, opt_flags::TRUNCATED | opt_flags::TIMESTAMPS);
    assert_eq!((o.ts_val, o.ts_ecr, o.parsed_len), (5, 6, 12));
}

// ---------------------------------------------------------------------------------------------
// Malformed areas
// ---------------------------------------------------------------------------------------------

#[test]
fn mss_running_past_the_area_is_malformed() {
    let o = parse(&[2, 4, 5]);
    assert_eq!((o.flags, o.malformed_at, o.parsed_len, o.mss), (opt_flags::MALFORMED, 0, 0, 0));
    assert_eq!(walk(&[2, 4, 5]), vec![Step::Malformed { at: 0 }]);
}

#[test]
fn timestamps_running_past_the_area_after_a_nop() {
    let bytes = [NOP, 8, 10, 1, 2, 3, 4];
    let o = parse(&bytes);
    assert_eq!((o.flags, o.malformed_at, o.parsed_len), (opt_flags::MALFORMED, 1, 1));
    assert_eq!(walk(&bytes), vec![Step::Option { kind: NOP, start: 0, len: 1 }, Step::Malformed { at: 1 }]);
}

#[test]
fn mptcp_option_running_past_the_area_is_malformed_and_not_decoded() {
    let bytes = [NOP, NOP, 30, 12, 0x10, 1, 0xa1, 0xb2];
    let o = parse(&bytes);
    assert_eq!((o.flags, o.malformed_at, o.parsed_len, o.mptcp_count), (opt_flags::MALFORMED, 2, 2, 0));
}

#[test]
fn option_length_zero_is_malformed() {
    let o = parse(&[NOP, 3, 0, 7]);
    assert_eq!((o.flags, o.malformed_at, o.parsed_len, o.wscale), (opt_flags::MALFORMED, 1, 1, 0xff));
    assert_eq!(next_option(&option_area(&[254, 0]).0, 0, 2), Step::Malformed { at: 0 });
}

#[test]
fn option_length_one_is_malformed() {
    let o = parse(&[30, 1, 0x00, 0x81]);
    assert_eq!((o.flags, o.malformed_at, o.parsed_len, o.mptcp_count), (opt_flags::MALFORMED, 0, 0, 0));
    assert_eq!(walk(&[30, 1, 0, 0x81]), vec![Step::Malformed { at: 0 }]);
}

#[test]
fn kind_byte_as_the_last_byte_without_length_is_malformed() {
    for kind in [2u8, 30, 254] {
        let bytes = [NOP, NOP, NOP, kind];
        let o = parse(&bytes);
        assert_eq!((o.flags, o.malformed_at, o.parsed_len), (opt_flags::MALFORMED, 3, 3), "kind {kind}");
        let steps = walk(&bytes);
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[3], Step::Malformed { at: 3 });
    }
}

#[test]
fn fixed_size_options_with_the_wrong_length_are_malformed() {
    let cases: [(&[u8], u8); 5] = [
        (&[2, 3, 5, 0], 0),                       // MSS of 3 bytes
        (&[2, 5, 5, 0xb4, 0], 0),                 // MSS of 5 bytes
        (&[NOP, 3, 4, 7, 0], 1),                  // window scale of 4 bytes
        (&[NOP, NOP, 4, 3, 0], 2),                // SACK-permitted of 3 bytes
        (&[NOP, NOP, 8, 8, 0, 0, 0, 1, 0, 0], 2), // timestamps of 8 bytes
    ];
    for (bytes, at) in cases {
        let o = parse(bytes);
        assert_eq!(o.flags, opt_flags::MALFORMED, "{bytes:?}");
        assert_eq!((o.malformed_at, o.parsed_len), (at, at), "{bytes:?}");
        assert_eq!((o.mss, o.wscale, o.ts_val), (0, 0xff, 0), "{bytes:?}");
        // The walk itself only knows boundaries: it reports the option, not a malformation.
        let kind = bytes[at as usize];
        let len = bytes[at as usize + 1] as usize;
        assert!(walk(bytes).contains(&Step::Option { kind, start: at as usize, len }));
    }
}

#[test]
fn malformed_option_stops_decoding_of_later_options() {
    let bytes = cat(&[&[NOP, NOP], &sack_perm(), &[2, 3, 5, 1], &[30, 4, 0x01, 0x81]]);
    let o = parse(&bytes);
    assert_eq!(o.flags, opt_flags::SACK_PERM | opt_flags::MALFORMED);
    assert_eq!((o.malformed_at, o.parsed_len, o.mptcp_count, o.mss), (4, 4, 0, 0));
}

#[test]
fn claimed_length_over_40_is_clamped() {
    let (buf, _) = option_area(&[NOP; 40]);
    let o = parse_tcp_options(&buf, 60, false);
    assert_eq!((o.parsed_len, o.flags), (40, 0));
    assert_eq!(next_option(&buf, 40, 60), Step::End { at: 40 });
    assert_eq!(next_option(&buf, 45, 255), Step::End { at: 40 });

    // An MSS that starts at 38 ends at 42: past the (clamped) area.
    let mut bytes = [NOP; 40];
    bytes[38] = 2;
    bytes[39] = 4;
    let (buf, _) = option_area(&bytes);
    let o = parse_tcp_options(&buf, 44, false);
    assert_eq!((o.flags, o.malformed_at, o.parsed_len), (opt_flags::MALFORMED, 38, 38));
}

#[test]
fn option_walk_and_option_area_stop_at_40_bytes() {
    let steps = walk(&[NOP; 50]);
    assert_eq!(steps.len(), 41);
    assert_eq!(*steps.last().unwrap(), Step::End { at: 40 });
    let (buf, n) = option_area(&[7u8; 50]);
    assert_eq!((n, buf), (40, [7u8; 40]));
}

// ---------------------------------------------------------------------------------------------
// More MPTCP options than decoded
// ---------------------------------------------------------------------------------------------

#[test]
fn two_mptcp_options_fit_without_overflow() {
    let bytes = cat(&[&mptcp(subtype::DSS, 0, &[0x01, 0, 0, 0, 9]), &[30, 3, 0x51]]);
    let o = parse(&bytes);
    assert_eq!((o.flags, o.mptcp_count), (0, 2));
    assert_eq!(o.mptcp_options().len(), 2);
    assert_eq!((o.mptcp[0].subtype, o.mptcp[0].data_ack), (subtype::DSS, 9));
    assert_eq!((o.mptcp[1].subtype, o.mptcp[1].flags), (subtype::MP_PRIO, 1));
}

#[test]
fn four_mptcp_options_overflow_but_are_all_counted() {
    let bytes = cat(&[
        &mptcp(subtype::DSS, 0, &[0x01, 0, 0, 0, 9]),     // 8
        &[30, 3, 0x51],                                   // 3
        &mptcp(subtype::ADD_ADDR, 1, &cat(&[&[1], &V4])), // 8
        &mptcp(subtype::REMOVE_ADDR, 0, &[4]),            // 4
    ]);
    let o = parse(&bytes);
    assert_eq!(MAX_MPTCP_OPTIONS, 2);
    assert_eq!(o.flags, opt_flags::MPTCP_OVERFLOW);
    assert_eq!((o.mptcp_count, o.parsed_len), (4, 23));
    assert_eq!(o.mptcp_options().len(), MAX_MPTCP_OPTIONS);
    assert_eq!(o.mptcp[0].subtype, subtype::DSS);
    assert_eq!(o.mptcp[1].subtype, subtype::MP_PRIO);
    assert!(o.find(subtype::DSS).is_some());
    assert!(o.find(subtype::ADD_ADDR).is_none());
    assert!(o.find(subtype::REMOVE_ADDR).is_none());
}

#[test]
fn twenty_minimal_two_byte_mptcp_options_fill_the_area() {
    let bytes: Vec<u8> = [30u8, 2].repeat(20);
    let o = parse(&bytes);
    assert_eq!((o.flags, o.mptcp_count, o.parsed_len), (opt_flags::MPTCP_OVERFLOW, 20, 40));
    for m in o.mptcp_options() {
        assert_eq!((m.subtype, m.len, m.status), (0xff, 2, mptcp_status::BAD_LENGTH));
    }
}

// ---------------------------------------------------------------------------------------------
// Realistic headers (Linux 6.x MPTCP v1)
// ---------------------------------------------------------------------------------------------

/// MSS 1460, SACK-permitted + timestamps, NOP + window scale 7: the Linux SYN option prefix.
fn linux_syn_prefix(ts_val: u32, ts_ecr: u32) -> Vec<u8> {
    cat(&[&mss(1460), &sack_perm(), &timestamps(ts_val, ts_ecr), &[NOP], &wscale(7)])
}

#[test]
fn linux_syn_with_mp_capable() {
    let bytes = cat(&[&linux_syn_prefix(0x0012_d687, 0), &[30, 4, 0x01, 0x01]]);
    assert_eq!(bytes.len(), 24);
    #[rustfmt::skip]
    assert_eq!(bytes, [
        2, 4, 0x05, 0xb4,
        4, 2, 8, 10, 0x00, 0x12, 0xd6, 0x87, 0, 0, 0, 0,
        1, 3, 3, 7,
        30, 4, 0x01, 0x01,
    ]);
    let mut want = TcpOptions::empty();
    want.mss = 1460;
    want.wscale = 7;
    want.flags = opt_flags::SACK_PERM | opt_flags::TIMESTAMPS;
    want.ts_val = 0x0012_d687;
    want.ts_ecr = 0;
    want.parsed_len = 24;
    want.mptcp_count = 1;
    want.mptcp[0] =
        MptcpOption { subtype: subtype::MP_CAPABLE, len: 4, version: 1, flags: 0x01, ..Default::default() };
    assert_eq!(parse(&bytes), want);
    assert_eq!(
        walk(&bytes),
        vec![
            Step::Option { kind: 2, start: 0, len: 4 },
            Step::Option { kind: 4, start: 4, len: 2 },
            Step::Option { kind: 8, start: 6, len: 10 },
            Step::Option { kind: 1, start: 16, len: 1 },
            Step::Option { kind: 3, start: 17, len: 3 },
            Step::Option { kind: 30, start: 20, len: 4 },
            Step::End { at: 24 },
        ]
    );
}

#[test]
fn linux_synack_with_mp_capable_key() {
    let bytes =
        cat(&[&linux_syn_prefix(77, 0x0012_d687), &mptcp(subtype::MP_CAPABLE, 1, &cat(&[&[0x01], &KEY_B]))]);
    assert_eq!(bytes.len(), 32);
    let o = parse(&bytes);
    assert_eq!((o.mss, o.wscale, o.ts_val, o.ts_ecr), (1460, 7, 77, 0x0012_d687));
    assert_eq!(o.flags, opt_flags::SACK_PERM | opt_flags::TIMESTAMPS);
    assert_eq!((o.mptcp_count, o.parsed_len), (1, 32));
    assert_eq!(
        o.find(subtype::MP_CAPABLE).copied(),
        Some(MptcpOption {
            subtype: subtype::MP_CAPABLE,
            len: 12,
            version: 1,
            flags: 0x01,
            ..Default::default()
        })
    );
}

#[test]
fn linux_third_ack_with_both_keys() {
    let bytes = cat(&[
        &[NOP, NOP],
        &timestamps(1000, 77),
        &mptcp(subtype::MP_CAPABLE, 1, &cat(&[&[0x01], &KEY_A, &KEY_B])),
    ]);
    assert_eq!(bytes.len(), 32);
    let o = parse(&bytes);
    assert_eq!((o.mss, o.wscale, o.flags), (0, 0xff, opt_flags::TIMESTAMPS));
    assert_eq!((o.ts_val, o.ts_ecr, o.parsed_len, o.mptcp_count), (1000, 77, 32, 1));
    assert_eq!((o.mptcp[0].subtype, o.mptcp[0].len, o.mptcp[0].status), (subtype::MP_CAPABLE, 20, 0));
}

#[test]
fn linux_first_data_segment_with_mp_capable_data_len() {
    let bytes = cat(&[
        &[NOP, NOP],
        &timestamps(1001, 77),
        &mptcp(subtype::MP_CAPABLE, 1, &cat(&[&[0x01], &KEY_A, &KEY_B, &100u16.to_be_bytes()])),
        &[NOP, NOP],
    ]);
    assert_eq!(bytes.len(), 36);
    let o = parse(&bytes);
    assert_eq!((o.parsed_len, o.mptcp_count, o.flags), (36, 1, opt_flags::TIMESTAMPS));
    assert_eq!((o.mptcp[0].len, o.mptcp[0].data_len, o.mptcp[0].status), (22, 100, 0));
}

#[test]
fn linux_mp_join_syn_on_a_second_subflow() {
    let bytes = cat(&[
        &linux_syn_prefix(5, 0),
        &mptcp(subtype::MP_JOIN, 0, &[2, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04]),
    ]);
    assert_eq!(bytes.len(), 32);
    let o = parse(&bytes);
    assert_eq!((o.mss, o.wscale, o.parsed_len, o.mptcp_count), (1460, 7, 32, 1));
    assert_eq!(
        o.mptcp[0],
        MptcpOption { subtype: subtype::MP_JOIN, len: 12, addr_id: 2, ..Default::default() }
    );
}

#[test]
fn linux_data_segment_with_64_bit_dss_fills_40_bytes() {
    let dss_opt = mptcp(
        subtype::DSS,
        0,
        &cat(&[
            &[0x0f],
            &0x0000_0000_1000_0000u64.to_be_bytes(),
            &0x0000_0000_2000_0000u64.to_be_bytes(),
            &1u32.to_be_bytes(),
            &1448u16.to_be_bytes(),
        ]),
    );
    let bytes = cat(&[&[NOP, NOP], &timestamps(2000, 1500), &dss_opt, &[NOP, NOP]]);
    assert_eq!(bytes.len(), 40);
    let o = parse(&bytes);
    assert_eq!((o.flags, o.parsed_len, o.mptcp_count), (opt_flags::TIMESTAMPS, 40, 1));
    assert_eq!(
        o.mptcp[0],
        MptcpOption {
            subtype: subtype::DSS,
            len: 26,
            flags: 0x0f,
            data_ack: 0x1000_0000,
            dsn: 0x2000_0000,
            ssn: 1,
            data_len: 1448,
            ..Default::default()
        }
    );
}

#[test]
fn linux_ack_with_sack_block_and_dss_data_ack() {
    let bytes = cat(&[
        &[NOP, NOP],
        &timestamps(3, 4),
        &[NOP, NOP],
        &sack(&[(0x1000, 0x2000)]),
        &mptcp(subtype::DSS, 0, &[dss::DATA_ACK, 0, 0, 0x10, 0]),
    ]);
    assert_eq!(bytes.len(), 32);
    let o = parse(&bytes);
    assert_eq!(o.flags, opt_flags::TIMESTAMPS | opt_flags::SACK);
    assert_eq!((o.parsed_len, o.mptcp_count), (32, 1));
    assert_eq!((o.mptcp[0].subtype, o.mptcp[0].data_ack, o.mptcp[0].status), (subtype::DSS, 0x1000, 0));
}

#[test]
fn linux_pure_ack_announcing_an_ipv4_address() {
    let bytes = cat(&[
        &[NOP, NOP],
        &timestamps(9, 8),
        &mptcp(subtype::ADD_ADDR, 0, &cat(&[&[1], &[10, 0, 0, 2], &HMAC])),
    ]);
    assert_eq!(bytes.len(), 28);
    let o = parse(&bytes);
    assert_eq!((o.parsed_len, o.mptcp_count, o.flags), (28, 1, opt_flags::TIMESTAMPS));
    let a = o.find(subtype::ADD_ADDR).unwrap();
    assert_eq!(
        (a.addr_id, &a.addr[..4], a.status, a.flags),
        (1, &[10u8, 0, 0, 2][..], mptcp_status::HMAC, 0)
    );
}

#[test]
fn linux_reset_with_mp_tcprst_and_fastclose() {
    let bytes = cat(&[
        &[NOP, NOP],
        &timestamps(9, 8),
        &[30, 4, 0x81, 3],
        &mptcp(subtype::MP_FASTCLOSE, 0, &cat(&[&[0], &KEY_A])),
    ]);
    assert_eq!(bytes.len(), 28);
    let o = parse(&bytes);
    assert_eq!((o.parsed_len, o.mptcp_count, o.flags), (28, 2, opt_flags::TIMESTAMPS));
    assert_eq!((o.mptcp[0].subtype, o.mptcp[0].flags, o.mptcp[0].reason), (subtype::MP_TCPRST, 1, 3));
    assert_eq!((o.mptcp[1].subtype, o.mptcp[1].len, o.mptcp[1].status), (subtype::MP_FASTCLOSE, 12, 0));
}

#[test]
fn parse_mptcp_directly_at_an_offset() {
    let bytes = cat(&[&[NOP, NOP], &[30, 4, 0x81, 5]]);
    let (buf, _) = option_area(&bytes);
    assert_eq!(
        parse_mptcp(&buf, 2, 4),
        MptcpOption { subtype: subtype::MP_TCPRST, len: 4, flags: 1, reason: 5, ..Default::default() }
    );
    // Too short to hold a subtype.
    assert_eq!(parse_mptcp(&buf, 2, 2).status, mptcp_status::BAD_LENGTH);
}

/// The kernel programs clear their scratch options with word stores of zero and then set
/// `wscale` and `malformed_at` (see `clear_options` in the eBPF crate): that is `empty()` only
/// while every other byte of it is zero.
#[test]
fn empty_options_are_zero_but_the_two_absent_markers() {
    let e = TcpOptions::empty();
    let mut cleared = e;
    // SAFETY: TcpOptions is plain data; zeroing all of its bytes makes a valid value.
    unsafe {
        std::ptr::write_bytes(
            &mut cleared as *mut TcpOptions as *mut u8,
            0,
            std::mem::size_of::<TcpOptions>(),
        )
    };
    cleared.wscale = mptcp_probe_common::proto::NONE_U8;
    cleared.malformed_at = mptcp_probe_common::proto::NONE_U8;
    // SAFETY: both are plain data of the same size, compared byte for byte.
    let bytes = |o: &TcpOptions| unsafe {
        std::slice::from_raw_parts(o as *const TcpOptions as *const u8, std::mem::size_of::<TcpOptions>())
            .to_vec()
    };
    assert_eq!(bytes(&e), bytes(&cleared));
    assert_eq!(e.wscale, 0xff);
}
