"""Framing: the same vectors give the same bytes under CPython and the unix
port, and the reader survives junk, splits, bit flips and length lies."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from terminal import frame

VECTORS = [b"", b"\x01\x00\x00", bytes(range(256)), b"\xa5\x5a" * 40, b"\x00" * 1024]

# Pinned (computed with zlib.crc32 by hand) so a change to the framing is a
# deliberate, visible decision.
PINNED = {
    b"": "a55a00005af861ff74",
    b"\x01\x00\x00": "a55a03005901000012f99180",
}


def test_encode_matches_pinned_bytes():
    for payload, hexframe in PINNED.items():
        assert frame.encode(payload).hex() == hexframe


def test_writer_and_encode_agree():
    w = frame.FrameWriter(1024)
    for v in VECTORS:
        w.payload[: len(v)] = v
        assert bytes(w.finish(len(v))) == frame.encode(v)


def test_same_bytes_under_unix_port(mpy):
    code = (
        "from terminal import frame\n"
        "w = frame.FrameWriter(1024)\n"
        "for v in %r:\n"
        "    w.payload[:len(v)] = v\n"
        "    print(bytes(w.finish(len(v))).hex())\n"
        "r = frame.FrameReader(1024)\n"
        "stream = b'junk' + b''.join(frame.encode(v) for v in %r)\n"
        "out = []\n"
        "for i in range(0, len(stream), 7):\n"
        "    r.feed(stream[i:i+7])\n"
        "    while True:\n"
        "        k, p = r.pop()\n"
        "        if k == frame.NONE: break\n"
        "        out.append(bytes(p).hex() if p is not None else 'corrupt')\n"
        "print(out)\n"
    ) % (VECTORS, VECTORS)
    lines = mpy(code).strip().split("\n")
    assert lines[:-1] == [frame.encode(v).hex() for v in VECTORS]
    assert json.loads(lines[-1].replace("'", '"')) == [v.hex() for v in VECTORS]


def drain(reader):
    got = []
    while True:
        kind, payload = reader.pop()
        if kind == frame.NONE:
            return got
        got.append(bytes(payload) if kind == frame.FRAME else "corrupt")


def test_split_feed_one_byte_at_a_time():
    r = frame.FrameReader(64)
    data = frame.encode(b"hello") + frame.encode(b"world")
    got = []
    for b in data:
        r.feed(bytes([b]))
        got += drain(r)
    assert got == [b"hello", b"world"]


def test_bit_flip_reports_corrupt_then_next_frame_arrives():
    bad = bytearray(frame.encode(b"payload"))
    bad[7] ^= 0x10
    r = frame.FrameReader(64)
    r.feed(bytes(bad) + frame.encode(b"next"))
    assert drain(r) == ["corrupt", b"next"]
    assert r.corrupt == 1


def test_oversize_length_is_refused_at_the_header():
    n = 65
    hdr = bytes((0xA5, 0x5A, n, 0, frame.header_check(n)))
    r = frame.FrameReader(64)
    r.feed(hdr + bytes(n + 4) + frame.encode(b"ok"))
    assert drain(r) == [b"ok"]


def test_length_lie_stalls_until_expire_then_resyncs():
    n = 50  # header claims 50 bytes, only 3 follow, then a good frame
    lie = bytes((0xA5, 0x5A, n, 0, frame.header_check(n))) + b"abc"
    r = frame.FrameReader(64)
    r.feed(lie + frame.encode(b"good"))
    assert drain(r) == []  # waiting for the 50 bytes the header promised
    r.expire()
    assert drain(r) == [b"good"]


def test_a_burst_of_length_lies_costs_one_expiry():
    # 55 headers that lie about their length (valid header check), then a good frame:
    # when the link goes quiet, one expire() drops them all (issue 12: one idle
    # timeout each, 55 of them, outlasted the host's 3 s).
    lies = b"".join(bytes((0xA5, 0x5A, n & 255, n >> 8, frame.header_check(n)))
                    for n in range(900, 955))
    r = frame.FrameReader(1024)
    r.feed(lies + frame.encode(b"good") + frame.encode(b"next"))
    assert drain(r) == []
    r.expire()
    assert drain(r) == [b"good", b"next"] and r.dropped == len(lies)
    # a stall that ends the buffer, and a lone trailing A5, go too
    r.feed(lies[:15] + b"\xa5")
    assert drain(r) == [] and r.pending() == 16
    r.expire()
    assert r.pending() == 0 and drain(r) == []
    # expire() stops at a complete frame with a bad CRC: pop() reports it
    bad = bytearray(frame.encode(b"bad"))
    bad[-1] ^= 1
    r.feed(lies[:10] + bytes(bad) + frame.encode(b"after"))
    r.expire()
    assert r.pop()[0] == frame.CORRUPT and drain(r) == [b"after"]


def test_host_reader_drops_a_burst_of_lies_once_the_line_is_quiet():
    # host_tools.link reads the terminal's replies the same way: a burst of lies
    # ahead of a reply costs one idle wait (0.25 s), not the exchange.
    import time

    import serial

    from host_tools.link import TerminalLink

    lies = b"".join(bytes((0xA5, 0x5A, n & 255, n >> 8, frame.header_check(n)))
                    for n in range(900, 955))
    ser = serial.serial_for_url("loop://", timeout=0.02)
    link = TerminalLink(ser, "loop://")
    ser.write(lies + frame.encode(b"reply"))
    t0 = time.monotonic()
    assert link.read_frame(t0 + 3) == b"reply"
    assert time.monotonic() - t0 < 2  # the old reader waited out the whole 3 s
    assert link.rx.dropped == len(lies)


frames = st.lists(st.binary(max_size=64), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=200), payloads=frames, cut=st.integers(0, 400),
       flips=st.lists(st.integers(0, 10_000), max_size=3))
def test_fuzz_reader_never_crashes_and_resyncs(junk, payloads, cut, flips):
    """Random junk, a truncated frame and bit flips, then good frames: the good
    frames after the damage all come out, in order."""
    damaged = bytearray(junk + b"".join(frame.encode(p) for p in payloads))
    damaged = damaged[: min(cut, len(damaged))]
    for f in flips:
        if damaged:
            damaged[f % len(damaged)] ^= 1 << (f % 8)
    r = frame.FrameReader(64)
    r.feed(bytes(damaged))
    drain(r)
    # Whatever the damage left half-read, the link goes quiet: expire it away.
    for _ in range(len(damaged) + 1):
        if not r.pending():
            break
        r.expire()
        drain(r)
    good = [b"after-1", b"after-2"]
    r.feed(b"".join(frame.encode(p) for p in good))
    assert drain(r)[-2:] == good
