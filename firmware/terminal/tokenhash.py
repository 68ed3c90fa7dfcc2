"""Keyed hash of a token (card) number: the key of the negative list, the
terminal's per-card counters and the journal.

    h = TokenHasher(list_key16)
    out = bytearray(KEY_LEN)
    h.hash_into(b"4980123412341234", out)   # no allocation once constructed

AES-128 of the token number zero-padded to 16 bytes, truncated to KEY_LEN
bytes. AES is a keyed permutation, so without the key a dumped list does not
give token numbers back (a plain hash of a 16-digit number can be brute-forced
in hours). With 64-bit keys the chance that a lookup of an unlisted card hits a
list of n entries by collision is n / 2**64 (5.4e-14 at 1,000,000 entries).
"""

from terminal.compat import Aes, const

KEY_LEN = const(8)
TOKEN_MAX = const(16)


class TokenHasher:
    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("token hash key must be 16 bytes")
        self._aes = Aes(key)
        self._block = bytearray(16)
        self._out = bytearray(16)

    def hash_into(self, token, out):
        """Write the KEY_LEN-byte keyed hash of `token` (bytes, <= 16) into out."""
        n = len(token)
        if n > TOKEN_MAX:
            raise ValueError("token number longer than 16 bytes")
        block = self._block
        for i in range(16):
            block[i] = token[i] if i < n else 0
        self._aes.encrypt(block, self._out)
        o = self._out
        for i in range(KEY_LEN):
            out[i] = o[i]

    def hash(self, token):
        """Convenience for host code and tests: returns new bytes."""
        out = bytearray(KEY_LEN)
        self.hash_into(token, out)
        return bytes(out)
