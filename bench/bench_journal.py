"""Clearing journal and the tap's flash: programs, erases and modelled flash time.

Two parts.

1. The journal alone, in the MicroPython unix port (`-X heapsize=96k`, journal.py
   compiled by mpy-cross as on a board), on the NOR flash model of
   drivers/filebdev.py with each board's program unit and datasheet timings: the
   ring is first used once around (filled, acknowledged, its sectors erased in
   idle time), then appends, a batch close, reads and an acknowledgement are
   counted: flash programs, bytes, erases, and modelled time (typical / max).
2. One tap on the emulated board, per board file: a signed SALE (card image
   given, so no RF) between two `status` reads of the flash counters; the same
   for a batch close + pull and for an acknowledgement (with the idle-time
   erases it leaves). Goal: no erase on the tap path.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import goal

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BIN = Path(sys.executable).parent

# Runs on the unix port; prints one JSON line.
_MPY = r"""
import sys
sys.path.insert(0, %(mpydir)r)
import gc, json, os, time, vfs
from drivers.filebdev import FileBlockDevice

N = %(n)d
CAP = %(cap)d
PROG = %(prog)d
bd = FileBlockDevice(%(img)r, 4096, %(blocks)d, page_size=256, prog_size=PROG,
                     timing=%(timing)r)
vfs.VfsLfs2.mkfs(bd, progsize=max(32, PROG))
vfs.mount(vfs.VfsLfs2(bd, progsize=max(32, PROG)), "/f")


def snap():
    return [bd.reads, bd.programs, bd.program_bytes, bd.erases, bd.typ_us, bd.max_us]


def delta(a, n=1):
    b = snap()
    return [(b[i] - a[i]) / n for i in range(len(a))]


out = {}
gc.collect()
m0 = gc.mem_alloc()
from terminal import journal as J
gc.collect()
m1 = gc.mem_alloc()
t = time.ticks_us()
j = J.Journal("/f/j", CAP, 4242, 90, bdev=bd, prog=PROG)
out["make_ms"] = time.ticks_diff(time.ticks_us(), t) / 1000
for name in ("journal_ops", "sectors_make"):  # on demand: the terminal drops them
    sys.modules.pop("terminal." + name, None)
    if hasattr(sys.modules["terminal"], name):
        delattr(sys.modules["terminal"], name)
gc.collect()
m2 = gc.mem_alloc()
out["heap_module"] = m1 - m0
out["heap_instance"] = m2 - m1
TH = b"\x5a" * 8
MK = b"49801234"
OK = J.OFFLINE_APPROVAL
T0 = 1790000000
s = 0
# once around the ring: fill to 90 %%, acknowledge, erase in idle time, twice
for _ in range(2):
    for _ in range(CAP * 9 // 10):
        s += 1
        j.append(T0 + s, TH, MK, 7, 1000 + s, 1, 0, OK, s & 0xFFFF, 0, s, s, 1)
    b, first, count = j.close_batch()
    j.acknowledge(b)
    while j.idle():
        pass
us = 0
a = snap()
gc.collect()
m3 = gc.mem_alloc()
t = time.ticks_us()
for _ in range(N):
    s += 1
    j.append(T0 + s, TH, MK, 7, 1000 + s, 1, 0, OK, s & 0xFFFF, 0, s, s, 1)
us = time.ticks_diff(time.ticks_us(), t)
gc.collect()
out["heap_after_appends"] = gc.mem_alloc() - m3
out["append_us"] = us / N
out["append"] = delta(a, N)
out["tap_erases"] = j.status()["tap_erases"]
a = snap()
b, first, count = j.close_batch()
out["close"] = delta(a)
chunk = bytearray(1024)
a = snap()
seq = first
got = 0
t = time.ticks_us()
while True:
    n = j.read_batch(b, seq, chunk)
    if not n:
        break
    seq += n // 64
    got += n // 64
out["read_us_per_rec"] = time.ticks_diff(time.ticks_us(), t) / got
out["read"] = delta(a, got)
a = snap()
t = time.ticks_us()
j = J.Journal("/f/j", CAP, 4242, 90, bdev=bd, prog=PROG)
out["boot_ms"] = time.ticks_diff(time.ticks_us(), t) / 1000
out["boot"] = delta(a)
a = snap()
t = time.ticks_us()
j.acknowledge(b)
out["ack_ms"] = time.ticks_diff(time.ticks_us(), t) / 1000
out["ack"] = delta(a)
a = snap()
while j.idle():
    pass
out["idle"] = delta(a)
out["violations"] = bd.violations
out["records"] = N
print(json.dumps(out))
"""


def _compile(dest):
    from host_tools.build import compile_firmware

    compile_firmware(Path(dest))


def _unix_port(tmp, board, n, cap):
    from host_tools.build import board_values

    v = board_values(board)
    img = os.path.join(tmp, "flash-%s.img" % board)
    blocks = max(96, cap * 64 * 2 // 4096 + 96)
    code = _MPY % {"mpydir": tmp, "n": n, "cap": cap, "img": img, "blocks": blocks,
                   "prog": v["FLASH_PROG_SIZE"],
                   "timing": tuple(v["FLASH_PAGE_PROGRAM_US"] + v["FLASH_SECTOR_ERASE_US"])}
    env = dict(os.environ, MICROPYPATH="%s:%s" % (tmp, ROOT / "boards"))
    proc = subprocess.run([str(BIN / "micropython"), "-X", "heapsize=96k", "-c", code],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        raise RuntimeError("micropython failed:\n" + proc.stdout + proc.stderr)
    os.remove(img)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _host_decode_rate(n):
    sys.path.insert(0, str(FIRMWARE))
    from terminal import journal as J

    buf = bytearray(J.RECORD_SIZE)
    recs = []
    for s in range(n):
        J.pack_record_into(buf, 4242, s, 1790000000 + s, b"\x5a" * 8, b"49801234", 7, 1000,
                           1, 0, b"000000", s & 0xFFFF, 0, s, s, 1, 0x1234)
        recs.append(bytes(buf))
    t = time.perf_counter()
    for r in recs:
        J.decode(r)
    return n / (time.perf_counter() - t)


# -- one tap on the emulated board --------------------------------------------------------


def _per_tap(board, work, sales):
    """Flash counters around sales, a batch pull and an acknowledgement on the
    emulated board with this board file (FlashCounters per operation)."""
    from host_tools.emulator import Emulator
    from host_tools.flashmodel import flash_counters
    from host_tools.link import TerminalLink
    from host_tools.pos import run_sale
    from host_tools.provision import push_keys
    from host_tools.transfer import ack_batch, pull_batch
    from host_tools.wallet import issue_card

    emu = Emulator(board=board, flash=work / f"tap-{board}.img", strict_flash=True)
    emu.start()
    try:
        with TerminalLink.open(emu.port, timeout=20) as t:
            push_keys(t, t.keyring)
            t.set_time(int(time.time()))
            t.set_params({"new_card_online": 0, "random_target_pct": 0,
                          "random_max_target_pct": 0})
            cards = [issue_card("49800000%08d" % i, 1, "credit", t.keyring)
                     for i in range(sales)]

            def counters():
                return flash_counters(t.status())

            # warm: one sale (opens the journal's first sector), then what a status
            # read itself costs after its snapshot (reads only), to take off below
            cards[0] = run_sale(t, 500, cards[0]).card_image
            c0 = counters()
            own = counters() - c0
            total = None
            outcomes = []
            for i in range(sales):
                before = counters()
                r = run_sale(t, 500, cards[i])
                outcomes.append(r.outcome)
                used = counters() - before - own
                total = used if total is None else total + used
            before = counters()
            batch = pull_batch(t)
            pulled = counters() - before - own
            before = counters()
            ack_batch(t, batch.batch_id)
            mid = counters()
            acked = mid - before - own
            time.sleep(1.0)  # the link idle: the sectors it freed are erased
            idle = counters() - mid - own
            return total, sales, pulled, batch.count, acked, idle, outcomes
    finally:
        emu.stop()


def run(quick=False):
    from host_tools.build import board_values

    n = 200 if quick else 2000
    rows, details = [], []
    with tempfile.TemporaryDirectory() as tmp:
        _compile(tmp)
        for board in ("emulator", "pico_pn532"):
            cap = 300 if quick else board_values(board)["JOURNAL_CAPACITY"]
            r = _unix_port(tmp, board, min(n, cap * 9 // 10), cap)
            details.append((board, r))
            a = r["append"]
            rows.append([board, board_values(board)["FLASH_PROG_SIZE"], cap, r["records"],
                         "%.0f" % (1e6 / r["append_us"]), "%.2f" % a[1], "%.0f" % a[2],
                         "%.3f" % a[3], "%.2f / %.2f" % (a[4] / 1000, a[5] / 1000),
                         "%.0f" % (1e6 / r["read_us_per_rec"])])
        work = Path(tmp)
        os.environ.setdefault("TERMCTL_KEYRING", str(work / "keyring.json"))
        tap_rows, tap_goals = [], []
        for board in ("pico_pn532",) if quick else ("pico_pn532", "esp32s3_pn532", "emulator"):
            sales = 3 if quick else 10
            tot, k, pulled, count, acked, idle, outcomes = _per_tap(board, work, sales)
            tap_rows.append([board, k, "%.1f" % (tot.reads / k), "%.2f" % (tot.programs / k),
                             "%.0f" % (tot.program_bytes / k), "%.2f" % (tot.erases / k),
                             "%.2f / %.2f" % (tot.typ_us / k / 1000, tot.max_us / k / 1000),
                             "%d p, %d e" % (pulled.programs, pulled.erases),
                             "%d p, %d e (+%d idle)" % (acked.programs, acked.erases,
                                                       idle.erases),
                             "%.1f / %.1f" % ((acked.typ_us + idle.typ_us) / 1000,
                                              (acked.max_us + idle.max_us) / 1000)])
            tap_goals.append(goal("flash erases per tap, %s" % board, tot.erases / k, "==", 0,
                                  fmt="%.2f"))
            tap_goals.append(goal("flash violations over the taps, %s" % board,
                                  tot.violations + pulled.violations + acked.violations, "==",
                                  0))
    r0 = details[0][1]
    tables = [{
        "title": "Journal on NOR flash after the ring went round, unix port -X heapsize=96k",
        "columns": ["board file", "program unit", "capacity", "appends", "appends/s",
                    "programs/record", "bytes programmed/record", "erases/record",
                    "flash ms/record typ / max", "batch read records/s"],
        "rows": rows,
        "notes": ("Every append programs its 64-byte record into a ring sector erased "
                  "beforehand (a 256-byte page, 0xFF around the record, on the Pico, whose "
                  "ROM programs whole pages); a sector's header is one more program when "
                  "the ring moves on, every 62 records. Erases happen in idle time and on "
                  "acknowledgements, never in an append. Flash time is modelled from the "
                  "board file's datasheet figures (tPP 0.4 ms typ, 3 ms max per page)."),
        "goals": [goal("journal erases per append, %s" % b, r["append"][3], "==", 0,
                       fmt="%.3f") for b, r in details]
        + [goal("journal NOR violations, %s" % b, r["violations"], "==", 0)
           for b, r in details],
    }, {
        "title": "Flash per tap and per clearing on the emulated board (status counters)",
        "columns": ["board file", "taps", "reads/tap", "programs/tap", "bytes/tap",
                    "erases/tap", "flash ms/tap typ / max", "batch close + pull",
                    "acknowledge", "ack + idle ms typ / max"],
        "rows": tap_rows,
        "notes": ("A signed SALE with the card image given (no RF), between two reads of "
                  "the flash counters (`status`, less what a status read costs). Per tap: "
                  "the request counter appended to its log (terminal.authlog) and the "
                  "journal record, a page program each; nothing is erased. The batch "
                  "close writes the journal's state file (LittleFS); the acknowledgement "
                  "saves the counter table and the state file, erases the next sectors "
                  "the ring needs, and idle time erases the rest it freed."),
        "goals": tap_goals,
    }, {
        "title": "Journal heap and timings (unix port, 64-bit, emulator board file)",
        "columns": ["measure", "value"],
        "rows": [
            ["module code, .mpy loaded (bytes)", r0["heap_module"]],
            ["Journal instance: buffers, ring table, qstrs of its on-demand code (bytes)",
             r0["heap_instance"]],
            ["heap growth over %d appends (bytes)" % r0["records"], r0["heap_after_appends"]],
            ["append, mean (us)", "%.1f" % r0["append_us"]],
            ["making the ring (first start, ms)", "%.1f" % r0["make_ms"]],
            ["boot scan (ms; reads)", "%.1f; %d" % (r0["boot_ms"], r0["boot"][0])],
            ["acknowledge (ms), then idle erases", "%.1f, %d" % (r0["ack_ms"],
                                                                r0["idle"][3])],
            ["host decode() records/s (CPython)", "%.0f" % _host_decode_rate(2000)],
        ],
        "notes": ("gc.mem_alloc deltas after gc.collect(). Pointers are 8 bytes on the unix "
                  "port, so code and objects take less on a 32-bit board. Appends "
                  "allocate nothing (tests prove it under micropython.heap_lock())."),
    }]
    return tables
