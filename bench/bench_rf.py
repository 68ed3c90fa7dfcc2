"""Taps over RF on the emulated board: nfcpy emulates the card on the board's
UDP field; tap-to-result as the terminal measures it (card sensed -> result
journalled) and the POS's whole round trip."""

import os
import statistics
import tempfile
import time
from pathlib import Path


def run(quick=False):
    from host_tools.demo import free_udp_port
    from host_tools.emulator import Emulator
    from host_tools.link import TerminalLink
    from host_tools.pos import sale_over_rf
    from host_tools.provision import push_keys
    from host_tools.wallet import issue_card

    taps = 20 if quick else 100
    rf = free_udp_port()
    tap_ms, round_ms, outcomes = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TERMCTL_KEYRING"] = str(Path(tmp) / "keyring.json")
        with Emulator(flash=Path(tmp) / "rf.img", rf_port=rf) as emu:
            with TerminalLink.open(emu.port, timeout=10) as t:
                push_keys(t, t.keyring)
                t.set_time(int(time.time()))
                t.set_params({"new_card_online": 0, "lower_consecutive_offline": 255,
                              "upper_consecutive_offline": 255, "random_target_pct": 0,
                              "random_max_target_pct": 0, "daily_offline_cap": 10**8,
                              "cumulative_offline_cap": 10**8, "terminal_daily_cap": 10**8,
                              "split_window_s": 0})
                image = issue_card("4980000000000001", 1, "credit", t.keyring)
                for _ in range(taps):
                    t0 = time.perf_counter()
                    r, image = sale_over_rf(t, f"udp:127.0.0.1:{rf}", "4980000000000001",
                                            image, 100)
                    round_ms.append((time.perf_counter() - t0) * 1000)
                    tap_ms.append(r.tap_ms)
                    outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1

    def p90(xs):
        return sorted(xs)[int(0.9 * len(xs))]

    rows = [["tap to result, terminal's clock (card sensed -> journalled)",
             "%d ms" % statistics.median(tap_ms), "p90 %d ms" % p90(tap_ms)],
            ["POS round trip incl. nfcpy card start/stop", "%.0f ms" % statistics.median(
                round_ms), "p90 %.0f ms" % p90(round_ms)],
            ["outcomes", ", ".join(f"{k} {v}" for k, v in outcomes.items()), f"{taps} taps"]]
    return [{"title": "Taps over RF on the emulated board (nfcpy UDP link)",
             "columns": ["figure", "median", "spread"], "rows": rows,
             "notes": "Each tap: read blocks 0-3 and 4-5 (two Read Without Encryption), "
                      "decide, write the next counter slot (two Write Without Encryption, "
                      "one block each), RF off, journal. The "
                      "terminal's clock has 1 ms resolution."}]
