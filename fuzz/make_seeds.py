#!/usr/bin/env python3
"""Writes the seed corpus of the parse_options fuzz target (fuzz/corpus/parse_options/seed-*).

Each file is one control byte (the claimed option-area length, see fuzz_targets/parse_options.rs)
followed by the option bytes of a real TCP header.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "parse_options")

NOP = b"\x01"
EOL = b"\x00"


def mss(v):
    return struct.pack("!BBH", 2, 4, v)


def wscale(v):
    return bytes([3, 3, v])


SACK_PERM = bytes([4, 2])


def ts(val, ecr):
    return struct.pack("!BBII", 8, 10, val, ecr)


def sack(*blocks):
    return bytes([5, 2 + 8 * len(blocks)]) + b"".join(struct.pack("!II", l, r) for l, r in blocks)


def mptcp(subtype, low, body):
    return bytes([30, 3 + len(body), (subtype << 4) | low]) + body


KEY_A = bytes(range(0x11, 0x19))
KEY_B = bytes(range(0x21, 0x29))
SYN = mss(1460) + SACK_PERM + ts(0x12D687, 0) + NOP + wscale(7)

SEEDS = {
    "linux-syn-mp-capable": SYN + mptcp(0, 1, b"\x01"),
    "linux-synack-mp-capable": SYN + mptcp(0, 1, b"\x01" + KEY_B),
    "linux-ack-mp-capable": NOP + NOP + ts(1000, 77) + mptcp(0, 1, b"\x01" + KEY_A + KEY_B),
    "linux-data-mp-capable-csum": NOP + NOP + ts(1001, 77)
    + mptcp(0, 1, b"\x81" + KEY_A + KEY_B + struct.pack("!HH", 100, 0xBEEF)),
    "linux-syn-mp-join": SYN + mptcp(1, 1, bytes([2]) + struct.pack("!II", 0xDEADBEEF, 1)),
    "linux-data-dss64": NOP + NOP + ts(2000, 1500)
    + mptcp(2, 0, b"\x0f" + struct.pack("!QQIH", 1 << 28, 2 << 28, 1, 1448)) + NOP + NOP,
    "linux-ack-sack-dss": NOP + NOP + ts(3, 4) + NOP + NOP + sack((0x1000, 0x2000))
    + mptcp(2, 0, b"\x01" + struct.pack("!I", 0x1000)),
    "linux-add-addr-v6-port": NOP + NOP
    + mptcp(3, 0, bytes([4]) + bytes.fromhex("20010db8000000000000000000000001") + struct.pack("!H", 443) + bytes(8)),
    "linux-rst-tcprst-fastclose": NOP + NOP + ts(9, 8) + mptcp(8, 1, b"\x03") + mptcp(7, 0, b"\x00" + KEY_A),
    "remove-prio-fail": mptcp(4, 0, b"\x01\x02") + mptcp(5, 1, b"") + mptcp(6, 0, b"\x00" + bytes(8)) + EOL,
    "truncated-ts": NOP + ts(1, 2)[:6],
}

# Control bytes other than "claimed length = bytes given": the header promised 12 option bytes
# but the packet held 7 (bit 6 = truncated).
CONTROL = {"truncated-ts": 0x40 | 12}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, opts in SEEDS.items():
        assert len(opts) <= 40, (name, len(opts))
        with open(os.path.join(OUT, "seed-" + name), "wb") as f:
            f.write(bytes([CONTROL.get(name, len(opts))]) + opts)


if __name__ == "__main__":
    main()
