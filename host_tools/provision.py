"""Install the deployment keys on a terminal (`termctl keys push`).

    push_keys(link, ring)   # list key + every issuer's card MAC key, wrapped

Each key crosses the link XORed with a pad derived from the terminal key and
the request counter (terminal.keystore), so a capture of the serial line
shows no key, and the request MAC covers the whole set.
"""

from __future__ import annotations

import struct

from host_tools.errors import ToolError
from terminal import keystore, protocol


def push_keys(link, ring) -> str:
    key_id, list_key = ring.list_key()
    issuers = sorted((int(i), int(e["version"]), bytes.fromhex(e["key"]))
                     for i, e in ring.deployment()["issuers"].items())
    auth = link.authenticator()
    # call_signed uses link.next_counter(): the pads must be made for that same counter
    counter = link.next_counter()
    args = struct.pack("<H", key_id) + keystore.wrap(auth, counter, 0, list_key)
    args += bytes([len(issuers)])
    for i, (issuer, version, key) in enumerate(issuers):
        args += struct.pack("<HB", issuer, version) + keystore.wrap(auth, counter, i + 1, key)
    reply = link.call_signed(protocol.CMD_KEYS_SET, args).decode()
    if int(link.identity()["auth_counter"]) != counter:
        raise ToolError("internal: key pads made for the wrong counter")
    return reply
