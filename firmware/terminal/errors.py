"""The firmware's one error tree. Decisions are return values, never
exceptions; these are for storage and hardware failing underneath.

    try:
        journal.append(...)
    except TerminalError as e:      # JournalError, NfcError, ...
        ...

The NFC errors live here, at the edge every NFC driver and the card code
share (nfcpy keeps one tree for chip and card the same way):
NfcError -> NfcTimeout (the card or the chip did not answer in time),
NfcProtocolError (a garbled or unexpected answer; FelicaStatusError when the
card's status flags report a refusal) and NfcBusError (the reader chip does
not answer on its host bus: reset it).
"""


class TerminalError(Exception):
    pass


class NfcError(TerminalError):
    """Root of the NFC errors: the tap failed, poll again."""


class NfcTimeout(NfcError):
    """The card (or the reader chip) did not answer in time: usually the card left."""


class NfcProtocolError(NfcError):
    """An answer arrived but was not the one the protocol allows."""


class NfcBusError(NfcError):
    """The reader chip does not answer on its host bus even after wake-up and resend."""


class FelicaStatusError(NfcProtocolError):
    """The card refused a command: status flag 1 (which element) and 2 (why).

    Status flag 2 codes (FeliCa card user's manual) are listed in docs/nfc.md,
    e.g. 0xA1 illegal number of services, 0xA2 illegal number of blocks,
    0xA5 access not allowed, 0xA8 illegal block number, 0xA9 write failed.
    """

    def __init__(self, command, status1, status2):
        super().__init__("FeliCa %s refused: status flags %02X %02X"
                         % (command, status1, status2))
        self.status1 = status1
        self.status2 = status2
