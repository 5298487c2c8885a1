//! Ring-buffer records → typed events.

use mptcp_probe_common::event::{
    EventHeader, EventKind, FallbackEvent, MappingEvent, PacketEvent, ResetEvent, SockStateEvent,
    EVENT_VERSION,
};
use thiserror::Error;

// Events are decoded one at a time from the ring buffer and handled in place; boxing the
// packet variant would cost an allocation per packet event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Packet(PacketEvent),
    SockState(SockStateEvent),
    Reset(ResetEvent),
    Mapping(MappingEvent),
    Fallback(FallbackEvent),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring-buffer record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error(
        "event version {0} does not match this build's {EVENT_VERSION}: kernel and user programs differ"
    )]
    Version(u8),
    #[error("{kind:?} record of {got} bytes, expected {want}")]
    Size { kind: EventKind, got: usize, want: usize },
}

fn read<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if bytes.len() < want {
        return Err(DecodeError::Size { kind, got: bytes.len(), want });
    }
    // SAFETY: length checked; T is a repr(C) plain-data type for which every bit pattern is
    // valid; read_unaligned copes with the ring buffer's 8-byte alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let kind = EventKind::from_u8(bytes[0]).ok_or(DecodeError::UnknownKind(bytes[0]))?;
    if bytes[1] != EVENT_VERSION {
        return Err(DecodeError::Version(bytes[1]));
    }
    Ok(match kind {
        EventKind::Packet => Event::Packet(read(bytes, kind)?),
        EventKind::SockState => Event::SockState(read(bytes, kind)?),
        EventKind::Reset => Event::Reset(read(bytes, kind)?),
        EventKind::Mapping => Event::Mapping(read(bytes, kind)?),
        EventKind::Fallback => Event::Fallback(read(bytes, kind)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_unknown_and_mismatched_records_are_errors_not_panics() {
        assert_eq!(decode(&[1, 1]).unwrap_err(), DecodeError::Short(2));
        let mut rec = vec![0u8; 16];
        rec[0] = 99;
        rec[1] = EVENT_VERSION;
        assert_eq!(decode(&rec).unwrap_err(), DecodeError::UnknownKind(99));
        rec[0] = EventKind::Packet as u8;
        rec[1] = EVENT_VERSION + 1;
        assert_eq!(decode(&rec).unwrap_err(), DecodeError::Version(EVENT_VERSION + 1));
        rec[1] = EVENT_VERSION;
        assert!(matches!(
            decode(&rec).unwrap_err(),
            DecodeError::Size { kind: EventKind::Packet, got: 16, .. }
        ));
    }

    #[test]
    fn fallback_record_round_trips() {
        let ev = FallbackEvent {
            header: EventHeader {
                kind: EventKind::Fallback as u8,
                version: EVENT_VERSION,
                cpu: 1,
                netns: 7,
                ts_ns: 42,
            },
            msk: 0xdead_beef,
            mib: 12,
            _pad: 0,
        };
        // SAFETY: plain-data struct viewed as bytes for the test.
        let bytes = unsafe {
            std::slice::from_raw_parts((&ev as *const FallbackEvent).cast::<u8>(), size_of::<FallbackEvent>())
        };
        match decode(bytes).unwrap() {
            Event::Fallback(f) => {
                assert_eq!(f.msk, 0xdead_beef);
                assert_eq!(f.mib, 12);
                assert_eq!(f.header.ts_ns, 42);
            }
            other => panic!("decoded as {other:?}"),
        }
    }
}
