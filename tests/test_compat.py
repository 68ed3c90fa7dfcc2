"""terminal.compat: the one place CPython and MicroPython differ. Both sides of
each difference give the same answers."""

import binascii
import random

from terminal import compat


def test_crc32_into_is_zlibs_crc_on_cpython_and_on_the_unix_port(mpy):
    rnd = random.Random(5)
    cases = [bytes(rnd.randbytes(n)) for n in (0, 1, 7, 60, 64, 200)] + [bytes(range(256))]
    want = [binascii.crc32(data) for data in cases]
    got = []
    for data in cases:
        buf = bytearray(data) + bytearray(4)
        compat.crc32_into(buf, len(data), buf, len(data))
        got.append(int.from_bytes(buf[len(data):], "little"))
    assert got == want
    code = ("from terminal.compat import crc32_into\n"
            f"for data in {cases!r}:\n"
            "    buf = bytearray(data) + bytearray(4)\n"
            "    crc32_into(buf, len(data), buf, len(data))\n"
            "    print(int.from_bytes(buf[len(data):], 'little'))\n")
    assert [int(x) for x in mpy(code).split()] == want


def test_crc32_into_allocates_nothing_on_the_unix_port(mpy):
    out = mpy("import micropython\n"
              "from terminal.compat import crc32_into\n"
              "buf = bytearray(range(64))\n"
              "crc32_into(buf, 60, buf, 60)\n"
              "micropython.heap_lock()\n"
              "crc32_into(buf, 60, buf, 60)\n"
              "micropython.heap_unlock()\n"
              "print('ok')\n")
    assert out.strip() == "ok"
