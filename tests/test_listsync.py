"""Lists over the link end to end (terminal.listsync): an issuer whose entries the
host withheld to keep within its quota goes online-only on the terminal, its
sales carry the reason into the journal, and `list status` says so."""

import datetime
import re

from host_tools import cli
from host_tools.link import TerminalLink
from host_tools.pos import run_sale
from host_tools.provision import push_keys
from host_tools.transfer import pull_batch
from host_tools.wallet import issue_card
from terminal import decision

TOKENS = ["49800000000001%02d" % i for i in range(5)]


def test_withheld_over_quota_makes_the_issuer_online_only(emulated_board, tmp_path, capsys):
    emu = emulated_board()
    with TerminalLink.open(emu.port, timeout=5) as link:
        push_keys(link, link.keyring)
        now = int(datetime.datetime.now().timestamp())
        link.set_time(now)
        link.set_params({"new_card_online": 0, "random_target_pct": 0,
                         "random_max_target_pct": 0})
    csv = tmp_path / "list.csv"
    csv.write_text("issuer,token,action\n" + "".join("1,%s,add\n" % t for t in TOKENS))
    out = tmp_path / "v1.bin"
    port = ["--port", emu.port]
    assert cli.main(["list", "build", str(csv), "--out", str(out), "--quota", "1=2",
                     "--resolve", "keep-newest"]) == 0
    built = capsys.readouterr().out
    assert "issuer 1: 3 withheld in the list" in built
    assert cli.main(port + ["list", "push", str(out)]) == 0
    assert "online-only: issuers 1" in capsys.readouterr().out
    assert cli.main(port + ["list", "status"]) == 0
    status = capsys.readouterr().out
    assert re.search(r"^list_issuer_1 +2 overflow=0 withheld=3$", status, re.M)
    assert re.search(r"^list_online_only_issuers +1$", status, re.M)
    with TerminalLink.open(emu.port, timeout=5) as link:
        dropped = run_sale(link, 500, issue_card(TOKENS[0], 1, "credit", link.keyring))
        listed = run_sale(link, 500, issue_card(TOKENS[4], 1, "credit", link.keyring))
        other = run_sale(link, 500, issue_card("4980000000000999", 2, "credit", link.keyring))
        batch = pull_batch(link)
    # the token the host dropped is not approved offline: no list answer is complete
    # for issuer 1, so its cards go online (here unreachable: the Default declines)
    assert dropped.outcome == "DECLINED_OFFLINE"
    assert "issuer_online_only" in dropped.reasons and "listed" not in dropped.reasons
    assert listed.outcome == "DECLINED_OFFLINE" and "listed" in listed.reasons
    assert other.outcome == "APPROVED_OFFLINE" and other.reasons == []
    journal = {r["seq"]: r for r in batch.records}
    assert journal[1]["reasons"] & decision.R_ISSUER_ONLINE_ONLY
    assert not journal[3]["reasons"] & decision.R_ISSUER_ONLINE_ONLY


def test_status_heap_figures_stay_within_the_heap_after_a_large_push(emulated_board):
    # heap_peak was micropython.mem_peak(): bytes allocated and never freed by hand,
    # which the collector's frees never lower (61,700,795 after a 1M-entry push on a
    # 256 KB heap). No status figure about the heap may exceed the heap itself.
    import random

    from host_tools import listbuild
    from host_tools.transfer import push_list

    emu = emulated_board()
    rnd = random.Random(12)
    with TerminalLink.open(emu.port, timeout=30) as link:
        push_keys(link, link.keyring)
        key_id = link.keyring.list_key()[0]
        data = listbuild.encode_full({1: [(rnd.randbytes(8), 0) for _ in range(50_000)]},
                                     version=1, base_day=20_400, key_id=key_id)
        push_list(link, data, 1, 1, 0)
        st = link.status()
    assert st["list_entries"] == "50000"
    heap = {k: int(v) for k, v in st.items() if k.startswith("heap_")}
    assert set(heap) >= {"heap_used", "heap_free"}
    assert all(0 <= v <= emu.heap for v in heap.values()), heap
    assert heap["heap_used"] + heap["heap_free"] <= emu.heap
