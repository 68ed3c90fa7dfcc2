"""The firmware's one error root. Decisions are return values, never
exceptions; these are for storage and hardware failing underneath.

    try:
        journal.append(...)
    except TerminalError as e:      # JournalError, NfcError, ...
        ...
"""


class TerminalError(Exception):
    pass
