"""The one place where MicroPython and CPython differ for firmware modules.

    from terminal.compat import const, ticks_ms, ticks_diff, ticks_add, Aes, mem_alloc, collect
    from terminal.compat import crc32_into

`const` is recognised by the MicroPython compiler by name, so `_X = const(3)`
in a module that imports it from here still costs no RAM on the board.
`Aes(key).encrypt(src16, dst16)` is AES-128-ECB into a caller's buffer;
`Aes(key, True)` is CBC from a zero IV, `encrypt(src, dst)` of len(src) bytes (whole
blocks) chained across calls (each call's IV is the last block the previous one
wrote): one call in C for a CMAC's blocks. On the board `cryptolib.aes` (modes 1
and 2; no allocation into a caller's buffer), on CPython the `cryptography`
package. `crc32_into(src, n, dst, off)` writes the CRC-32 (zlib's) of src[:n] into
dst[off:off + 4], little-endian: on the board a byte a step from a 1 KB table, over
small ints (no allocation), on CPython zlib's C code (the host packs and checks
records by the million in the fleet simulation). `collect()` is gc.collect() on the
board; on CPython, which has no fixed heap to run out of, it does nothing.
"""

try:
    from micropython import const  # type: ignore[import-not-found]
except ImportError:  # CPython

    def const(value):  # type: ignore[no-redef,misc]
        return value


try:
    from time import ticks_add, ticks_diff, ticks_ms  # type: ignore[attr-defined]
except ImportError:  # CPython
    import time as _time

    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD >> 1

    def ticks_ms():  # type: ignore[no-redef,misc]
        return int(_time.monotonic() * 1000) & (_TICKS_PERIOD - 1)

    def ticks_add(ticks, delta):  # type: ignore[no-redef,misc]
        return (ticks + delta) & (_TICKS_PERIOD - 1)

    def ticks_diff(end, start):  # type: ignore[no-redef,misc]
        return ((end - start + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF


try:
    from cryptolib import aes as _aes  # type: ignore[import-not-found]

    class Aes:
        """AES-128 encryptor, ECB or (cbc=True) CBC from a zero IV, chained across
        calls; `encrypt(src, dst)` writes len(src) bytes (whole blocks) into dst."""

        def __init__(self, key, cbc=False):
            self._aes = _aes(bytes(key), 2, bytes(16)) if cbc else _aes(bytes(key), 1)

        def encrypt(self, src, dst):
            self._aes.encrypt(src, dst)

except ImportError:  # CPython
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    class Aes:  # type: ignore[no-redef]
        """AES-128 encryptor, ECB or (cbc=True) CBC from a zero IV, chained across
        calls; `encrypt(src, dst)` writes len(src) bytes (whole blocks) into dst."""

        def __init__(self, key, cbc=False):
            mode = modes.CBC(bytes(16)) if cbc else modes.ECB()
            self._enc = Cipher(algorithms.AES(bytes(key)), mode).encryptor()

        def encrypt(self, src, dst):
            n = len(src)
            dst[:n] = self._enc.update(bytes(src))


try:
    from gc import collect, mem_alloc, mem_free  # type: ignore[attr-defined]
except ImportError:  # CPython has no fixed heap: report -1 ("not measured")

    def mem_alloc():  # type: ignore[no-redef,misc]
        return -1

    def mem_free():  # type: ignore[no-redef,misc]
        return -1

    def collect():  # type: ignore[no-redef,misc]
        pass  # nothing waits for the memory: the cyclic collector runs on its own schedule



try:
    import micropython  # type: ignore[import-not-found]  # noqa: F401  (a board, the unix port)

    # CRC-32 a byte a step, the register kept as its 4 bytes: every value is a small
    # int, so nothing is allocated even on a 32-bit board, where binascii.crc32
    # returns a heap int 3 times in 4. The table is 4 bytearrays of 256, byte k of
    # every entry in _CRC[k] (1 KB, made without a temporary): 10 us for a journal
    # record's 60 bytes here, where 4 bits a step over 16-bit halves took 27 (about
    # 1.8 ms of a Pico's tap; docs/boards.md, "Tap to result").
    _CRC = (bytearray(256), bytearray(256), bytearray(256), bytearray(256))
    for _i in range(256):
        _lo = _i
        _hi = 0
        for _ in range(8):
            _b = _lo & 1
            _lo = (_lo >> 1) | ((_hi & 1) << 15)
            _hi >>= 1
            if _b:
                _lo ^= 0x8320
                _hi ^= 0xEDB8
        _CRC[0][_i] = _lo & 0xFF
        _CRC[1][_i] = _lo >> 8
        _CRC[2][_i] = _hi & 0xFF
        _CRC[3][_i] = _hi >> 8
    del micropython, _i, _lo, _hi, _b, _  # names only the table needed: no RAM

    def crc32_into(src, n, dst, off):
        """CRC-32 of src[:n] into dst[off:off + 4], little-endian; no allocation."""
        t0, t1, t2, t3 = _CRC
        r0 = r1 = r2 = r3 = 0xFF
        for i in range(n):
            x = r0 ^ src[i]
            r0 = r1 ^ t0[x]
            r1 = r2 ^ t1[x]
            r2 = r3 ^ t2[x]
            r3 = t3[x]
        dst[off] = r0 ^ 0xFF
        dst[off + 1] = r1 ^ 0xFF
        dst[off + 2] = r2 ^ 0xFF
        dst[off + 3] = r3 ^ 0xFF

except ImportError:  # CPython
    from zlib import crc32 as _crc32

    def crc32_into(src, n, dst, off):  # type: ignore[misc]
        """CRC-32 of src[:n] into dst[off:off + 4], little-endian."""
        dst[off:off + 4] = _crc32(memoryview(src)[:n]).to_bytes(4, "little")
