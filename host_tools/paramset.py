"""A `params set` checked against what the terminal holds before it is signed and
sent, and what it changed afterwards.

    changes = parse(["floor_limit=9000", "issuer.3.floor_limit=0"])
    check(changes, link.params(), deployment_issuers)   # ToolError naming the nearest names
    for line in changed(before, link.params(), changes): print(line)

The terminal checks ranges and consistency itself (one bad value and nothing
changes); the host adds what only it can say: the name you probably meant, and
that an issuer outside the deployment has no cards a terminal could read.
"""

from __future__ import annotations

from host_tools.errors import ToolError, did_you_mean
from terminal import issuers as issuer_table

INHERIT = "inherit"


def parse(assignments: list[str]) -> dict[str, int]:
    changes = {}
    for a in assignments:
        k, eq, v = a.partition("=")
        if not eq or not k:
            raise ToolError(f"expected KEY=VALUE, got {a!r}")
        try:
            changes[k] = int(v.replace("_", "").replace(",", ""))
        except ValueError:
            raise ToolError(f"{k}: {v!r} is not an integer") from None
    return changes


def check(changes: dict[str, int], current: dict[str, int], issuers) -> None:
    """current: the terminal's params (PARAMS_GET); issuers: the deployment's ids."""
    names = [k for k in current if k != "version" and not k.startswith("issuer.")]
    for key in changes:
        if not key.startswith("issuer."):
            if key not in names:
                raise ToolError(f"unknown parameter {key!r}" + did_you_mean(key, names)
                                + " (termctl params show lists them)")
            continue
        parts = key.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise ToolError(f"{key!r}: an issuer override is issuer.ID.NAME, "
                            "e.g. issuer.3.floor_limit")
        issuer, field = int(parts[1]), parts[2]
        if field not in issuer_table.NAMES:
            raise ToolError(f"{key!r}: issuers have no parameter {field!r}"
                            + did_you_mean(field, issuer_table.NAMES))
        known = sorted(int(i) for i in issuers)
        if issuer not in known:
            raise ToolError(f"{key!r}: issuer {issuer} is not in this deployment (issuers "
                            f"{', '.join(map(str, known))} in the keyring): no card of it "
                            "could be read, so an override would never apply")


def changed(before: dict[str, int], after: dict[str, int], changes: dict[str, int]):
    """'floor_limit: 10000 -> 9000' for each key asked for (overrides absent = inherit)."""
    for key in changes:
        old = before.get(key, INHERIT)
        new = after.get(key, INHERIT)
        yield f"{key}: {old} -> {new}" + ("  (unchanged)" if old == new else "")
