//! Property tests: the shared option parser agrees with etherparse 0.19 on option boundaries.
//!
//! etherparse's `TcpOptionsIterator` (src/transport/tcp_options_iterator.rs in 0.19.0) works like
//! this, and the agreement checked below is derived from it:
//!
//! * EOL (kind 0) ends the iteration (`None`); bytes after it are never looked at. Running out of
//!   bytes also ends it. Ours: `Step::End` at the same offset.
//! * NOP (kind 1) is one byte. Ours: a one-byte `Step::Option`.
//! * MSS (2), window scale (3), SACK-permitted (4) and timestamps (8) have one fixed length. If
//!   fewer bytes than that length remain, etherparse returns `UnexpectedEndOfSlice` *without
//!   looking at the length byte*; otherwise a length byte other than the fixed length is
//!   `UnexpectedSize`.
//! * SACK (5): fewer than 2 bytes left is `UnexpectedEndOfSlice`; a length other than 10, 18, 26
//!   or 34 is `UnexpectedSize` (checked *before* whether the bytes are there); then a length past
//!   the end is `UnexpectedEndOfSlice`.
//! * Every other kind, MPTCP's 30 included, is `UnknownId`: etherparse does not skip options by
//!   their length byte.
//! * After any error the iterator is exhausted.
//!
//! Differences by design (the reason the agreement is "in step up to etherparse's first error"):
//!
//! * Unknown kinds (30 and others): etherparse stops; ours skips the option by its length byte
//!   (or reports `Malformed` if that length is 0, 1, missing or runs past the area). So at an
//!   `UnknownId` ours reports an option of that kind, or `Malformed`, at the same offset, and
//!   nothing after it is compared.
//! * Length checks per kind: `next_option`/`OptionWalk` only find boundaries, so a fixed-size
//!   kind with a wrong but in-bounds length byte (e.g. MSS `[2, 3, x]`) is a 3-byte
//!   `Step::Option` there, where etherparse reports `UnexpectedSize` or, when fewer bytes than
//!   the fixed size remain, `UnexpectedEndOfSlice`. `parse_tcp_options` applies the per-kind
//!   check and flags `MALFORMED` at that offset. Ours reports `Malformed` directly when the
//!   length is 0/1, missing, or runs past the area.
//! * Bytes beyond 40: `OptionWalk`/`option_area` clamp the area to 40 bytes; etherparse takes any
//!   slice. The properties only hand etherparse the (at most 40) bytes ours sees.

use etherparse::{TcpOptionElement, TcpOptionReadError, TcpOptionsIterator};
use mptcp_probe_common::options::{
    next_option, opt_flags, option_area, parse_mptcp, parse_tcp_options, OptionWalk, Step, TcpOptions,
    MAX_MPTCP_OPTIONS, MAX_OPTION_BYTES,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Kinds etherparse knows.
const ETHERPARSE_KINDS: [u8; 7] = [0, 1, 2, 3, 4, 5, 8];

/// Kind and wire length of an element etherparse returned.
fn element_kind_len(e: &TcpOptionElement) -> (u8, usize) {
    match e {
        TcpOptionElement::Noop => (1, 1),
        TcpOptionElement::MaximumSegmentSize(_) => (2, 4),
        TcpOptionElement::WindowScale(_) => (3, 3),
        TcpOptionElement::SelectiveAcknowledgementPermitted => (4, 2),
        TcpOptionElement::SelectiveAcknowledgement(_, more) => {
            (5, 10 + 8 * more.iter().filter(|b| b.is_some()).count())
        }
        TcpOptionElement::Timestamp(_, _) => (8, 10),
    }
}

/// Whether etherparse accepts `len` as the length of a known `kind`.
fn etherparse_len_ok(kind: u8, len: usize) -> bool {
    match kind {
        2 => len == 4,
        3 => len == 3,
        4 => len == 2,
        5 => matches!(len, 10 | 18 | 26 | 34),
        8 => len == 10,
        _ => true,
    }
}

/// What etherparse's elements say `parse_tcp_options` must have decoded (last one wins).
#[derive(Default)]
struct Seen {
    mss: Option<u16>,
    wscale: Option<u8>,
    ts: Option<(u32, u32)>,
    sack_perm: bool,
    sack: bool,
}

impl Seen {
    fn add(&mut self, e: &TcpOptionElement) {
        match *e {
            TcpOptionElement::MaximumSegmentSize(v) => self.mss = Some(v),
            TcpOptionElement::WindowScale(v) => self.wscale = Some(v),
            TcpOptionElement::Timestamp(a, b) => self.ts = Some((a, b)),
            TcpOptionElement::SelectiveAcknowledgementPermitted => self.sack_perm = true,
            TcpOptionElement::SelectiveAcknowledgement(..) => self.sack = true,
            TcpOptionElement::Noop => {}
        }
    }

    /// The decoded values of the options before `off` (all accepted by etherparse).
    fn check(&self, p: &TcpOptions) -> Result<(), TestCaseError> {
        prop_assert_eq!(p.mss, self.mss.unwrap_or(0));
        prop_assert_eq!(p.wscale, self.wscale.unwrap_or(0xff));
        prop_assert_eq!((p.ts_val, p.ts_ecr), self.ts.unwrap_or((0, 0)));
        prop_assert_eq!(p.flags & opt_flags::TIMESTAMPS != 0, self.ts.is_some());
        prop_assert_eq!(p.flags & opt_flags::SACK_PERM != 0, self.sack_perm);
        prop_assert_eq!(p.flags & opt_flags::SACK != 0, self.sack);
        Ok(())
    }
}

/// Walks etherparse and `OptionWalk` in step over `bytes` (at most 40 bytes) and checks that they
/// agree as described in the module comment.
fn check_agreement(bytes: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(bytes.len() <= MAX_OPTION_BYTES);
    let (buf, n) = option_area(bytes);
    prop_assert_eq!(n, bytes.len());
    let parsed = parse_tcp_options(&buf, n, false);
    let mut ours = OptionWalk::new(bytes);
    let mut seen = Seen::default();
    let mut off = 0usize;

    for item in TcpOptionsIterator::from_slice(bytes) {
        match item {
            Ok(e) => {
                let (kind, len) = element_kind_len(&e);
                prop_assert_eq!(bytes[off], kind);
                prop_assert_eq!(ours.next(), Some(Step::Option { kind, start: off, len }));
                seen.add(&e);
                off += len;
            }
            Err(TcpOptionReadError::UnknownId(id)) => {
                prop_assert_eq!(bytes[off], id);
                prop_assert!(!ETHERPARSE_KINDS.contains(&id));
                // Everything before `off` was accepted by both, and decoded.
                match ours.next() {
                    Some(Step::Option { kind, start, len }) => {
                        prop_assert_eq!((kind, start), (id, off));
                        prop_assert!(len >= 2 && off + len <= n);
                        // Unknown kinds fit any length, so parsing went on past this option.
                        prop_assert!(
                            parsed.malformed_at == 0xff || parsed.malformed_at as usize >= off + len
                        );
                        prop_assert!(parsed.parsed_len as usize >= off + len);
                        if id == 30 {
                            prop_assert!(parsed.mptcp_count >= 1);
                            prop_assert_eq!(parsed.mptcp[0], parse_mptcp(&buf, off, len));
                        }
                    }
                    Some(Step::Malformed { at }) => {
                        prop_assert_eq!(at, off);
                        prop_assert_eq!(parsed.flags & opt_flags::MALFORMED, opt_flags::MALFORMED);
                        prop_assert_eq!(parsed.malformed_at as usize, off);
                        prop_assert_eq!(parsed.parsed_len as usize, off);
                        seen.check(&parsed)?;
                        prop_assert_eq!(parsed.mptcp_count, 0);
                    }
                    other => {
                        prop_assert!(false, "etherparse: unknown kind {} at {}, ours: {:?}", id, off, other)
                    }
                }
                return Ok(());
            }
            Err(err) => {
                let kind = match err {
                    TcpOptionReadError::UnexpectedSize { option_id, size } => {
                        prop_assert_eq!(bytes.get(off + 1).copied(), Some(size));
                        prop_assert!(!etherparse_len_ok(option_id, size as usize));
                        option_id
                    }
                    TcpOptionReadError::UnexpectedEndOfSlice { option_id, expected_len, actual_len } => {
                        prop_assert_eq!(actual_len, n - off);
                        prop_assert!(actual_len < expected_len as usize);
                        if actual_len == 1 {
                            // A kind byte with no length byte.
                            prop_assert_eq!(next_option(&buf, off, n), Step::Malformed { at: off });
                        }
                        option_id
                    }
                    TcpOptionReadError::UnknownId(_) => unreachable!(),
                };
                prop_assert_eq!(bytes[off], kind);
                prop_assert!(ETHERPARSE_KINDS.contains(&kind) && kind > 1);
                match ours.next() {
                    Some(Step::Malformed { at }) => prop_assert_eq!(at, off),
                    Some(Step::Option { kind: k, start, len }) => {
                        prop_assert_eq!((k, start), (kind, off));
                        prop_assert!(!etherparse_len_ok(kind, len), "{} bytes fit kind {}", len, kind);
                    }
                    other => {
                        prop_assert!(false, "etherparse: {:?} at {}, ours: {:?}", err, off, other)
                    }
                }
                // Either way the full parser calls it malformed, right there.
                prop_assert_eq!(parsed.flags & opt_flags::MALFORMED, opt_flags::MALFORMED);
                prop_assert_eq!(parsed.malformed_at as usize, off);
                prop_assert_eq!(parsed.parsed_len as usize, off);
                prop_assert_eq!(parsed.mptcp_count, 0);
                seen.check(&parsed)?;
                return Ok(());
            }
        }
    }

    // etherparse ended cleanly: at an EOL or at the end of the bytes. Ours ends at the same place.
    prop_assert!(off == n || bytes[off] == 0);
    prop_assert_eq!(ours.next(), Some(Step::End { at: off }));
    prop_assert_eq!(ours.next(), None);
    prop_assert_eq!(parsed.flags & opt_flags::MALFORMED, 0);
    prop_assert_eq!(parsed.malformed_at, 0xff);
    prop_assert_eq!(parsed.parsed_len as usize, off);
    // etherparse would have stopped at any kind 30.
    prop_assert_eq!(parsed.mptcp_count, 0);
    seen.check(&parsed)?;
    Ok(())
}

/// Invariants of `parse_tcp_options` for any buffer and any claimed length.
fn check_parse_invariants(
    buf: &[u8; MAX_OPTION_BYTES],
    len: usize,
    truncated: bool,
) -> Result<(), TestCaseError> {
    let p = parse_tcp_options(buf, len, truncated);
    let area = len.min(MAX_OPTION_BYTES);
    prop_assert!(p.parsed_len as usize <= area);
    prop_assert_eq!(p.flags & opt_flags::TRUNCATED != 0, truncated);
    if p.flags & opt_flags::MALFORMED != 0 {
        prop_assert!((p.malformed_at as usize) < MAX_OPTION_BYTES);
        prop_assert_eq!(p.malformed_at, p.parsed_len);
    } else {
        prop_assert_eq!(p.malformed_at, 0xff);
    }
    prop_assert_eq!(p.mptcp_options().len(), (p.mptcp_count as usize).min(MAX_MPTCP_OPTIONS));
    prop_assert_eq!(p.flags & opt_flags::MPTCP_OVERFLOW != 0, p.mptcp_count as usize > MAX_MPTCP_OPTIONS);
    for m in p.mptcp_options() {
        prop_assert!(m.len >= 2);
    }
    // The walk over the same area has the same end (or passes a mis-sized option at the
    // malformed offset).
    let steps: Vec<Step> = OptionWalk::new(&buf[..area]).collect();
    let mut prev_end = 0usize;
    for s in &steps {
        match *s {
            Step::Option { start, len, .. } => {
                prop_assert_eq!(start, prev_end);
                prop_assert!(len >= 1 && start + len <= area);
                prev_end = start + len;
            }
            Step::End { at } | Step::Malformed { at } => prop_assert_eq!(at, prev_end),
        }
    }
    match *steps.last().unwrap() {
        Step::Malformed { at } => {
            prop_assert_eq!(p.flags & opt_flags::MALFORMED, opt_flags::MALFORMED);
            prop_assert!(p.malformed_at as usize <= at);
        }
        Step::End { at } => {
            if p.flags & opt_flags::MALFORMED == 0 {
                prop_assert_eq!(p.parsed_len as usize, at);
            }
        }
        Step::Option { .. } => prop_assert!(false, "walk did not end"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// A byte biased towards the interesting values (small kinds and lengths, MPTCP's 30).
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        4 => 0u8..=12,
        1 => Just(30u8),
        1 => prop::sample::select(vec![18u8, 26, 34, 40, 255]),
    ]
}

/// One option as a sender would write it (possibly with lengths etherparse rejects).
#[derive(Clone, Debug)]
enum WireOpt {
    Eol,
    Nop,
    Mss(u16),
    Ws(u8),
    SackPerm,
    Sack(Vec<(u32, u32)>),
    Ts(u32, u32),
    /// Kind 30 with the given bytes after the length byte (subtype byte first).
    Mptcp(Vec<u8>),
    /// An unknown kind with its body.
    Unknown(u8, Vec<u8>),
}

impl WireOpt {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            WireOpt::Eol => out.push(0),
            WireOpt::Nop => out.push(1),
            WireOpt::Mss(v) => {
                out.extend_from_slice(&[2, 4]);
                out.extend_from_slice(&v.to_be_bytes());
            }
            WireOpt::Ws(v) => out.extend_from_slice(&[3, 3, *v]),
            WireOpt::SackPerm => out.extend_from_slice(&[4, 2]),
            WireOpt::Sack(blocks) => {
                out.extend_from_slice(&[5, (2 + 8 * blocks.len()) as u8]);
                for (l, r) in blocks {
                    out.extend_from_slice(&l.to_be_bytes());
                    out.extend_from_slice(&r.to_be_bytes());
                }
            }
            WireOpt::Ts(a, b) => {
                out.extend_from_slice(&[8, 10]);
                out.extend_from_slice(&a.to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
            }
            WireOpt::Mptcp(body) => {
                out.extend_from_slice(&[30, (2 + body.len()) as u8]);
                out.extend_from_slice(body);
            }
            WireOpt::Unknown(kind, body) => {
                out.extend_from_slice(&[*kind, (2 + body.len()) as u8]);
                out.extend_from_slice(body);
            }
        }
    }

    fn kind(&self) -> u8 {
        match self {
            WireOpt::Eol => 0,
            WireOpt::Nop => 1,
            WireOpt::Mss(_) => 2,
            WireOpt::Ws(_) => 3,
            WireOpt::SackPerm => 4,
            WireOpt::Sack(_) => 5,
            WireOpt::Ts(..) => 8,
            WireOpt::Mptcp(_) => 30,
            WireOpt::Unknown(k, _) => *k,
        }
    }
}

fn wire_opt() -> impl Strategy<Value = WireOpt> {
    let unknown_kind = prop_oneof![6u8..=7, 9u8..=29, 31u8..=255];
    let mptcp_body =
        (0u8..16, 0u8..16, prop::collection::vec(any::<u8>(), 0..=27)).prop_map(|(st, low, mut rest)| {
            rest.insert(0, (st << 4) | low);
            rest
        });
    prop_oneof![
        1 => Just(WireOpt::Eol),
        4 => Just(WireOpt::Nop),
        2 => any::<u16>().prop_map(WireOpt::Mss),
        2 => any::<u8>().prop_map(WireOpt::Ws),
        2 => Just(WireOpt::SackPerm),
        2 => prop::collection::vec(any::<(u32, u32)>(), 1..=4).prop_map(WireOpt::Sack),
        2 => any::<(u32, u32)>().prop_map(|(a, b)| WireOpt::Ts(a, b)),
        4 => mptcp_body.prop_map(WireOpt::Mptcp),
        1 => Just(WireOpt::Mptcp(vec![])),
        1 => (unknown_kind, prop::collection::vec(any::<u8>(), 0..=8)).prop_map(|(k, b)| WireOpt::Unknown(k, b)),
    ]
}

/// Encodes `opts`, cut to 40 bytes, and the (kind, start, len) of each option in the encoding.
fn encode(opts: &[WireOpt]) -> (Vec<u8>, Vec<(u8, usize, usize)>) {
    let mut bytes = Vec::new();
    let mut spans = Vec::new();
    for o in opts {
        let start = bytes.len();
        o.encode(&mut bytes);
        spans.push((o.kind(), start, bytes.len() - start));
    }
    bytes.truncate(MAX_OPTION_BYTES);
    (bytes, spans)
}

/// A well-formed option list, then possibly one byte overwritten and possibly cut short.
fn mutated_list() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(wire_opt(), 0..=12),
        prop::option::of((any::<prop::sample::Index>(), interesting_byte())),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(opts, poke, cut)| {
            let (mut bytes, _) = encode(&opts);
            if let (Some((i, b)), false) = (poke, bytes.is_empty()) {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            if let (Some(c), false) = (cut, bytes.is_empty()) {
                let c = c.index(bytes.len() + 1);
                bytes.truncate(c);
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Arbitrary (biased) bytes: both parsers agree up to etherparse's first error.
    #[test]
    fn agrees_with_etherparse_on_arbitrary_bytes(bytes in prop::collection::vec(interesting_byte(), 0..=MAX_OPTION_BYTES)) {
        check_agreement(&bytes)?;
    }

    /// Uniformly random bytes, for the cases the bias above makes rare.
    #[test]
    fn agrees_with_etherparse_on_uniform_bytes(bytes in prop::collection::vec(any::<u8>(), 0..=MAX_OPTION_BYTES)) {
        check_agreement(&bytes)?;
    }

    /// Well-formed lists with one byte changed and/or cut short.
    #[test]
    fn agrees_with_etherparse_on_damaged_option_lists(bytes in mutated_list()) {
        check_agreement(&bytes)?;
    }

    /// Well-formed option lists: etherparse agrees, and ours finds exactly the encoded boundaries
    /// (including the kind-30 and unknown options etherparse cannot skip).
    #[test]
    fn well_formed_lists_walk_to_their_encoded_boundaries(opts in prop::collection::vec(wire_opt(), 0..=12)) {
        let (bytes, spans) = encode(&opts);
        check_agreement(&bytes)?;

        let n = bytes.len();
        let mut want = Vec::new();
        let mut mptcp = 0u8;
        let mut end = Step::End { at: n };
        for &(kind, start, len) in &spans {
            if start >= n {
                break;
            }
            if kind == 0 {
                end = Step::End { at: start };
                break;
            }
            if start + len > n {
                // Cut by the 40-byte limit (only options of 2 or more bytes can be).
                end = Step::Malformed { at: start };
                break;
            }
            want.push(Step::Option { kind, start, len });
            if kind == 30 {
                mptcp += 1;
            }
        }
        want.push(end);
        let got: Vec<Step> = OptionWalk::new(&bytes).collect();
        prop_assert_eq!(&got, &want);

        let p = parse_tcp_options(&option_area(&bytes).0, n, false);
        prop_assert_eq!(p.mptcp_count, mptcp);
        match end {
            Step::End { at } => {
                prop_assert_eq!(p.flags & opt_flags::MALFORMED, 0);
                prop_assert_eq!(p.parsed_len as usize, at);
            }
            Step::Malformed { at } => {
                prop_assert_eq!(p.malformed_at as usize, at);
                prop_assert_eq!(p.parsed_len as usize, at);
            }
            Step::Option { .. } => unreachable!(),
        }
        // Each decoded MPTCP option is the one at its place in the walk.
        let starts: Vec<(usize, usize)> = want
            .iter()
            .filter_map(|s| match *s {
                Step::Option { kind: 30, start, len } => Some((start, len)),
                _ => None,
            })
            .collect();
        let buf = option_area(&bytes).0;
        for (m, &(start, len)) in p.mptcp_options().iter().zip(&starts) {
            prop_assert_eq!(*m, parse_mptcp(&buf, start, len));
        }
    }

    /// `parse_tcp_options` never panics, whatever the buffer, claimed length and flag.
    #[test]
    fn parse_never_panics_and_stays_in_the_area(
        raw in prop::collection::vec(interesting_byte(), MAX_OPTION_BYTES),
        len in prop_oneof![0usize..=48, Just(usize::MAX), any::<usize>()],
        truncated in any::<bool>(),
    ) {
        let (buf, _) = option_area(&raw);
        check_parse_invariants(&buf, len, truncated)?;
        // next_option and parse_mptcp at any place do not panic either.
        for at in 0..=MAX_OPTION_BYTES + 2 {
            let _ = next_option(&buf, at, len);
            let _ = parse_mptcp(&buf, at, (len % 64).max(2));
        }
    }

    /// The walk sees only the first 40 bytes of a longer slice.
    #[test]
    fn walk_clamps_long_slices_to_40_bytes(bytes in prop::collection::vec(interesting_byte(), 0..=64)) {
        let long: Vec<Step> = OptionWalk::new(&bytes).collect();
        let short: Vec<Step> = OptionWalk::new(&bytes[..bytes.len().min(MAX_OPTION_BYTES)]).collect();
        prop_assert_eq!(long, short);
    }
}

#[test]
fn etherparse_stops_at_mptcp_where_ours_goes_on() {
    // MSS, MP_CAPABLE (SYN), window scale.
    let bytes = [2, 4, 5, 180, 30, 4, 0x01, 0x81, 3, 3, 7];
    let e: Vec<_> = TcpOptionsIterator::from_slice(&bytes).collect();
    assert_eq!(
        e,
        vec![Ok(TcpOptionElement::MaximumSegmentSize(1460)), Err(TcpOptionReadError::UnknownId(30))]
    );
    let ours: Vec<Step> = OptionWalk::new(&bytes).collect();
    assert_eq!(
        ours,
        vec![
            Step::Option { kind: 2, start: 0, len: 4 },
            Step::Option { kind: 30, start: 4, len: 4 },
            Step::Option { kind: 3, start: 8, len: 3 },
            Step::End { at: 11 },
        ]
    );
    check_agreement(&bytes).unwrap();
}

#[test]
fn etherparse_end_of_slice_before_length_byte_matches_our_missized_option() {
    // MSS whose length byte says 2 with only 3 bytes left: etherparse checks the slice first.
    let bytes = [1, 2, 2, 0];
    let e: Vec<_> = TcpOptionsIterator::from_slice(&bytes).collect();
    assert_eq!(
        e,
        vec![
            Ok(TcpOptionElement::Noop),
            Err(TcpOptionReadError::UnexpectedEndOfSlice { option_id: 2, expected_len: 4, actual_len: 3 })
        ]
    );
    let ours: Vec<Step> = OptionWalk::new(&bytes).collect();
    assert_eq!(ours[1], Step::Option { kind: 2, start: 1, len: 2 });
    let p = parse_tcp_options(&option_area(&bytes).0, 4, false);
    assert_eq!((p.flags, p.malformed_at), (opt_flags::MALFORMED, 1));
    check_agreement(&bytes).unwrap();
}

#[test]
fn etherparse_rejects_a_short_sack_which_ours_flags_malformed() {
    let bytes = [1, 1, 5, 4, 0, 0];
    let e: Vec<_> = TcpOptionsIterator::from_slice(&bytes).collect();
    assert_eq!(e[2], Err(TcpOptionReadError::UnexpectedSize { option_id: 5, size: 4 }));
    check_agreement(&bytes).unwrap();
}
