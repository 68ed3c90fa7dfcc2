"""Small JSON state files of the host tools (keyring, wallet): read with a
clear error, replaced atomically so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from host_tools.errors import ToolError


def load(path: Path, table: str, what: str) -> dict:
    """The file's object, or {table: {}} if it does not exist yet."""
    if not path.exists():
        return {table: {}}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get(table), dict):
            raise ValueError(f"no '{table}' table")
    except (OSError, ValueError) as e:
        raise ToolError(f"{what} {path} is unreadable: {e}") from None
    return data


def save(path: Path, data: dict, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
