"""What every command shares: the global options and the terminal link.

    def do_status(state, args):
        print(state.link().status())     # opened on first use, closed by main()
"""

from __future__ import annotations

from host_tools.keyring import Keyring


class State:
    def __init__(self, args):
        self.port = args.port
        self.timeout = args.timeout
        self.keyring_path = args.keyring
        self._link = None

    def keyring(self) -> Keyring:
        return Keyring.open(self.keyring_path)

    def link(self):
        """The terminal on --port (else $TERMCTL_PORT, else the one emulated board
        running here), opened once; main() closes it."""
        if self._link is None:
            from host_tools.link import TerminalLink

            if not self.port:
                from host_tools.ports import default_port

                self.port = default_port()
            ring = Keyring.open(self.keyring_path) if self.keyring_path else None
            self._link = TerminalLink.open(self.port, timeout=self.timeout, keyring=ring)
        return self._link

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
