"""Deployment keys on the terminal: the token-hash (list) key and the issuers'
card MAC keys, pushed by the host and kept in flash.

    KEYS_SET (signed)  list key id u16, wrapped list key (16), n u8,
                       n x (issuer u16, key version u8, wrapped key (16))

Keys never cross the link in clear: key i is XORed with the first 16 bytes
of HMAC(terminal key, "key-wrap" || request counter || i), a one-time pad
because the counter never repeats; the request MAC covers the result. The
set replaces the previous one as a whole (one atomic file write).

    load(service)                    # boot: keys.bin into service.keystore (terminal.keys)
    handle(service, CMD_KEYS_SET, args)

The terminal imports this module on demand (terminal.service) and drops it
after: the keys themselves live in terminal.keys.Keys.
"""

import struct
from binascii import crc32

from terminal import protocol, store

KEYS_FILE = "keys.bin"
_MAGIC = b"KS"


def pad(auth, counter, index):
    """Host and terminal: the 16-byte pad that wraps key `index` of a request."""
    return auth.hmac(b"key-wrap", struct.pack("<QB", counter, index))[:16]


def unwrap(auth, counter, index, wrapped):
    p = pad(auth, counter, index)
    return bytes(wrapped[i] ^ p[i] for i in range(16))


wrap = unwrap  # XOR with the same pad both ways


def encode(list_key_id, list_key, issuer_keys):
    """keys.bin: magic, list key id, list key, n, n x (issuer, version, key), crc."""
    body = _MAGIC + struct.pack("<HB", list_key_id, len(issuer_keys)) + bytes(list_key)
    for issuer, version, key in issuer_keys:
        body += struct.pack("<HB", issuer, version) + bytes(key)
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def decode(data):
    """(list key id, list key, [(issuer, version, key)]) or None if damaged."""
    if data is None or len(data) < 23 or data[:2] != _MAGIC:
        return None
    if crc32(data[:-4]) & 0xFFFFFFFF != struct.unpack("<I", data[-4:])[0]:
        return None
    key_id, n = struct.unpack_from("<HB", data, 2)
    if len(data) != 2 + 3 + 16 + 19 * n + 4:
        return None
    list_key = bytes(data[5:21])
    issuers = []
    for i in range(n):
        issuer, version = struct.unpack_from("<HB", data, 21 + 19 * i)
        issuers.append((issuer, version, bytes(data[24 + 19 * i : 40 + 19 * i])))
    return key_id, list_key, issuers


def load(svc):
    """Boot: install the keys in keys.bin (none if it is missing or damaged)."""
    got = decode(store.read(svc.root, KEYS_FILE))
    if got:
        svc.keystore.install(*got)


def handle(svc, cmd, args):
    """KEYS_SET: unwrap, store, install; the negative list is bound to the new key id."""
    if len(args) < 19:
        return protocol.ERR_MALFORMED, "keys set too short"
    key_id = args[0] | args[1] << 8
    n = args[18]
    if len(args) != 19 + 19 * n:
        return protocol.ERR_MALFORMED, "keys set: %d issuer keys do not match %d bytes" % (
            n, len(args))
    if n > svc.keystore.capacity:
        return protocol.ERR_INVALID, "%d issuer keys, the terminal holds %d" % (
            n, svc.keystore.capacity)
    auth, counter = svc.auth, svc.counter
    list_key = unwrap(auth, counter, 0, args[2:18])
    issuers = []
    for i in range(n):
        o = 19 + 19 * i
        issuers.append((args[o] | args[o + 1] << 8, args[o + 2],
                        unwrap(auth, counter, i + 1, args[o + 3 : o + 19])))
    store.write_atomic(svc.root, KEYS_FILE, encode(key_id, list_key, issuers))
    svc.keystore.install(key_id, list_key, issuers)
    svc.negative_list.set_key_id(key_id)
    return protocol.OK, "list key %d, %d issuer keys" % (key_id, n)
