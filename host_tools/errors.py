"""The host tools' errors: main() prints a ToolError as `termctl: message`, exit 1.

    raise ToolError(f"unknown parameter {name!r}" + did_you_mean(name, names))
"""

from __future__ import annotations

import difflib


class ToolError(Exception):
    pass


def did_you_mean(word: str, choices) -> str:
    """'; did you mean floor_limit?' for the nearest names, or '' if none is near."""
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(near)}?" if near else ""
