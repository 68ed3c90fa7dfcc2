"""A real board's platform: flash already mounted at / by MicroPython's boot,
the host link on USB CDC (stdin/stdout), the board file flashed as board.py."""

import micropython


class BoardPlatform:
    name = "board"

    def __init__(self):
        import board  # boards/<name>.py, flashed as board.py

        self.board = board
        self.root = ""
        self.formatted = False
        # The block device under "/", for reads that bypass LittleFS (negative list)
        self.bdev = board.open_flash() if hasattr(board, "open_flash") else None
        # Frames are binary: a 0x03 byte must not raise KeyboardInterrupt.
        micropython.kbd_intr(-1)
        from drivers.stdio_port import StdioPort

        self.port = StdioPort(nonblocking=False)
        self.card_source = None
        if hasattr(board, "open_nfc"):
            from drivers.cardsource import RATES, FelicaCards

            self.card_source = FelicaCards(board.open_nfc(),
                                           rates=getattr(board, "NFC_FELICA_KBPS", RATES))
            # A PN532 that does not answer stops nothing: the host link and clearing go
            # on, status shows the reader fault, and it is tried again (cardsource.py).
            self.card_source.start()

    def shutdown(self):
        micropython.kbd_intr(3)


def start(argv):
    return BoardPlatform()
