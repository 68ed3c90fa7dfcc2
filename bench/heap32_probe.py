"""Heap of the firmware's resident set, run identically by two MicroPythons.

Not run on its own: `python -m bench.heap32` (see there) runs this file under
the 64-bit unix port and under the wasm32 build, and compares. It is
MicroPython code (gc.mem_alloc, micropython.qstr_info), run as

    micropython -X heapsize=1M bench/heap32_probe.py FW_DIR ROOT_DIR [real-aes]

where FW_DIR holds the firmware's .mpy files plus board.mpy (the board file) and
ROOT_DIR is an empty directory standing in for the flash. Under Node.js the
driver (bench/heap32.mjs) defines `_ARGS` and `_DRIVEN` before running this
source, then calls work(i) and measure(i) itself, each from the top level:
the wasm build collects garbage only when control is back in JavaScript
(MICROPY_GC_SPLIT_HEAP_AUTO: gc.collect() inside Python just asks for it).

measure(i) prints `HEAP32 <stage> <gc.mem_alloc()>` after a collection and the
line of micropython.qstr_info() (qstr pools and string data, which live in the
heap too). Stage "base" is taken once this script, the stdlib modules the
firmware imports and the test doubles below are in RAM, so the other figures
less the base are the firmware's own.
"""

import gc
import sys

import micropython  # type: ignore[import-not-found]

try:
    _ARGS  # type: ignore[used-before-def]  # noqa: B018  (set by heap32.mjs)
except NameError:
    _ARGS = sys.argv[1:]
try:
    _DRIVEN  # type: ignore[used-before-def]  # noqa: B018  (set by heap32.mjs)
except NameError:
    _DRIVEN = False
FW, ROOT = _ARGS[0], _ARGS[1]
REAL_AES = "real-aes" in _ARGS

# The stdlib modules the firmware imports, in RAM before the baseline: the wasm
# build has some as frozen Python (os), whose module dicts are heap, where a
# board has them in C.
import array  # noqa: E402, F401
import binascii  # noqa: E402, F401
import hashlib  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402, F401
import time  # noqa: E402

try:
    import zlib  # noqa: F401
except ImportError:
    pass

if not hasattr(os, "urandom"):  # the wasm build's os lacks it (sectors_make: epochs)

    def _urandom(n):
        return bytes((time.ticks_us() * 7 + i * 131) & 0xFF for i in range(n))

    os.urandom = _urandom

if sys.platform == "webassembly":  # its OSErrors carry WASI's numbers: EEXIST is 20
    _mkdir = os.mkdir

    def _mkdir17(path):
        try:
            _mkdir(path)
        except OSError as e:
            raise OSError(17 if e.args[0] == 20 else e.args[0]) from None

    os.mkdir = _mkdir17


class _Aes:
    """Stands in for cryptolib.aes, which the wasm build lacks, on both runtimes
    (so both build the same objects): AES-ECB's interface, not its cipher. The
    heap figures do not depend on the bytes it writes."""

    def __init__(self, key, mode):
        self._k = bytes(key)

    def encrypt(self, src, dst):
        dst[:16] = hashlib.sha256(self._k + bytes(src[:16])).digest()[:16]


class _Cryptolib:
    aes = _Aes


if REAL_AES:
    import cryptolib  # type: ignore[import-not-found]  # noqa: F401
else:
    sys.modules["cryptolib"] = _Cryptolib  # type: ignore[assignment]


class _Port:
    """The host link's serial port: nothing arrives, writes vanish."""

    def wait(self, timeout_ms):
        return False

    def readinto(self, buf):
        return 0

    def write(self, buf):
        return len(buf)


class _I2C:
    """machine.SoftI2C's interface for drivers.pn532_i2c; never called here."""

    def writeto(self, addr, buf):
        raise OSError(19)

    def readfrom_into(self, addr, buf):
        raise OSError(19)


# The board file and its RF stack, resident beside terminal/ (all of it but
# terminal.service's ON_DEMAND, found in FW_DIR); then the list-update stack,
# which a list push imports on demand: listsync, the nl_ modules of ON_DEMAND
# and ON_DEMAND_DRIVERS.
DRIVERS_RESIDENT = ("board", "drivers", "drivers.pn532", "drivers.pn532_i2c", "drivers.felica",
                    "drivers.cardsource")
STAGES = ("base", "a_terminal", "a_resident", "a_provisioned", "b_booted", "c_list_update",
          "b_unloaded", "d_status")
N_STAGES = len(STAGES)
_state = {}


def _provision(root, board):
    """The flash's files a provisioned terminal boots from: its key and a full
    set of issuer keys (the board's ISSUER_KEY_CAPACITY), as keys.bin."""
    from terminal import keystore

    with open(root + "/terminal.key", "wb") as f:
        f.write(b"\x07\x00\x00\x00" + bytes(range(32)))
    keys = [(100 + i, 1, bytes([i]) * 16) for i in range(board.ISSUER_KEY_CAPACITY)]
    with open(root + "/keys.bin", "wb") as f:
        f.write(keystore.encode(1, bytes(range(16, 32)), keys))


def work(i):
    """Stage i's work; its garbage is collected before measure(i)."""
    stage = STAGES[i]
    if stage == "a_terminal":
        from terminal.service import ON_DEMAND

        n = 0
        for f in sorted(os.listdir(FW + "/terminal")):
            if f.endswith(".mpy") and f[:-4] not in ON_DEMAND and f != "__init__.mpy":
                __import__("terminal." + f[:-4])
                n += 1
        print("HEAP32 terminal_modules", n)
    elif stage == "a_resident":
        for name in DRIVERS_RESIDENT:
            __import__(name)
    elif stage == "a_provisioned":  # files written; keystore (on demand) dropped again
        _provision(ROOT, sys.modules["board"])
        del sys.modules["terminal.keystore"]
        delattr(sys.modules["terminal"], "keystore")
    elif stage == "b_booted":  # as main.py boots: the counter table first
        from drivers.cardsource import FelicaCards
        from drivers.pn532 import Pn532
        from drivers.pn532_i2c import I2CLink
        from terminal.service import TerminalService
        from terminal.velocity import VelocityTable

        board = sys.modules["board"]
        table = VelocityTable(board.COUNTER_CAPACITY)
        cards = FelicaCards(Pn532(I2CLink(_I2C()), max_frame=board.NFC_MAX_FRAME))
        term = TerminalService(board, ROOT, _Port(), "board", card_source=cards, table=table)
        if term.issuers is None or term.keystore.hasher is None:
            raise SystemExit("heap32: the terminal did not build its parts: %r" % (term.notes,))
        _state["term"] = term
        print("HEAP32 aes_objects", board.ISSUER_KEY_CAPACITY + 1,
              "real" if REAL_AES else "shim")
    elif stage == "c_list_update":
        from terminal.service import ON_DEMAND, ON_DEMAND_DRIVERS

        names = ["terminal." + n for n in ON_DEMAND if n == "listsync" or n.startswith("nl_")]
        names += ["drivers." + n for n in ON_DEMAND_DRIVERS]
        for name in names:
            __import__(name)
        print("HEAP32 list_update_modules", ",".join(n.split(".")[1] for n in names))
    elif stage == "b_unloaded":
        _state["term"].unload()
    elif stage == "d_status":  # CMD_STATUS: terminal.admin in RAM until the next command
        _state["term"].handle(bytes([1, 0, 0]))
    gc.collect()


def measure(i):
    used = gc.mem_alloc()
    print("HEAP32", STAGES[i], used)
    micropython.qstr_info()


sys.path.insert(0, FW)
print("HEAP32 runtime", sys.platform, sys.implementation.version[:3], sys.maxsize)
print("HEAP32 mpy", sys.implementation._mpy & 0xFF, sys.implementation._mpy >> 8 & 3)
gc.collect()
if not _DRIVEN:
    for _i in range(N_STAGES):
        work(_i)
        gc.collect()
        measure(_i)
