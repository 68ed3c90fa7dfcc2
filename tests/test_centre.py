"""The centre (host_tools/centre/): schema, clearing ingestion, online authorisation,
blocking and the daily report, on a SQLite file in tmp_path."""

import datetime as dt
import json
import os
import sqlite3
import stat

import pytest

from host_tools.centre import (
    MIGRATIONS,
    Centre,
    as_day,
    classify_outcome,
    clearing_row,
    day_of,
)
from host_tools.errors import ToolError
from terminal import decision, tap
from terminal import journal as J
from terminal.tokenhash import TokenHasher

KEY = bytes(range(16))
AEON = 0x0101
AU = 0x0102
T1, T2 = 0x1A2B3C01, 0x1A2B3C02
DAY0 = as_day("2026-11-20")
NOON = DAY0 * 86400 + 12 * 3600
CREDIT = "4980123412341234"
PREPAID = "5100200030004000"


@pytest.fixture
def centre(tmp_path):
    c = Centre(tmp_path / "centre.db", list_key=KEY)
    c.add_issuer(AEON, "Aeon", list_quota=10)
    c.add_issuer(AU, "au PAY", list_quota=5)
    c.add_card(CREDIT, AEON, "credit", credit_limit=50_000, expiry="2028-12-31")
    c.add_card(PREPAID, AU, "prepaid", balance=0)
    yield c
    c.close()


def record(seq, *, terminal=T1, t=NOON, token=CREDIT, amount=9800,
           outcome=tap.APPROVED_OFFLINE, reasons=0, code=b"000000", **extra):
    """A clearing record as terminal.journal.decode returns it."""
    h = TokenHasher(KEY).hash(token.encode())
    m = bytearray(8)
    J.mask_token_into(token.encode(), m)
    rec = {"version": 1, "outcome": outcome, "issuer": AEON if token == CREDIT else AU,
           "terminal_id": terminal, "seq": seq, "time": t + seq, "token_hash": h,
           "masked_token": bytes(m), "amount": amount, "reasons": reasons,
           "approval_code": code, "atc": 10 + seq, "last_online_atc": 9,
           "offline_count_since_online": seq, "offline_amount_today": amount,
           "offline_amount_since_online": amount * seq}
    rec.update(extra)
    return rec


# -- schema ---------------------------------------------------------------------------


def test_schema_created_wal_foreign_keys_private_file(tmp_path, centre):
    db = centre.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"issuers", "cards", "terminals", "clearing", "online_auth", "alerts"} <= tables
    assert stat.S_IMODE(os.stat(tmp_path / "centre.db").st_mode) == 0o600


def test_reopen_keeps_key_and_data_and_refuses_another_key(tmp_path, centre):
    centre.close()
    with Centre(tmp_path / "centre.db") as c:
        assert c.list_key == KEY
        assert c.card(CREDIT)["issuer"] == AEON
    with pytest.raises(ToolError, match="another list key"):
        Centre(tmp_path / "centre.db", list_key=bytes(16))


def test_new_database_gets_a_random_key(tmp_path):
    with Centre(tmp_path / "a.db") as a, Centre(tmp_path / "b.db") as b:
        assert len(a.list_key) == 16 and a.list_key != b.list_key


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(ToolError, match="newer"):
        Centre(path)


def test_token_hash_is_the_terminal_list_key(centre):
    assert centre.token_hash(CREDIT) == TokenHasher(KEY).hash(CREDIT.encode())
    assert centre.card(CREDIT)["token_hash"] == centre.token_hash(CREDIT)


# -- issuers and cards ------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(token="49-80", issuer=AEON, product="credit", credit_limit=1), "letters or digits"),
    (dict(token="1" * 17, issuer=AEON, product="credit", credit_limit=1), "letters or digits"),
    (dict(token="111", issuer=0x999, product="credit", credit_limit=1), "unknown issuer"),
    (dict(token="111", issuer=AEON, product="gold", credit_limit=1), "unknown product"),
    (dict(token="111", issuer=AEON, product="credit", balance=5), "not a balance"),
    (dict(token="111", issuer=AEON, product="credit"), "credit limit"),
    (dict(token="111", issuer=AU, product="prepaid", balance=-1), "balance"),
    (dict(token="111", issuer=AU, product="debit", credit_limit=5), "not a credit limit"),
    (dict(token=CREDIT, issuer=AEON, product="credit", credit_limit=1), "already registered"),
])
def test_add_card_mistakes_are_tool_errors(centre, kwargs, match):
    with pytest.raises(ToolError, match=match):
        centre.add_card(**kwargs)


def test_issuer_and_quota(centre):
    centre.add_issuer(AEON, "Aeon Financial", list_quota=3)
    assert centre.issuers()[0] == {"id": AEON, "name": "Aeon Financial", "list_quota": 3}
    for bad in (-1, 0x10000):
        with pytest.raises(ToolError):
            centre.add_issuer(bad, "x")
    with pytest.raises(ToolError):
        centre.add_issuer(7, "x", list_quota=-5)


def test_block_unknown_token_and_block_twice(centre):
    with pytest.raises(ToolError, match="unknown token 1234"):
        centre.block("1234", NOON)
    assert centre.block(CREDIT, NOON)["blocked_at"] == NOON
    assert centre.block(CREDIT, NOON + 99)["blocked_at"] == NOON  # first time kept
    assert centre.unblock(CREDIT)["status"] == "active"


# -- clearing ----------------------------------------------------------------------------


def test_same_batch_twice_is_stored_once(centre):
    batch = [record(s) for s in range(1, 11)]
    assert centre.ingest_clearing(T1, batch, batch_id=1) == (10, 0)
    assert centre.ingest_clearing(T1, batch, batch_id=1) == (0, 10)
    assert len(centre.clearing(T1)) == 10
    assert centre.alerts(kind="clearing_conflict") == []
    assert centre.terminals()[0]["last_batch"] == 1


def test_overlapping_batches(centre):
    assert centre.ingest_clearing(T1, [record(s) for s in range(1, 11)]) == (10, 0)
    assert centre.ingest_clearing(T1, [record(s) for s in range(6, 16)]) == (5, 5)
    assert [r["seq"] for r in centre.clearing(T1)] == list(range(1, 16))
    # the same seq at another terminal is another record
    assert centre.ingest_clearing(T2, [record(s, terminal=T2) for s in range(1, 4)]) == (3, 0)
    assert centre.clearing_gaps(T1) == []
    assert len(centre.clearing(token=CREDIT)) == 18 and centre.clearing(token=PREPAID) == []


def test_raw_journal_records_are_decoded(centre):
    buf = bytearray(J.RECORD_SIZE)
    r = record(1)
    J.pack_record_into(buf, T1, 1, r["time"], r["token_hash"], r["masked_token"], AEON, 9800,
                       tap.APPROVED_OFFLINE, 0, b"000000", 11, 9, 9800, 9800, 1)
    assert centre.ingest_clearing(T1, [bytes(buf)]) == (1, 0)
    row = centre.clearing(T1)[0]
    assert (row["amount"], row["outcome_name"], row["masked_token"]) == (9800, "APPROVE_OFFLINE",
                                                                          "49801234")
    buf[10] ^= 1
    with pytest.raises(ToolError, match="CRC"):
        centre.ingest_clearing(T1, [bytes(buf)])


def test_fields_mapped_and_extras_kept(centre):
    rec = record(1, reason_bits=0)
    del rec["reasons"]
    rec["offline_today"] = rec.pop("offline_amount_today")
    rec["pos_reference"] = "R-17"
    rec["nonce"] = b"\x01\x02"
    centre.ingest_clearing(T1, [rec])
    row = centre.clearing(T1)[0]
    assert row["offline_today"] == 9800 and row["offline_count"] == 1
    assert row["offline_since_online"] == 9800 and row["atc"] == 11
    assert json.loads(row["extra"]) == {"nonce": "0102", "pos_reference": "R-17", "version": 1}
    assert row["day"] == DAY0


def test_a_bad_record_stores_nothing_of_its_batch(centre):
    batch = [record(1), record(2, amount=-5), record(3)]
    with pytest.raises(ToolError, match="amount"):
        centre.ingest_clearing(T1, batch)
    with pytest.raises(ToolError, match="terminal"):
        centre.ingest_clearing(T1, [record(1), record(2, terminal=T2)])
    with pytest.raises(ToolError, match="token hash"):
        centre.ingest_clearing(T1, [record(1, token_hash=b"short")])
    assert centre.clearing() == []


def test_conflicting_duplicate_is_not_stored_and_the_batch_not_acknowledgeable(centre):
    # issue 12 item 2: the centre never lets a terminal free records it did not store
    centre.ingest_clearing(T1, [record(1)])
    changed = record(1, amount=100, offline_amount_today=9800, offline_amount_since_online=9800)
    with pytest.raises(ToolError, match=r"1 record\(s\) \(seq 1\) differ from the centre's "
                       r"copy: not stored, so the batch must not be acknowledged \(1 new"):
        centre.ingest_clearing(T1, [changed, record(2)])
    (a,) = centre.alerts(kind="clearing_conflict")
    assert a["detail"] == {"epoch": 0, "seq": 1, "fields": ["amount"]}
    rows = centre.clearing(T1)
    assert [(r["seq"], r["amount"]) for r in rows] == [(1, 9800), (2, 9800)]  # first copy stands


def test_records_are_known_by_terminal_epoch_and_seq(centre):
    # a terminal whose flash was formatted numbers from 1 again under a new epoch
    old = [record(s, epoch=0xA1) for s in (1, 2, 3)]
    assert centre.ingest_clearing(T1, old) == (3, 0)
    assert centre.alerts(kind="journal_restarted") == []
    new = [record(s, epoch=0xB2, amount=500) for s in (1, 2)]
    assert centre.ingest_clearing(T1, new) == (2, 0)  # no duplicates, no conflicts
    assert centre.ingest_clearing(T1, new) == (0, 2)  # a repeated pull
    (a,) = centre.alerts(kind="journal_restarted")
    assert a["subject"] == "%08x/000000b2" % T1
    assert a["detail"] == {"epoch": 0xB2, "first_seq": 1, "earlier_epochs": [0xA1]}
    assert sorted((r["epoch"], r["seq"]) for r in centre.clearing(T1)) == [
        (0xA1, 1), (0xA1, 2), (0xA1, 3), (0xB2, 1), (0xB2, 2)]
    assert centre.clearing_gaps(T1) == []  # gaps are counted within an epoch
    centre.ingest_clearing(T1, [record(5, epoch=0xB2)])
    assert centre.clearing_gaps(T1) == [(3, 4)]


def test_a_format_1_database_is_migrated_with_epoch_0(tmp_path):
    from host_tools.centre.schema import SCHEMA_V1

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1 + "PRAGMA user_version = 1;")
    db.execute("INSERT INTO terminals (id) VALUES (?)", (T1,))
    db.execute("INSERT INTO clearing (terminal_id, seq, time, day, token_hash, masked_token, "
               "issuer, amount, outcome, outcome_name, approved, online, reasons, "
               "approval_code, ingested_at) VALUES (?, 7, 1, 1, ?, 'm', 1, 500, 1, 'x', 1, 0, "
               "0, '000000', 1)", (T1, b"h" * 8))
    db.commit()
    db.close()
    with Centre(str(path)) as c:
        (row,) = c.clearing(T1)
        assert (row["epoch"], row["seq"], row["amount"]) == (0, 7, 500)
        assert c.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 2


def test_a_seq_twice_in_one_batch_is_checked_against_the_first(centre):
    assert centre.ingest_clearing(T1, [record(1), record(2), record(1)]) == (2, 1)
    assert centre.card(CREDIT)["credit_used"] == 2 * 9800  # charged once per stored sale
    twin = record(3, amount=100, offline_amount_today=9800, offline_amount_since_online=29400)
    with pytest.raises(ToolError, match=r"1 record\(s\) \(seq 3\) differ"):
        centre.ingest_clearing(T1, [record(3), twin, record(4)])
    assert [r["amount"] for r in centre.clearing(T1)] == [9800] * 4
    (a,) = centre.alerts(kind="clearing_conflict")
    assert a["detail"]["fields"] == ["amount"]


def test_add_cards_registers_many_checked_as_add_card(centre):
    centre.add_cards([("4980000000000001", AEON, "credit", None, 10_000),
                      ("5100000000000002", AU, "prepaid", 500, None)])
    assert centre.card("5100000000000002")["balance"] == 500
    assert centre.card("4980000000000001")["token_hash"] == centre.token_hash(
        "4980000000000001")
    with pytest.raises(ToolError, match="unknown issuer 9"):
        centre.add_cards([("4980000000000003", 9, "credit", None, 1)])
    with pytest.raises(ToolError, match="already registered"):
        centre.add_cards([("4980000000000004", AEON, "credit", None, 1),
                          ("4980000000000001", AEON, "credit", None, 1)])
    with pytest.raises(ToolError):
        centre.card("4980000000000004")  # nothing of a refused batch is stored


def test_gaps_show_lost_records(centre):
    centre.ingest_clearing(T1, [record(s) for s in (1, 2, 5, 6, 9)])
    assert centre.clearing_gaps(T1) == [(3, 4), (7, 8)]


def test_outcomes_classified():
    unable = decision.R_UNABLE_ONLINE
    assert classify_outcome(tap.APPROVED_OFFLINE, 0, "000000") == ("APPROVE_OFFLINE", True,
                                                                      False)
    assert classify_outcome(tap.APPROVED_OFFLINE, unable, "000000")[0] == \
        "APPROVE_OFFLINE_UNABLE"
    assert classify_outcome(tap.DECLINED_OFFLINE, unable, "000000") == ("DECLINE_UNABLE", False,
                                                                   False)
    assert classify_outcome(tap.APPROVED_ONLINE, 1, "123456") == ("ONLINE_APPROVED", True, True)
    assert classify_outcome(tap.DECLINED_ONLINE, 1, "000000") == ("ONLINE_DECLINED", False, True)
    assert classify_outcome(77, 0, "000000") == ("OUTCOME_77", False, False)


def test_offline_approvals_charge_the_card_once(centre):
    centre.ingest_clearing(T1, [record(1), record(2, outcome=tap.DECLINED_OFFLINE)])
    centre.ingest_clearing(T1, [record(1)])  # repeated pull: no second charge
    assert centre.card(CREDIT)["credit_used"] == 9800
    centre.ingest_clearing(T2, [record(1, terminal=T2, token=PREPAID, amount=500)])
    assert centre.card(PREPAID)["balance"] == -500  # an offline sale is a debt


# -- online authorisation --------------------------------------------------------------


def auth(c, token=CREDIT, amount=12_000, product="credit", issuer=AEON, t=NOON):
    return c.authorize(token, issuer, amount, product, T1, t)


def test_credit_approved_within_limit_then_over_it(centre):
    r = auth(centre, amount=30_000)
    assert r["approved"] and r["reason"] == "approved" and r["response_code"] == "00"
    assert centre.card(CREDIT)["credit_used"] == 30_000
    r = auth(centre, amount=20_001)
    assert not r["approved"] and r["reason"] == "over credit limit" and r["approval_code"] == ""
    assert auth(centre, amount=20_000)["approved"]


def test_au_pay_brute_force_three_declines_and_one_alert(centre):
    results = [centre.authorize(PREPAID, AU, 17_600, "prepaid", T1, NOON + 60 * i)
               for i in range(3)]
    assert [r["approved"] for r in results] == [False] * 3
    assert {r["reason"] for r in results} == {"insufficient funds"}
    assert {r["response_code"] for r in results} == {"51"}
    assert centre.card(PREPAID)["balance"] == 0
    (a,) = centre.alerts(kind="repeated_declines")
    assert a["token_hash"] == centre.token_hash(PREPAID) and a["day"] == DAY0
    assert a["detail"]["declines"] == 3
    centre.authorize(PREPAID, AU, 17_600, "prepaid", T1, NOON + 999)  # a 4th: no new alert
    assert len(centre.alerts()) == 1
    assert len(centre.online_auths(DAY0)) == 4


def test_prepaid_debits_balance_and_declines_above_it(centre):
    centre.top_up(PREPAID, 20_000)
    r = centre.authorize(PREPAID, AU, 17_600, 2, T1, NOON)  # product as terminal.card code
    assert r["approved"] and r["balance"] == 2_400
    r = centre.authorize(PREPAID, AU, 2_401, "prepaid", T1, NOON)
    assert (r["approved"], r["reason"], r["balance"]) == (False, "insufficient funds", 2_400)
    assert centre.authorize(PREPAID, AU, 2_400, "prepaid", T1, NOON)["balance"] == 0


@pytest.mark.parametrize("change, reason", [
    (dict(token="4980999999999999"), "unknown card"),
    (dict(issuer=AU), "issuer mismatch"),
    (dict(product="debit"), "product mismatch"),
    (dict(product="platinum"), "product mismatch"),
    (dict(amount=0), "invalid amount"),
    (dict(amount=100_000_001), "invalid amount"),
    (dict(amount="12000"), "invalid amount"),
    (dict(t=as_day("2029-01-01") * 86400), "expired"),
])
def test_declines(centre, change, reason):
    r = auth(centre, **change)
    assert (r["approved"], r["reason"], r["approval_code"]) == (False, reason, "")
    assert centre.online_auths()[-1]["reason"] == reason


def test_blocked_card_declined_from_the_block_on(centre):
    assert auth(centre)["approved"]
    centre.block(CREDIT, NOON + 10)
    r = auth(centre, t=NOON + 20)
    assert (r["approved"], r["reason"], r["response_code"]) == (False, "blocked", "43")


def test_expiry_day_itself_is_valid(centre):
    assert auth(centre, t=as_day("2028-12-31") * 86400 + 86399)["approved"]


def test_approval_codes_six_digits_unique_never_offline(tmp_path):
    with Centre(tmp_path / "codes.db", list_key=KEY) as c:
        c.add_issuer(AEON, "Aeon")
        c.add_card(CREDIT, AEON, "credit", credit_limit=10**8)
        codes = [c.authorize(CREDIT, AEON, 1, "credit", T1, NOON)["approval_code"]
                 for _ in range(1500)]
    assert all(len(x) == 6 and x.isascii() and x.isdigit() for x in codes)
    assert "000000" not in codes
    assert len(set(codes)) == len(codes)


def test_two_processes_share_the_database(tmp_path, centre):
    with Centre(tmp_path / "centre.db") as cli:  # e.g. `centre block` while serve runs
        cli.block(CREDIT, NOON)
        assert auth(centre, t=NOON + 1)["reason"] == "blocked"
        assert len(cli.online_auths()) == 1


# -- report ---------------------------------------------------------------------------


def test_report_per_day(centre):
    day1 = NOON + 86400
    centre.ingest_clearing(T1, [record(1), record(2, amount=5800),
                                record(3, outcome=tap.DECLINED_OFFLINE, reasons=1 << 11),
                                record(4, t=day1, amount=700)])
    code = auth(centre, amount=12_000)["approval_code"]
    centre.ingest_clearing(T2, [record(1, terminal=T2, amount=12_000, outcome=tap.APPROVED_ONLINE,
                                       code=code.encode())])  # online: counted once, from the log
    auth(centre, amount=99_000)
    for i in range(3):
        centre.authorize(PREPAID, AU, 17_600, "prepaid", T1, day1 + i)
    rows = centre.report(dt.date(2026, 11, 19), "2026-11-21")
    assert [r["date"] for r in rows] == ["2026-11-19", "2026-11-20", "2026-11-21"]
    assert rows[0] | {"day": 0, "date": ""} == {
        "day": 0, "date": "", "offline_count": 0, "offline_amount": 0, "online_count": 0,
        "online_amount": 0, "offline_declines": 0, "online_declines": 0, "declines": 0,
        "alerts": 0, "list_withheld": 0}
    d0, d1 = rows[1], rows[2]
    assert (d0["offline_count"], d0["offline_amount"]) == (2, 15_600)
    assert (d0["online_count"], d0["online_amount"]) == (1, 12_000)
    assert (d0["offline_declines"], d0["online_declines"], d0["declines"]) == (1, 1, 2)
    assert (d1["offline_count"], d1["offline_amount"], d1["declines"]) == (1, 700, 3)
    assert (d0["alerts"], d1["alerts"]) == (0, 1)


def test_report_range_mistakes(centre):
    with pytest.raises(ToolError, match="before"):
        centre.report("2026-11-21", "2026-11-20")
    with pytest.raises(ToolError, match="bad day"):
        centre.report("21/11/2026", "2026-11-22")


def test_business_day_cutover(tmp_path):
    assert day_of(NOON) == DAY0
    with Centre(tmp_path / "c.db", list_key=KEY, cutover_min=4 * 60) as c:
        assert c.day(DAY0 * 86400 + 3 * 3600) == DAY0 - 1  # 03:00 is still yesterday
        assert c.day(DAY0 * 86400 + 4 * 3600) == DAY0


def test_a_nights_batches_in_one_transaction_store_what_one_by_one_stores(centre, tmp_path):
    def rows(c, terminal, seqs):
        return [clearing_row(terminal, record(s, terminal=terminal), c.cutover_min, 0)
                for s in seqs]

    batches = [(T1, range(1, 6)), (T2, range(1, 4)), (T1, range(4, 9))]  # T1 twice
    one = Centre(tmp_path / "one.db", list_key=KEY)
    one.add_issuer(AEON, "Aeon", list_quota=10)
    one.add_issuer(AU, "au PAY", list_quota=5)
    one.add_card(CREDIT, AEON, "credit", credit_limit=50_000, expiry="2028-12-31")
    counts = centre.ingest_rows_many([(t, rows(centre, t, s)) for t, s in batches], now=NOON)
    assert counts == [(5, 0), (3, 0), (3, 2)]
    assert [one.ingest_rows(t, rows(one, t, s), now=NOON) for t, s in batches] == counts
    assert centre.clearing() == one.clearing()
    assert centre.card(CREDIT)["credit_used"] == one.card(CREDIT)["credit_used"] == 11 * 9800
    one.close()
