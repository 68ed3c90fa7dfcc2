"""The authorisation and clearing centre: issuers, cards, terminals, clearing, alerts.

    with Centre("centre.db") as c:                      # schema created/migrated on open
        c.add_issuer(0x0101, "Aeon", list_quota=50)
        c.add_card("4980123412341234", 0x0101, "credit", credit_limit=300_000,
                   expiry="2028-12-31")
        r = c.authorize("4980123412341234", 0x0101, 12_000, "credit", 0x1A2B3C4D, now)
        r["approved"], r["approval_code"], r["reason"]  # True, "530217", "approved"
        c.ingest_clearing(0x1A2B3C4D, records)           # dicts from journal.decode
        c.block("4980123412341234", now)
        c.report("2026-11-01", "2026-11-30")             # rows per business day

One SQLite file (WAL, foreign keys), safe to share between `centre serve` and
the other `centre` commands: every write is one BEGIN IMMEDIATE transaction.
The file also holds the token-hash list key, so it is created mode 0600.
Schema, rules and thresholds: docs/centre.md.

The package, by seam: store.py (the Centre class: issuers, cards, terminals),
schema.py (tables, migrations, opening the file), values.py (days, tokens,
amounts), clearing.py (journal records into the clearing table), authorise.py
(the online rule and approval codes), alerts.py, report.py.
"""

from host_tools.centre.alerts import insert_alert
from host_tools.centre.authorise import RESPONSES
from host_tools.centre.clearing import OFFLINE_CODE, classify_outcome, clearing_row
from host_tools.centre.schema import MIGRATIONS, SCHEMA_V1
from host_tools.centre.store import Centre
from host_tools.centre.values import (
    MAX_AMOUNT,
    PRODUCTS,
    as_day,
    day_of,
    day_text,
    masked,
    product_name,
    token_bytes,
)

__all__ = ["Centre", "MIGRATIONS", "SCHEMA_V1", "RESPONSES", "OFFLINE_CODE", "MAX_AMOUNT",
           "PRODUCTS", "as_day", "day_of", "day_text", "masked", "product_name", "token_bytes",
           "classify_outcome", "clearing_row", "insert_alert"]
