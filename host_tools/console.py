"""The bench console of `termctl centre serve`: a POS on standard input, the centre
answering the terminal's online requests, and the clearing pulled periodically.

    serve(link, centre, pull_every=300, wait=30)   # until 'quit' or end of input
"""

from __future__ import annotations

import select
import signal
import sys
import time

from host_tools.errors import ToolError


def serve(link, centre, pull_every: float, wait: float, stdin=None) -> int:
    stdin = stdin or sys.stdin
    # Ctrl-C cancels a sale even when we were started with SIGINT ignored (a
    # shell's background job or script): the console promises it.
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _serve(link, centre, pull_every, wait, stdin)
    finally:
        signal.signal(signal.SIGINT, old_int)


def _serve(link, centre, pull_every: float, wait: float, stdin) -> int:
    from host_tools.pos import SaleCancelled, parse_amount, run_sale
    from host_tools.transfer import ack_batch, pull_batch

    def pull():
        batch = pull_batch(link)
        inserted, dup = centre.ingest_clearing(batch.terminal_id, batch.records)
        ack_batch(link, batch.batch_id)
        print(f"clearing: batch {batch.batch_id}, {inserted} new, {dup} already there",
              flush=True)

    link.set_time(int(time.time()))
    print(f"serving terminal {link.status()['terminal_id']} on {link.name}: type an amount "
          "(yen) for a sale, 'pull' for clearing, 'quit' (or Ctrl-C) to stop", flush=True)
    next_pull = time.monotonic() + pull_every
    while True:
        ready, _, _ = select.select([stdin], [], [], 1.0)
        if time.monotonic() >= next_pull:
            pull()
            next_pull = time.monotonic() + pull_every
        if not ready:
            continue
        line = stdin.readline()
        word = line.strip().lower()
        if not line or word == "quit":
            pull()
            return 0
        if not word:
            continue
        if word == "pull":
            pull()
            continue
        try:
            amount = parse_amount(word)
        except ToolError as e:
            print(f"{e}; or 'pull' or 'quit'", flush=True)
            continue
        print(f"sale of {amount:,} yen: waiting up to {wait:g} s for a card "
              "(Ctrl-C cancels the sale; the terminal ends its card wait first)", flush=True)
        try:
            print(run_sale(link, amount, None, centre=centre, wait_ms=int(wait * 1000)),
                  flush=True)
        except SaleCancelled as e:  # Ctrl-C: the sale is over; the console goes on
            print(e, flush=True)
        except ToolError as e:  # the terminal said no (no card, journal full, ...): go on
            print(f"sale refused: {e}", flush=True)
