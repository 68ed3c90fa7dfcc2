"""The centre and an emulated board together, through termctl: online
authorisation, the prepaid brute-force case, clearing without duplicates,
and a reported card stopped at the terminal by the next negative list."""

import os
import subprocess
import sys

import pytest


@pytest.fixture
def bench(emulated_board, tmp_path):
    emu = emulated_board()
    env = dict(os.environ, TERMCTL_PORT=emu.port, TERMCTL_CENTRE=str(tmp_path / "centre.db"))

    def termctl(*args, ok=(0,)):
        r = subprocess.run([sys.executable, "-m", "host_tools.cli", *args], capture_output=True,
                           text=True, env=env, timeout=60, cwd=tmp_path)
        assert r.returncode in ok, r.stderr
        assert "Traceback" not in r.stderr
        return r.stdout

    termctl("keys", "push")
    termctl("time", "set", "--now")
    termctl("centre", "add-card", "4980000000000001", "--issuer", "1",
            "--credit-limit", "200000", "--create")
    termctl("centre", "add-card", "5000000000000009", "--issuer", "3", "--product", "prepaid",
            "--balance", "0")
    return termctl


def sale(termctl, amount, token, *extra):
    return termctl("sale", str(amount), "--token", token, "--centre", "centre.db", *extra,
                   ok=(0, 3))


def test_online_approval_from_the_centre(bench):
    out = sale(bench, 5000, "4980000000000001")
    assert out.startswith("APPROVED_ONLINE") and "approval 000000" not in out


def test_prepaid_brute_force_declined_then_refused_locally(bench):
    # decline_limit (2 by default): the third attempt never reaches the issuer
    outs = [sale(bench, 17600, "5000000000000009", "--issuer", "3", "--product", "prepaid")
            for _ in range(3)]
    assert all(o.startswith("DECLINED_ONLINE") for o in outs[:2])
    assert outs[2].startswith("DECLINED_OFFLINE") and "too_many_declines" in outs[2]
    bench("batch", "pull", "--centre", "centre.db")
    assert "repeated_declines" in bench("centre", "detect")


def test_repeated_pull_never_duplicates(bench):
    sale(bench, 5000, "4980000000000001")
    first = bench("batch", "pull", "--centre", "centre.db", "--no-ack")
    again = bench("batch", "pull", "--centre", "centre.db")
    assert "centre: 1 new, 0 already there" in first
    assert "centre: 0 new, 1 already there" in again
    assert "acknowledged: acked" in again


def test_reported_card_is_stopped_by_the_next_list(bench):
    assert sale(bench, 5000, "4980000000000001").startswith("APPROVED_ONLINE")
    bench("centre", "block", "4980000000000001")
    assert "1 entries" in bench("centre", "next-list", "--out", "next.bin", "--version", "2")
    assert "list v2 installed" in bench("list", "push", "next.bin")
    out = sale(bench, 800, "4980000000000001")
    assert out.startswith("DECLINED_OFFLINE") and "listed" in out


def test_next_list_over_quota_withholds_and_says_so_everywhere(bench, tmp_path):
    # the issuer's quota is 1 and two of its cards are blocked: the list carries one
    # and says one was withheld, so the terminal sends the issuer's cards online
    from host_tools import listbuild
    from host_tools.centre import Centre

    bench("centre", "add-card", "4980000000000002", "--issuer", "1", "--credit-limit", "1000")
    bench("centre", "block", "4980000000000001")
    bench("centre", "block", "4980000000000002")
    with Centre(tmp_path / "centre.db") as c:
        c.add_issuer(1, "iD Bank (credit)", list_quota=1)
    out = bench("centre", "next-list", "--out", "next.bin", "--version", "2")
    assert "1 entries" in out and "withheld over quota" in out and "{1: 1}" in out
    assert listbuild.decode((tmp_path / "next.bin").read_bytes()).withheld[1] == 1
    assert "online-only: issuers 1" in bench("list", "push", "next.bin")
    assert "withheld=1" in bench("list", "status")
    groups, head, *rows = bench("centre", "report").splitlines()
    assert groups.split()[-1] == "list" and head.split()[-1] == "withheld"
    assert rows[-1].split()[-1] == "1"
    out = sale(bench, 800, "4980000000000002")  # the card left off the list
    assert "issuer_online_only" in out and not out.startswith("APPROVED_OFFLINE")


def test_centre_serve_sells_over_rf_answers_online_and_clears(emulated_board, tmp_path):
    """The bench console: an amount typed in, a card tapped on the board's field."""
    from host_tools.demo import free_udp_port
    from host_tools.keyring import Keyring
    from host_tools.link import TerminalLink
    from host_tools.provision import push_keys
    from host_tools.wallet import card_image, card_memory, describe, issue_card

    rf = free_udp_port()
    emu = emulated_board("served", rf_port=rf)
    with TerminalLink.open(emu.port) as t:
        push_keys(t, t.keyring)
    db = tmp_path / "c.db"
    env = dict(os.environ, TERMCTL_PORT=emu.port)
    subprocess.run([sys.executable, "-m", "host_tools.cli", "centre", "--db", str(db),
                    "add-card", "4980000000000001", "--credit-limit", "100000", "--create"],
                   env=env, check=True, capture_output=True)
    memory = card_memory(issue_card("4980000000000001", 1, "credit", Keyring.open()))
    from host_tools.cardemu import CardEmulator

    serve = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "centre", "--db",
                              str(db), "serve", "--wait", "20"], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    with CardEmulator(memory, f"udp:127.0.0.1:{rf}") as card:
        serve.stdin.write("2500\n")
        serve.stdin.flush()
        assert card.serve(taps=1, timeout=30) == 1
    out, err = serve.communicate("quit\n", timeout=60)
    assert serve.returncode == 0, err
    assert "APPROVED_ONLINE" in out  # a new card's first tap goes to the centre
    assert "clearing: batch 1, 1 new" in out
    assert describe(card_image(memory))["last_online_atc"] == 1



def _read_until(proc, text, timeout=30.0):
    """Lines from proc.stdout until one holds `text`; fails after timeout."""
    import select
    import time

    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            seen.append(line)
            if text in line:
                return seen
            if not line:
                break
    raise AssertionError(f"no {text!r} from the console; got {seen}")


def test_ctrl_c_during_a_card_wait_cancels_the_sale_and_keeps_the_console(
        emulated_board, tmp_path):
    """The console survives Ctrl-C and stays in step with the terminal: it reads the
    cancelled sale's answer when the card wait ends, then serves on."""
    import signal
    import socket

    from host_tools.link import TerminalLink
    from host_tools.provision import push_keys

    field = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the RF field, no card on it
    field.bind(("127.0.0.1", 0))
    field.settimeout(30)
    emu = emulated_board("waiting", rf_port=field.getsockname()[1])
    with TerminalLink.open(emu.port) as t:
        push_keys(t, t.keyring)
    env = dict(os.environ, TERMCTL_PORT=emu.port, TERMCTL_CENTRE=str(tmp_path / "c.db"),
               PYTHONUNBUFFERED="1")
    serve = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "centre", "--create",
                              "serve", "--wait", "5"], env=env, text=True, cwd=tmp_path,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        _read_until(serve, "serving terminal")
        serve.stdin.write("2500\n")
        serve.stdin.flush()
        _read_until(serve, "waiting up to 5 s for a card")
        field.recvfrom(512)  # the terminal's first polling: it waits for a card now
        serve.send_signal(signal.SIGINT)
        said = _read_until(serve, "sale cancelled")[-1]
        assert said.startswith("sale cancelled: no card presented within 5000 ms"), said
        serve.stdin.write("pull\n")  # in step: the next request gets its own answer
        serve.stdin.flush()
        assert "clearing: batch" in _read_until(serve, "clearing: batch")[-1]
        out, err = serve.communicate("quit\n", timeout=30)
    finally:
        serve.kill()
        field.close()
    assert serve.returncode == 0, err
    assert "Traceback" not in err

@pytest.mark.parametrize("damage", ["zero the first two 4 KB blocks", "truncate to 0",
                                    "truncate to 1000 bytes"])
def test_a_damaged_flash_is_refused_then_formatted_and_no_later_sale_is_lost(
        emulated_board, tmp_path, damage):
    """Issue 12 item 2: the image did mount after damage as a blank board, its
    sequence restarted at 1 and the centre took the new sales for ones it had
    ("0 new, 3 already there"), so the terminal freed them unstored."""
    import hashlib
    import time

    from host_tools.centre import Centre
    from host_tools.emulator import Emulator
    from host_tools.errors import ToolError
    from host_tools.link import TerminalLink
    from host_tools.pos import run_sale
    from host_tools.provision import push_keys
    from host_tools.transfer import ack_batch, pull_batch
    from host_tools.wallet import issue_card

    centre = Centre(str(tmp_path / "centre.db"))

    def sell_and_clear(emu, n, first_token):
        with TerminalLink.open(emu.port, timeout=10) as t:
            push_keys(t, t.keyring)
            t.set_time(int(time.time()))
            t.set_params({"new_card_online": 0, "random_target_pct": 0,
                          "random_max_target_pct": 0})
            for i in range(n):
                run_sale(t, 500 + i, issue_card(str(first_token + i), 1, "credit",
                                                t.keyring))
            batch = pull_batch(t)
            centre.ingest_clearing(batch.terminal_id, batch.records)
            assert ack_batch(t, batch.batch_id) == "acked"
            return batch, t.status()

    emu = emulated_board("shop")
    before, st = sell_and_clear(emu, 3, 4980000000000001)
    assert "flash_formatted" not in st
    emu.stop()
    img = emu.flash
    data = img.read_bytes()
    if damage.startswith("zero"):
        img.write_bytes(bytes(8192) + data[8192:])
    else:
        img.write_bytes(data[:int(damage.split()[2])] if "1000" in damage else b"")
    damaged = hashlib.sha256(img.read_bytes()).digest()
    with pytest.raises(ToolError, match=r"^%s (does not mount as LittleFS|cannot be used).*: "
                       r"start with --format.*nothing was written$" % img):
        emu.start()
    assert hashlib.sha256(img.read_bytes()).digest() == damaged  # refused: nothing written
    emu = Emulator(flash=img, format_image=True)
    emu.start()
    try:
        after, st = sell_and_clear(emu, 3, 4980000000000101)
    finally:
        emu.stop()
    said = ("image had %s of " % damage.split()[2] if damage.startswith("truncate")
            else "image did not mount")
    assert st["flash_formatted"].startswith(said)  # status says so
    assert before.epoch != after.epoch and after.first_seq == 1  # a new journal
    sent = {(before.epoch, r["seq"]) for r in before.records} | {
        (after.epoch, r["seq"]) for r in after.records}
    stored = {(r["epoch"], r["seq"]) for r in centre.clearing(emu.terminal_id)}
    assert stored == sent and len(stored) == 6  # records sent = records in the centre
    (alert,) = centre.alerts(kind="journal_restarted")
    assert alert["detail"]["earlier_epochs"] == [before.epoch]
