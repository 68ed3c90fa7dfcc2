"""The deployment keys in RAM, what the tap path reads: the token-hash (list) key
as a TokenHasher and the issuers' card MAC keys.

    keys = Keys(board.ISSUER_KEY_CAPACITY)
    keys.install(list_key_id, list_key16, [(issuer, key_version, key16), ...])
    keys.hasher.hash_into(token, out8)      # None until keys are installed
    keys.issuer_keys                        # card.IssuerKeys, shared with the engine

terminal.keystore (imported on demand) installs them from flash at boot and
replaces them when the host pushes a new set.
"""

from terminal.card import IssuerKeys
from terminal.tokenhash import TokenHasher


class Keys:
    def __init__(self, capacity=16):
        self.capacity = capacity
        self.issuer_keys = IssuerKeys(capacity)
        self.hasher = None
        self.list_key_id = 0
        self.count = 0

    def install(self, key_id, list_key, issuers):
        # In place: the decision engine holds this same table.
        keys = self.issuer_keys
        for i in range(keys.capacity):
            if keys._ids[i] >= 0:
                keys.remove(keys._ids[i] >> 8, keys._ids[i] & 0xFF)
        for issuer, version, key in issuers:
            keys.add(issuer, version, key)
        self.hasher = TokenHasher(list_key)
        self.list_key_id = key_id
        self.count = len(issuers)
