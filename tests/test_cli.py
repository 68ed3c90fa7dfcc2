"""termctl in process, as sqlite-utils' CliRunner does: `cli.main([...])`, its exit
status and its one-line message. Commands that need a terminal talk to the
firmware's own TerminalService under CPython (host_tools.inproc), so no board,
pty or subprocess is needed."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from host_tools import cli
from host_tools.commands.state import State
from host_tools.keyring import Keyring


class Run:
    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def termctl(tmp_path, monkeypatch, capsys):
    """termctl with no terminal: a fresh directory, its own keyring, no TERMCTL_*."""
    monkeypatch.chdir(tmp_path)
    for name in ("TERMCTL_PORT", "TERMCTL_CENTRE", "TERMCTL_WALLET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERMCTL_KEYRING", str(tmp_path / "keyring.json"))
    monkeypatch.setenv("COLUMNS", "200")  # help text unwrapped, to search in
    return Run(capsys)


@pytest.fixture
def board(termctl, tmp_path, monkeypatch):
    """termctl talking to an in-process terminal (the firmware under CPython) on
    tmp_path/board, whatever --port says; keys pushed and the clock set. The
    terminal stays up between commands, as a board does."""
    from host_tools.inproc import InProcessBoard

    terminal = InProcessBoard(tmp_path / "board", Keyring.open())
    power_off = terminal.close
    monkeypatch.setattr(terminal, "close", lambda: None)  # a command closes its link only

    def link(self):
        if self._link is None:
            self._link = terminal.link(timeout=5)
        return self._link

    monkeypatch.setattr(State, "link", link)
    assert termctl("keys", "push")[0] == 0
    assert termctl("time", "set", "--now")[0] == 0
    yield termctl
    power_off()


def test_a_sale_prints_the_approval_code_only_where_it_means_something(board):
    code, out, err = board("sale", "5000", "--token", "4980000000000001")
    # no centre: a new card cannot go online, the issuer's default decides offline
    assert code in (0, 3), err
    assert "approval 000000" in out and "OFFLINE" in out


def test_online_decisions_show_the_centre_code_or_none(board):
    assert board("centre", "--db", "c.db", "add-card", "4980000000000001",
                 "--credit-limit", "200000", "--create")[0] == 0
    assert board("centre", "--db", "c.db", "add-card", "5000000000000009", "--issuer", "3",
                 "--product", "prepaid", "--balance", "0")[0] == 0
    code, out, err = board("sale", "5000", "--token", "4980000000000001", "--centre", "c.db")
    assert code == 0 and out.startswith("APPROVED_ONLINE"), err
    approval = out.split("approval ")[1].split()[0]
    assert approval.isdigit() and len(approval) == 6 and approval != "000000"
    code, out, err = board("sale", "17600", "--token", "5000000000000009", "--issuer", "3",
                           "--product", "prepaid", "--centre", "c.db")
    assert code == 3 and out.startswith("DECLINED_ONLINE"), err
    assert "approval" not in out  # 000000 is the offline decisions' code (docs/centre.md)


def test_sale_takes_amounts_as_serve_does(board):
    code, out, err = board("sale", "5,000", "--token", "4980000000000001")
    assert code in (0, 3) and "amount 5000" in out, err
    code, out, err = board("sale", "5.00", "--token", "4980000000000001")
    assert code == 2 and "not an amount: '5.00'" in err


def test_global_options_work_after_the_command_too(termctl):
    before = termctl("--port", "/dev/no-such-port", "status")
    after = termctl("status", "--port", "/dev/no-such-port")
    assert before[0] == after[0] == 1
    assert after[2] == "termctl: cannot open /dev/no-such-port: No such file or directory\n"
    assert before[2] == after[2]
    # a subcommand's own option of the same name wins: card present --timeout is its wait
    code, out, _ = termctl("card", "present", "--help")
    assert code == 0 and "give up after seconds" in out


def test_help_shows_defaults_and_choices(termctl):
    code, out, _ = termctl("sale", "--help")
    assert code == 0
    assert "(default: 10.0)" in out  # --wait
    assert "{credit,prepaid,debit}" in out and "(default: credit)" in out
    assert "(default: None)" not in out and "(default: False)" not in out
    code, out, _ = termctl("simulate", "--help")
    assert "(default: 30)" in out and "(default: simulate-out)" in out


def _record_board(path, pid, port):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"port": port, "pid": pid, "terminal_id": "1a2b3c4d"}))


def test_without_a_port_the_one_emulated_board_running_here_is_used(termctl, tmp_path):
    code, _, err = termctl("status")
    assert code == 1 and "no emulated board runs here" in err and "--port" in err
    master, slave = os.openpty()  # a port that exists but where nobody answers
    try:
        port = os.ttyname(slave)
        _record_board(tmp_path / ".termctl" / "emulator.img.run.json", os.getpid(), port)
        _record_board(tmp_path / "gone.img.run.json", 2**22 + 1, port)  # no such process
        code, _, err = termctl("status", "--timeout", "0.2")
        assert code == 1 and err.startswith(f"termctl: {port}: no answer within 0.2 s"), err
        assert "is the board running there" in err and "waiting for a card" in err
        code, out, _ = termctl("ports")
        assert code == 0 and f"{port}" in out and "emulator.img" in out and "gone" not in out
        code, out, _ = termctl("ports", "--json")
        assert json.loads(out)["emulated"][0]["port"] == port
        _record_board(tmp_path / "rf.img.run.json", os.getpid(), port)
        code, _, err = termctl("status")
        assert code == 1 and "2 emulated boards run here" in err
    finally:
        os.close(master)
        os.close(slave)


def test_port_errors_give_the_reason_once(termctl):
    import socket

    with socket.socket() as s:  # a TCP port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = "socket://127.0.0.1:%d" % s.getsockname()[1]
    code, _, err = termctl("status", "--port", url)
    assert (code, err) == (1, f"termctl: cannot open {url}: Connection refused\n")


def test_a_typo_starts_no_centre_and_no_wallet(board, tmp_path, monkeypatch):
    code, _, err = board("sale", "5000", "--token", "4980000000000001", "--centre", "cnetre.db")
    assert code == 1 and "no centre database cnetre.db (given)" in err and "--create" in err
    code, _, err = board("sale", "5000", "--token", "4980000000000001", "--wallet", "walet.json")
    assert code == 1 and "no wallet walet.json" in err
    code, _, err = board("card", "present", "--token", "4980000000000001", "--rf-port", "1",
                         "--wallet", "walet.json")
    assert code == 1 and "no wallet walet.json" in err
    monkeypatch.setenv("TERMCTL_CENTRE", "centr.db")
    code, _, err = board("batch", "pull")
    assert code == 1 and "no centre database centr.db (named by $TERMCTL_CENTRE)" in err
    code, _, err = board("centre", "report")
    assert code == 1 and "centr.db" in err
    monkeypatch.delenv("TERMCTL_CENTRE")
    code, _, err = board("centre", "detect")  # the default is started by add-card only
    assert code == 1 and "no centre database yet" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board", "keyring.json"]


def test_centre_and_wallet_defaults_and_termctl_centre_everywhere(board, tmp_path, monkeypatch):
    code, _, err = board("centre", "add-card", "4980000000000001")
    assert code == 0 and "new centre database .termctl/centre.db" in err
    monkeypatch.setenv("TERMCTL_CENTRE", ".termctl/centre.db")
    code, out, err = board("sale", "5000", "--token", "4980000000000001")
    assert code == 0 and out.startswith("APPROVED_ONLINE"), err  # the centre answered
    assert "new wallet .termctl/wallet.json" in err
    wallet = json.loads((tmp_path / ".termctl" / "wallet.json").read_text())
    assert list(wallet["cards"]) == ["4980000000000001"]
    code, out, err = board("batch", "pull")  # stored in $TERMCTL_CENTRE
    assert code == 0 and "centre: 1 new" in out, err
    code, out, err = board("sale", "5000", "--token", "4980000000000001", "--no-centre")
    assert "APPROVED_ONLINE" not in out and "new wallet" not in err


def test_params_set_tells_what_changed_and_refuses_what_cannot_apply(board):
    code, out, err = board("params", "set", "floor_limit=9,000", "issuer.3.floor_limit=0")
    assert code == 1 and "set issuer overrides and global params separately" in err
    code, out, err = board("params", "set", "floor_limit=9000")
    assert code == 0, err
    assert "floor_limit: 10000 -> 9000" in out
    code, out, err = board("params", "set", "issuer.3.floor_limit=0")
    assert code == 0 and "issuer.3.floor_limit: inherit -> 0" in out, err
    code, _, err = board("params", "set", "issuer.9.floor_limit=0")
    assert code == 1 and "issuer 9 is not in this deployment (issuers 1, 2, 3" in err
    code, _, err = board("params", "set", "floor_limt=1")
    assert code == 1 and "unknown parameter 'floor_limt'; did you mean floor_limit?" in err
    code, _, err = board("params", "set", "issuer.3.flor_limit=1")
    assert code == 1 and "did you mean floor_limit?" in err
    code, out, _ = board("params", "show")
    assert "floor_limit" in out and " 9000 " in out  # nothing above changed it


def test_unknown_commands_suggest_the_nearest(termctl):
    code, _, err = termctl("statsu")
    assert code == 2 and "did you mean status?" in err
    code, _, err = termctl("centre", "reprot")
    assert code == 2 and "did you mean report?" in err


def test_a_mistyped_sweep_parameter_suggests_the_nearest():
    from host_tools.errors import ToolError
    from host_tools.simulate import parse_grid

    with pytest.raises(ToolError) as e:
        parse_grid(["floor_limti=5000,10000"])
    assert str(e.value).endswith("; did you mean floor_limit?")
    assert parse_grid(["floor_limit=5_000,10000"]) == {"floor_limit": [5000, 10000]}


def test_json_output_has_numbers_as_numbers(board):
    assert board("centre", "add-card", "4980000000000001")[0] == 0
    code, out, err = board("status", "--json")
    st = json.loads(out)
    assert code == 0 and st["max_frame"] > 0 and isinstance(st["heap_used"], int)
    assert isinstance(st["terminal_id"], str) and len(st["terminal_id"]) == 8
    code, out, _ = board("--json", "params", "show")
    params = json.loads(out)
    assert params["floor_limit"] == 10000 and params["version"] == 0
    code, out, _ = board("list", "status", "--json")
    assert json.loads(out)["list_entries"] == 0
    code, out, err = board("sale", "12,000", "--token", "4980000000000001", "--json",
                           "--centre", ".termctl/centre.db")
    sale = json.loads(out)
    assert code == 0 and sale["outcome"] == "APPROVED_ONLINE" and sale["amount"] == 12000, err
    assert sale["approval_code"].isdigit() and isinstance(sale["seq"], int)
    code, out, err = board("batch", "pull", "--json", "--centre", ".termctl/centre.db")
    pulled = json.loads(out)
    assert code == 0 and pulled["count"] == 1 and pulled["stored"]["centre"]["new"] == 1, err
    assert pulled["acknowledged"]
    today = dt.datetime.now(dt.timezone.utc).date()  # the centre's business day
    code, out, _ = board("centre", "report", "--json", "--from",
                         str(today - dt.timedelta(days=1)))
    days = json.loads(out)
    assert [d["date"] for d in days] == [str(today - dt.timedelta(days=1)), str(today)]
    assert days[1]["online_count"] == 1 and days[1]["online_amount"] == 12000
    assert "day" not in days[0]
    code, _, err = board("keys", "push", "--json")
    assert code == 2 and "keys has no --json output" in err


def test_centre_report_fits_100_columns_with_thousands_separators(board):
    board("centre", "add-card", "4980000000000001")
    for _ in range(2):
        board("sale", "12,000", "--token", "4980000000000001", "--centre", ".termctl/centre.db")
    board("batch", "pull", "--centre", ".termctl/centre.db")
    code, out, _ = board("centre", "report")  # the last seven days
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 + 7 and max(map(len, lines)) <= 100
    today = str(dt.datetime.now(dt.timezone.utc).date())
    assert lines[-1].startswith(today) and "24,000" in lines[-1]
    assert "offline_count" not in out and "20413" not in out  # no internal names or days


def test_os_errors_are_one_line_naming_the_file(board):
    code, out, err = board("batch", "pull", "--csv", "no-such-dir/batch.csv")
    assert (code, err) == (1, "termctl: no-such-dir/batch.csv: No such file or directory\n")


def test_terminal_refusals_are_link_errors_with_the_status(board):
    from host_tools.errors import LinkError, Refused
    from terminal import protocol

    code, _, err = board("params", "set", "floor_limit=-1")
    assert code == 1 and "terminal refused (invalid value)" in err
    link = State(cli.build_parser().parse_args(["status"])).link()
    with pytest.raises(Refused) as refused:
        link.set_params({"floor_limit": -1})
    assert refused.value.status == protocol.ERR_INVALID
    from host_tools.link import TerminalLink

    with pytest.raises(LinkError, match="cannot open /dev/no-such-port"):
        TerminalLink.open("/dev/no-such-port")


def test_termctl_loads_a_commands_libraries_only_when_it_runs():
    code = ("import sys, host_tools.cli\n"
            "print(sorted(m for m in ('sqlite3', 'nfc', 'matplotlib', 'tqdm', 'serial')"
            " if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip() == "[]"


def test_ctrl_c_before_a_sale_left_the_host_cancels_nothing(board, monkeypatch):
    from host_tools.pos import SaleCancelled, run_sale

    link = State(cli.build_parser().parse_args(["status"])).link()

    def interrupted(*args, **kwargs):  # Ctrl-C while the request was being signed
        raise KeyboardInterrupt

    monkeypatch.setattr(link, "call_signed", interrupted)
    monkeypatch.setattr(link, "cancel_sale", lambda *a: pytest.fail("nothing to cancel"))
    with pytest.raises(SaleCancelled, match="before it reached the terminal"):
        run_sale(link, 100, None, wait_ms=1000)
