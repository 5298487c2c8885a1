//! Fuzzes the shared TCP/MPTCP option parser (`mptcp_probe_common::options`).
//!
//! Input: first byte = control, the rest = option bytes (the first 40 are copied into the
//! parser's fixed buffer, the remainder of the buffer is zero).
//! Control byte: bits 0..=5 the claimed option-area length (0..=63, so lengths over 40 are
//! exercised), bit 6 the `truncated` flag, bit 7 set means "claim exactly the bytes given".
#![no_main]

use libfuzzer_sys::fuzz_target;
use mptcp_probe_common::options::{
    next_option, opt_flags, option_area, parse_mptcp, parse_tcp_options, OptionWalk, Step,
    MAX_MPTCP_OPTIONS, MAX_OPTION_BYTES, TCPOPT_MPTCP,
};

/// Whether `len` is a valid length for `kind` (RFC 793/7323/2018 sizes; any for other kinds).
/// Mirrors the per-kind check of `parse_tcp_options`.
fn len_fits(kind: u8, len: usize) -> bool {
    match kind {
        2 => len == 4,
        3 => len == 3,
        4 => len == 2,
        5 => len >= 10 && (len - 2) % 8 == 0,
        8 => len == 10,
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let truncated = ctl & 0x40 != 0;
    let claimed = if ctl & 0x80 != 0 {
        rest.len()
    } else {
        (ctl & 0x3f) as usize
    };
    let (buf, _) = option_area(rest);
    let area = claimed.min(MAX_OPTION_BYTES);

    let p = parse_tcp_options(&buf, claimed, truncated);

    // Basic bounds.
    assert!(
        p.parsed_len as usize <= area,
        "parsed_len {} > area {area}",
        p.parsed_len
    );
    assert_eq!(p.flags & opt_flags::TRUNCATED != 0, truncated);
    let malformed = p.flags & opt_flags::MALFORMED != 0;
    if malformed {
        assert!((p.malformed_at as usize) < MAX_OPTION_BYTES);
        assert_eq!(p.malformed_at, p.parsed_len);
    } else {
        assert_eq!(p.malformed_at, 0xff);
    }

    // The walk, twice: next_option with the unclamped claimed length, and OptionWalk over the
    // clamped area. Both must give the same steps.
    let mut steps = [Step::End { at: 0 }; MAX_OPTION_BYTES + 1];
    let mut nsteps = 0;
    let mut at = 0usize;
    loop {
        assert!(
            nsteps <= MAX_OPTION_BYTES,
            "walk did not end within 41 steps"
        );
        let s = next_option(&buf, at, claimed);
        steps[nsteps] = s;
        nsteps += 1;
        match s {
            Step::Option { start, len, .. } => {
                // Boundaries strictly increase and stay inside the area.
                assert_eq!(start, at);
                assert!(len >= 1);
                assert!(start + len <= area, "option {start}+{len} past area {area}");
                at = start + len;
            }
            Step::End { at: end } => {
                assert!(end == area || (end < area && buf[end] == 0));
                assert_eq!(end, at);
                break;
            }
            Step::Malformed { at: bad } => {
                assert_eq!(bad, at);
                assert!(bad < area);
                break;
            }
        }
    }
    let steps = &steps[..nsteps];
    assert!(OptionWalk::new(&buf[..area]).eq(steps.iter().copied()));

    // What parse_tcp_options must have made of that walk: it stops at the first option whose
    // length does not fit its kind, or at the walk's Malformed step, or at the walk's End.
    let mut mptcp_seen = 0usize;
    let mut stop: Option<(bool, usize)> = None; // (malformed, offset)
    let mut decoded = 0usize;
    for s in steps {
        match *s {
            Step::Option { kind, start, len } => {
                if !len_fits(kind, len) {
                    stop = Some((true, start));
                    break;
                }
                if kind == TCPOPT_MPTCP {
                    assert!(len >= 2);
                    if let Some(m) = p.mptcp.get(mptcp_seen) {
                        // Each decoded option is the one at its place in the walk.
                        assert_eq!(*m, parse_mptcp(&buf, start, len));
                        assert!(m.len >= 2);
                        assert_eq!(m.len as usize, len);
                        decoded += 1;
                    }
                    mptcp_seen += 1;
                }
            }
            Step::End { at } => stop = Some((false, at)),
            Step::Malformed { at } => stop = Some((true, at)),
        }
    }
    let (want_malformed, want_at) = stop.expect("walk has a final step");
    assert_eq!(
        malformed, want_malformed,
        "MALFORMED flag vs walk {steps:?}"
    );
    assert_eq!(p.parsed_len as usize, want_at);
    if want_malformed {
        assert_eq!(p.malformed_at as usize, want_at);
    }
    // A Malformed step in the walk always means MALFORMED, at or before it.
    if let Some(Step::Malformed { at }) = steps.last() {
        assert!(malformed && p.malformed_at as usize <= *at);
    }

    // MPTCP bookkeeping.
    assert_eq!(p.mptcp_count as usize, mptcp_seen);
    assert_eq!(p.mptcp_options().len(), mptcp_seen.min(MAX_MPTCP_OPTIONS));
    assert_eq!(decoded, mptcp_seen.min(MAX_MPTCP_OPTIONS));
    assert_eq!(
        p.flags & opt_flags::MPTCP_OVERFLOW != 0,
        mptcp_seen > MAX_MPTCP_OPTIONS
    );
    for m in p.mptcp_options() {
        assert!(m.len >= 2);
    }

    // The MPTCP decoder on its own, at any place and length, must not panic.
    let start = rest.first().copied().unwrap_or(0) as usize % (MAX_OPTION_BYTES + 8);
    let _ = parse_mptcp(&buf, start, (ctl as usize) % 64);
});
