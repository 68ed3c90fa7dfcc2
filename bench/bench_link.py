"""Emulated board and host link: boot-to-ready time, heap after boot, and the
status round trip over the pty, measured side by side in one run."""

import os
import statistics
import tempfile
import time
from pathlib import Path


def run(quick=False):
    from host_tools.emulator import Emulator
    from host_tools.link import TerminalLink

    boots = 3 if quick else 10
    trips = 100
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("TERMCTL_KEYRING", str(Path(tmp) / "keyring.json"))
        emu = Emulator(flash=Path(tmp) / "bench.img")
        first = None
        boot_ms = []
        for i in range(boots):
            emu.start()
            if i == 0:
                first = emu.boot_ms  # includes formatting the blank image
            else:
                boot_ms.append(emu.boot_ms)
            if i < boots - 1:
                emu.stop()
        with TerminalLink.open(emu.port) as t:
            st = t.status()
            t.status()  # warm
            times = []
            for _ in range(trips):
                t0 = time.perf_counter()
                t.status()
                times.append((time.perf_counter() - t0) * 1000)
        emu.stop()
    rows.append(["boot to ready, first boot (formats flash)", "%.0f ms" % first, "1 boot"])
    rows.append(["boot to ready, later boots (median)", "%.0f ms" % statistics.median(boot_ms),
                 "%d boots" % len(boot_ms)])
    rows.append(["heap used after boot (gc.mem_alloc)", "%s bytes" % st["heap_used"],
                 "cap %d bytes" % emu.heap])
    rows.append(["heap free after boot (gc.mem_free)", "%s bytes" % st["heap_free"], ""])
    rows.append(["status round trip over pty (median)", "%.2f ms" % statistics.median(times),
                 "%d round trips" % trips])
    rows.append(["status round trip over pty (p90)",
                 "%.2f ms" % sorted(times)[int(0.9 * len(times))], ""])
    return [{"title": "Emulated board and host link", "columns": ["figure", "value", "over"],
             "rows": rows, "notes": "Machine noise matters: compare figures from one run."}]
