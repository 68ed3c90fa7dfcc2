"""The host's state files a command names: the centre database and the wallet.

    path = state_file(args.centre, "TERMCTL_CENTRE", DEFAULT_CENTRE, "centre database",
                      create=args.create, may_start=True)

A typo must not start a new, empty centre or wallet: a file named by an option or
by its environment variable must exist unless the command is given --create.
Only the default under .termctl/ is started without asking, by the commands
that fill it (`centre add-card`, `sale --token`, `card present`), and they say so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from host_tools.errors import ToolError

DEFAULT_CENTRE = Path(".termctl") / "centre.db"
DEFAULT_WALLET = Path(".termctl") / "wallet.json"


def named(given: str | None, env: str) -> str | None:
    """The file an option or its environment variable names, if any."""
    return given or os.environ.get(env) or None


def state_file(given: str | None, env: str, default: Path, what: str, *, create: bool,
               may_start: bool = False) -> Path:
    """The path to open. may_start: this command may start the default file."""
    name = named(given, env)
    path = Path(name) if name else default
    if path.is_dir():
        raise ToolError(f"{path} is a directory, not a {what}")
    if path.exists():
        return path
    if create or (name is None and may_start):
        print(f"termctl: new {what} {path}", file=sys.stderr)
        return path
    how = f"named by ${env}" if given is None and name else "given"
    if name is None:
        raise ToolError(f"no {what} yet ({path}): start one with --create")
    raise ToolError(f"no {what} {path} ({how}): check the name, or give --create to "
                    "start a new one")
