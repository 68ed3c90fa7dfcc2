"""The one place where MicroPython and CPython differ for firmware modules.

    from terminal.compat import const, ticks_ms, ticks_diff, ticks_add, Aes, mem_alloc, collect

`const` is recognised by the MicroPython compiler by name, so `_X = const(3)`
in a module that imports it from here still costs no RAM on the board.
`Aes(key).encrypt(src16, dst16)` is AES-128-ECB into a caller's buffer: on the
board it is `cryptolib.aes` (no allocation), on CPython the `cryptography`
package. `collect()` is gc.collect() on the board; on CPython, which has no
fixed heap to run out of, it does nothing.
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
        """AES-128-ECB encryptor; `encrypt(src, dst)` writes 16 bytes into dst."""

        def __init__(self, key):
            self._aes = _aes(bytes(key), 1)

        def encrypt(self, src, dst):
            self._aes.encrypt(src, dst)

except ImportError:  # CPython
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    class Aes:  # type: ignore[no-redef]
        """AES-128-ECB encryptor; `encrypt(src, dst)` writes 16 bytes into dst."""

        def __init__(self, key):
            self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

        def encrypt(self, src, dst):
            dst[:16] = self._enc.update(bytes(src[:16]))


try:
    from gc import collect, mem_alloc, mem_free  # type: ignore[attr-defined]
except ImportError:  # CPython has no fixed heap: report -1 ("not measured")

    def mem_alloc():  # type: ignore[no-redef,misc]
        return -1

    def mem_free():  # type: ignore[no-redef,misc]
        return -1

    def collect():  # type: ignore[no-redef,misc]
        pass  # nothing waits for the memory: the cyclic collector runs on its own schedule

