"""Real boards as a fleet for `termctl demo --ports`, like demo.EmulatedFleet.

    with real_fleet(["/dev/ttyACM0", "/dev/ttyACM1"], ring, timeout=3) as links:
        ...                                  # keys pushed; one TerminalLink per board
"""

from __future__ import annotations

import contextlib

from host_tools.link import TerminalLink
from host_tools.provision import push_keys


@contextlib.contextmanager
def real_fleet(ports, ring, timeout: float, nfc: str | None = None):
    """nfc: an nfcpy device that presents each card to the boards' readers."""
    links = [TerminalLink.open(p, timeout=timeout, keyring=ring) for p in ports]
    for link in links:
        link.rf_device = nfc
    try:
        for link in links:
            push_keys(link, ring)
        yield links
    finally:
        for link in links:
            link.close()
