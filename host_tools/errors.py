"""The host tools' errors: main() prints a ToolError as `termctl: message`, exit 1
(and an OSError as `termctl: FILE: reason`).

    ToolError                 anything the user can fix: bad input, a missing file, ...
      LinkError               the terminal's port: cannot open, no answer, not our firmware
        Refused               the terminal answered with an error status (.status)

    raise ToolError(f"unknown parameter {name!r}" + did_you_mean(name, names))
"""

from __future__ import annotations

import difflib


class ToolError(Exception):
    pass


class LinkError(ToolError):
    """The link to the terminal failed: the port, the line, or what answered."""


class Refused(LinkError):
    """The terminal answered a request with an error status (terminal.protocol ERR_*)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def did_you_mean(word: str, choices) -> str:
    """'; did you mean floor_limit?' for the nearest names, or '' if none is near."""
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(near)}?" if near else ""
