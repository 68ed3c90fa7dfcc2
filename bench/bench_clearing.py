"""Sales and clearing on an emulated board over its pty: sale round trip
(POS request to journalled result, card injected), batch pull records per
second and bytes on the wire per record, and the terminal's heap after."""

import os
import statistics
import tempfile
import time
from pathlib import Path


def run(quick=False):
    from host_tools.emulator import Emulator
    from host_tools.link import TerminalLink
    from host_tools.pos import run_sale
    from host_tools.provision import push_keys
    from host_tools.transfer import ack_batch, pull_batch
    from host_tools.wallet import issue_card
    from terminal.journal import RECORD_SIZE

    n_sales = 200 if quick else 2000
    n_cards = 50
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TERMCTL_KEYRING"] = str(Path(tmp) / "keyring.json")
        with Emulator(flash=Path(tmp) / "clearing.img") as emu:
            with TerminalLink.open(emu.port, timeout=30) as t:
                push_keys(t, t.keyring)
                t.set_time(int(time.time()))
                t.set_params({"new_card_online": 0})
                cards = [issue_card("49800000%08d" % i, 1, "credit", t.keyring)
                         for i in range(n_cards)]
                times, approved = [], 0
                for i in range(n_sales):
                    k = i % n_cards
                    t0 = time.perf_counter()
                    r = run_sale(t, 100 + i % 900, cards[k])
                    times.append((time.perf_counter() - t0) * 1000)
                    cards[k] = r.card_image
                    approved += r.approved
                batch = pull_batch(t)
                ack_batch(t, batch.batch_id)
                st = t.status()
    per_record = batch.wire_bytes / max(batch.count, 1)
    rows = [
        ["sales (POS request -> journalled result, pty)", n_sales,
         "median %.2f ms, p90 %.2f ms" % (statistics.median(times),
                                          sorted(times)[int(0.9 * len(times))])],
        ["  of which approved offline", approved, ""],
        ["batch pull: records", batch.count, "%.0f records/s" % (batch.count / batch.seconds)],
        ["batch pull: bytes on the wire per record", "%.1f" % per_record,
         "record is %d B: %.2fx" % (RECORD_SIZE, per_record / RECORD_SIZE)],
        ["terminal heap used after the run", st["heap_used"] + " B",
         "free " + st["heap_free"] + " B"],
    ]
    return [{"title": "Sales and clearing over the emulated board's pty",
             "columns": ["figure", "value", "detail"], "rows": rows,
             "notes": "Cards injected as images (bench path); the RF exchange is not "
                      "included. Wire bytes count both directions of every frame of the "
                      "pull (close, reads; not the acknowledgement)."}]
