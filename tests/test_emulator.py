"""The emulated board end to end: the firmware in the MicroPython unix port,
its flash a LittleFS2 image in a file, its serial port a pty opened with
pyserial by the host library."""

import os
import signal
import subprocess
import sys
import time

import pytest
import serial

from host_tools.errors import ToolError
from host_tools.keyring import Keyring
from host_tools.link import TerminalLink, request
from terminal import frame, protocol


def test_boots_under_the_board_heap_cap_and_reports_status(emulated_board):
    emu = emulated_board()
    with TerminalLink.open(emu.port) as t:
        st = t.status()
    assert st["board"] == "emulator"
    assert st["platform"] == "unix"
    assert st["provisioned"] == "1"
    assert int(st["terminal_id"], 16) == emu.terminal_id
    heap_used, heap_free = int(st["heap_used"]), int(st["heap_free"])
    # gc.mem_alloc + gc.mem_free is the heap the unix port was given, so the
    # firmware really runs under the board's cap
    assert heap_used + heap_free <= emu.heap
    assert heap_used > 0
    assert int(st["flash_total"]) == 16 * 1024 * 1024
    assert st["clock"] == "unset"


def test_time_and_params_persist_across_restart(emulated_board, tmp_path):
    emu = emulated_board()
    with TerminalLink.open(emu.port) as t:
        shown = t.set_time(1_800_000_000)
        assert shown.startswith("2027-01-15T")
        t.set_params({"floor_limit": 8000, "decline_limit": 5})
        st = t.status()
        assert st["clock"].startswith("2027-01-15T")
    emu.stop()
    emu.start()
    with TerminalLink.open(emu.port) as t:
        p = t.params()
        st = t.status()
    assert (p["floor_limit"], p["decline_limit"], p["version"]) == (8000, 5, 1)
    assert st["auth_counter"] == "2"
    assert st["clock"] == "unset"  # no RTC: the host sets the clock after a reboot


def test_power_cut_keeps_last_good_state(emulated_board):
    emu = emulated_board()
    with TerminalLink.open(emu.port) as t:
        t.set_params({"floor_limit": 7000})
    emu.kill()  # SIGKILL: no unmount, as a power cut
    emu.start()
    with TerminalLink.open(emu.port) as t:
        assert t.params()["floor_limit"] == 7000


def test_invalid_and_forged_requests_change_nothing(emulated_board):
    emu = emulated_board()
    with TerminalLink.open(emu.port) as t:
        before = t.params()
        with pytest.raises(ToolError, match="out of range"):
            t.set_params({"floor_limit": -5})
        with pytest.raises(ToolError, match="unknown parameter"):
            t.set_params({"floor_limt": 5})
        # forged: right terminal id, wrong key
        forged = protocol.Authenticator(bytes(32), emu.terminal_id)
        from host_tools.link import signed_request

        payload = signed_request(forged, protocol.CMD_PARAMS_SET, 5, 10**6, b"floor_limit=1")
        status, body = t.exchange(protocol.CMD_PARAMS_SET, 5, payload)
        assert status == protocol.ERR_BAD_MAC
        assert t.params() == before


def test_replayed_frame_is_refused(emulated_board):
    emu = emulated_board()
    with TerminalLink.open(emu.port) as t:
        key, _ = Keyring.open().get(emu.terminal_id)
        auth = protocol.Authenticator(key, emu.terminal_id)
        from host_tools.link import signed_request

        captured = signed_request(auth, protocol.CMD_PARAMS_SET, 9, 50, b"floor_limit=6000")
        assert t.exchange(protocol.CMD_PARAMS_SET, 9, captured)[0] == protocol.OK
        t.set_params({"floor_limit": 9000})
        status, body = t.exchange(protocol.CMD_PARAMS_SET, 9, captured)
        assert status == protocol.ERR_REPLAY
        assert t.params()["floor_limit"] == 9000


def test_a_counter_at_its_end_is_refused_and_the_host_says_how_to_re_key(emulated_board):
    # A request signed with 2**64 - 1 used to be accepted; every signed command after
    # it crashed the host with OverflowError and the keyring held 2**64.
    from host_tools.link import signed_request

    emu = emulated_board()
    ring = Keyring.open()
    with TerminalLink.open(emu.port, keyring=ring) as t:
        key, _ = ring.get(emu.terminal_id)
        auth = protocol.Authenticator(key, emu.terminal_id)
        last = signed_request(auth, protocol.CMD_PARAMS_SET, 9, (1 << 64) - 1,
                              b"floor_limit=6000")
        status, body = t.exchange(protocol.CMD_PARAMS_SET, 9, last)
        assert status == protocol.ERR_INVALID and b"re-key the terminal" in body
        assert t.status()["auth_counter"] == "0" and t.params()["floor_limit"] != 6000
        # the host refuses to sign past the end, says how to re-key, stores nothing
        ring.set_counter(emu.terminal_id, protocol.COUNTER_END - 1)
        with pytest.raises(ToolError, match="counter is at the end of its range.*re-key"):
            t.set_params({"floor_limit": 7000})
        assert ring.get(emu.terminal_id)[1] == protocol.COUNTER_END - 1
        with pytest.raises(ToolError, match="is not a u64"):
            ring.set_counter(emu.terminal_id, 1 << 64)
        ring.set_counter(emu.terminal_id, 41)  # back in range: signing works again
        assert t.set_params({"floor_limit": 7000})
        assert t.status()["auth_counter"] == "42"


def test_link_resyncs_after_junk_and_a_length_lie(emulated_board):
    emu = emulated_board()
    with TerminalLink.open(emu.port) as t:
        n = 900
        lie = bytes((0xA5, 0x5A, n & 0xFF, n >> 8, frame.header_check(n))) + b"short"
        t.ser.write(os.urandom(300) + lie)
        time.sleep(0.4)  # longer than the firmware's idle timeout
        st = t.status()
        assert int(st["link_dropped_bytes"]) > 0
        # a corrupt frame gets an explicit error reply
        bad = bytearray(frame.encode(request(protocol.CMD_STATUS, 3)))
        bad[-1] ^= 0xFF
        t.ser.write(bytes(bad))
        got = t.read_frame(time.monotonic() + 2)
        assert got[0] == protocol.CMD_FRAME_ERROR | protocol.REPLY_BIT
        assert got[3] == protocol.ERR_CHECKSUM
        assert t.status()["link_corrupt_frames"] == "1"


def test_a_burst_of_length_lies_does_not_outlast_the_host_timeout(emulated_board):
    # 100 headers that lie about their length (500 bytes), then a request: the firmware
    # drops them all after one idle timeout (it used to wait one 50 ms poll per lie:
    # 55 of them outlasted the host's 3 s timeout).
    emu = emulated_board()
    lies = b"".join(bytes((0xA5, 0x5A, n & 255, n >> 8, frame.header_check(n)))
                    for n in range(900, 1000))
    with TerminalLink.open(emu.port, timeout=3.0) as t:
        t.status()
        t0 = time.monotonic()
        t.ser.write(lies)
        st = t.status()
        assert time.monotonic() - t0 < 3.0
        assert int(st["link_dropped_bytes"]) == len(lies)


def test_pico_board_reboots_onto_its_counter_snapshot_under_its_heap_cap(emulated_board):
    """After a clean stop the Pico's board file boots again under its heap cap with
    the counter snapshot (18 KB at 512 cards) read back, and sells: the snapshot is
    read into the table itself, late in boot, with no second copy in the heap.
    (A first boot and a day's work per board: tests/test_board_memory.py.)"""
    from host_tools.emulator import board_heap
    from host_tools.pos import run_sale
    from host_tools.provision import push_keys
    from host_tools.wallet import issue_card

    emu = emulated_board(board="pico_pn532")
    assert emu.heap == board_heap("pico_pn532") == 192 * 1024 * 4 // 3
    with TerminalLink.open(emu.port, timeout=10) as t:
        push_keys(t, t.keyring)
        t.set_time(1_795_000_000)
        t.set_params({"new_card_online": 0, "random_target_pct": 0,
                      "random_max_target_pct": 0, "lower_consecutive_offline": 3,
                      "upper_consecutive_offline": 6})
        image = issue_card("4980000000000001", 1, "credit", t.keyring)
        outcomes = []
        for _ in range(5):
            r = run_sale(t, 500, image)
            outcomes.append(r.outcome)
            image = r.card_image
        # three offline in a row, then the lower consecutive limit sends it online
        assert outcomes == ["APPROVED_OFFLINE"] * 3 + ["DECLINED_OFFLINE"] * 2
        assert int(t.status()["journal_pending"]) == 5
    emu.stop()  # clean: the counter table is saved to flash
    emu.start()
    with TerminalLink.open(emu.port, timeout=10) as t:
        t.set_time(1_795_000_100)
        r = run_sale(t, 500, image)
        st = t.status()
    assert r.outcome == "DECLINED_OFFLINE" and "lower_consecutive" in r.reasons
    assert st["board"] == "pico_pn532" and int(st["journal_pending"]) == 6
    # the saved table came back whole (18 KB at 512 cards): nothing left to replay
    assert st["counters"] == "1/512 cards" and st["counters_replayed_at_boot"] == "0"
    assert int(st["heap_used"]) + int(st["heap_free"]) <= emu.heap


def test_heap_cap_too_small_fails_with_a_clear_error(tmp_path, keyring_path):
    from host_tools.emulator import Emulator

    emu = Emulator(flash=tmp_path / "tiny.img", heap=12 * 1024)
    with pytest.raises(ToolError, match=r"^--heap 12288 bytes is too small to boot"):
        emu.start(ready_timeout=10)
    assert not (tmp_path / "tiny.img").exists()  # refused before anything was made
    emu = Emulator(flash=tmp_path / "small.img", heap=80 * 1024)
    with pytest.raises(ToolError, match="ran out of memory while booting under a 81920-byte "
                       "heap") as e:
        emu.start(ready_timeout=20)
    assert "\n" not in str(e.value) and "NLR" not in str(e.value)
    assert not (tmp_path / "small.img").exists()  # the new image it made is not left behind


def test_emulate_bad_image_path_or_heap_is_one_line(tmp_path, keyring_path):
    # issue 12 item 4: a directory as the image, or --heap 1k, used to print
    # MicroPython internals ("FATAL: uncaught NLR")
    for args, expect in (
            (["--flash", str(tmp_path)], f"termctl: {tmp_path}: is a directory, not a flash "
             "image file\n"),
            (["--flash", str(tmp_path / "x.img"), "--heap", "1k"],
             "termctl: --heap 1024 bytes is too small to boot the firmware (at least 64k; "
             "board emulator has 256 KB)\n")):
        for extra in ([], ["--detach"]):
            r = termctl("emulate", *args, *extra)
            assert (r.returncode, r.stderr, r.stdout) == (1, expect, ""), (extra, r)
    assert not (tmp_path / "x.img").exists()


def termctl(*args, env=None, timeout=30, cwd=None):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def test_detach_with_the_default_image_in_a_fresh_directory(tmp_path, keyring_path):
    """The README's first command, run where no .termctl/ exists yet."""
    r = termctl("emulate", "--detach", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / ".termctl" / "emulator.img").exists()
    stop = termctl("emulate", "--stop", cwd=tmp_path)
    assert stop.returncode == 0, stop.stderr


def test_detach_then_sigterm_stops_cleanly_and_image_survives(tmp_path, keyring_path):
    flash = tmp_path / "d.img"
    r = termctl("emulate", "--detach", "--flash", str(flash))
    assert r.returncode == 0, r.stderr
    info = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    port, pid = info["port"], int(info["pid"])
    env = dict(os.environ, TERMCTL_PORT=port)
    assert termctl("params", "set", "floor_limit=4321", env=env).returncode == 0
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("detached emulator ignored SIGTERM")
    r = termctl("emulate", "--detach", "--flash", str(flash))
    assert r.returncode == 0, r.stderr
    port = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)["port"]
    env = dict(os.environ, TERMCTL_PORT=port)
    shown = termctl("params", "show", env=env)
    assert "4321" in shown.stdout
    stop = termctl("emulate", "--flash", str(flash), "--stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout


def test_cli_status_time_params(emulated_board):
    emu = emulated_board()
    env = dict(os.environ, TERMCTL_PORT=emu.port)
    r = termctl("time", "set", "2026-11-21T09:30:00Z", env=env)
    assert r.returncode == 0 and "2026-11-21T09:30:00Z" in r.stdout, r.stderr
    r = termctl("status", "--json", env=env)
    assert r.returncode == 0 and '"board": "emulator"' in r.stdout
    r = termctl("params", "set", "floor_limit=-1", env=env)
    assert r.returncode == 1
    assert r.stderr.startswith("termctl: ") and "out of range" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_wrong_port_is_one_line(keyring_path):
    r = termctl("--port", "/dev/does-not-exist", "status")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith("termctl: cannot open /dev/does-not-exist")


def test_cli_silent_port_names_port_and_expectation(keyring_path):
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        r = termctl("--port", os.ttyname(slave), "--timeout", "0.5", "status")
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1
    assert "no answer within 0.5 s" in r.stderr and "expected the terminal" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_plain_micropython_repl_is_recognised(keyring_path):
    """A board with stock MicroPython (no terminal firmware) answers with its REPL."""
    import pty
    import tty

    from host_tools.emulator import micropython_binary

    master, slave = pty.openpty()
    tty.setraw(slave)
    repl = subprocess.Popen([micropython_binary(), "-i"], stdin=master, stdout=master,
                            stderr=master, start_new_session=True)
    try:
        time.sleep(0.3)
        r = termctl("--port", os.ttyname(slave), "--timeout", "1", "status")
    finally:
        repl.kill()
        repl.wait()
        os.close(master)
        os.close(slave)
    assert r.returncode == 1
    assert "MicroPython REPL answered" in r.stderr, r.stderr


def test_help_explains_every_command():
    r = termctl("--help")
    assert r.returncode == 0
    for cmd in ("emulate", "status", "time", "params"):
        assert cmd in r.stdout
    assert termctl("emulate", "--help").returncode == 0
    assert "TERMCTL_PORT" in r.stdout


def test_pyserial_opens_the_pty_like_a_device(emulated_board):
    emu = emulated_board()
    s = serial.Serial(emu.port, 115200, timeout=1)
    s.write(frame.encode(request(protocol.CMD_STATUS, 42)))
    r = frame.FrameReader(1024)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        r.feed(s.read(64))
        kind, payload = r.pop()
        if kind == frame.FRAME:
            break
    s.close()
    assert kind == frame.FRAME and payload[0] == protocol.CMD_STATUS | protocol.REPLY_BIT
    assert protocol.u16(payload, 1) == 42


def test_flash_dry_run_lists_what_a_board_gets():
    r = termctl("flash", "--board", "pico_pn532", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "-march=armv6m" in r.stdout
    assert ":board.py" in r.stdout and ":terminal/decision.mpy" in r.stdout
    assert "unix_platform" not in r.stdout and "nfc_udp" not in r.stdout
    r = termctl("flash", "--board", "emulator", "--dry-run")
    assert r.returncode == 1 and "termctl emulate" in r.stderr


def test_one_image_runs_one_board_and_stop_still_reaches_it(tmp_path, keyring_path):
    # issue 12 item 6: a second emulator on the same image overwrote run.json
    flash = tmp_path / "shared.img"
    first = termctl("emulate", "--detach", "--flash", str(flash))
    assert first.returncode == 0, first.stderr
    info = dict(line.split(": ", 1) for line in first.stdout.splitlines() if ": " in line)
    state = (tmp_path / "shared.img.run.json").read_text()
    image = flash.read_bytes()
    for extra in ([], ["--detach"]):
        second = termctl("emulate", "--flash", str(flash), *extra)
        assert second.returncode == 1 and second.stdout == ""
        assert second.stderr == (
            f"termctl: {flash} is in use by the emulated board pid {info['pid']} on "
            f"{info['port']}: one image runs one board (stop it with `termctl emulate "
            f"--flash {flash} --stop`)\n")
    assert (tmp_path / "shared.img.run.json").read_text() == state
    assert flash.read_bytes() == image
    stop = termctl("emulate", "--flash", str(flash), "--stop")
    assert stop.returncode == 0 and stop.stdout == f"stopped emulator pid {info['pid']}\n"
    again = termctl("emulate", "--detach", "--flash", str(flash))  # free again
    assert again.returncode == 0, again.stderr
    assert termctl("emulate", "--flash", str(flash), "--stop").returncode == 0


def test_strict_flash_status_counts_and_no_violation_in_a_day(emulated_board):
    from host_tools.flashmodel import flash_counters

    emu = emulated_board(board="pico_pn532")
    with TerminalLink.open(emu.port) as t:
        c = flash_counters(t.status())
    assert c.violations == 0 and c.programs > 0 and c.erases > 0  # the first boot's format
    assert c.typ_us == 400 * c.programs + 45_000 * c.erases  # W25Q16JV: tPP and tSE typ
    assert c.max_us == 3_000 * c.programs + 400_000 * c.erases
