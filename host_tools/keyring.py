"""The host's keyring: each terminal's key and the last request counter used.

    ring = Keyring.open()                 # $TERMCTL_KEYRING or ~/.config/termctl/keyring.json
    ring.add(0x1a2b3c4d, key32, note="emulator flash.img")
    key, counter = ring.get(0x1a2b3c4d)
    ring.set_counter(0x1a2b3c4d, counter + 1)

A JSON file, mode 0600, replaced atomically on every change.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from host_tools import jsonfile
from host_tools.errors import ToolError

# Bench issuers created with a new deployment: (id, name).
BENCH_ISSUERS = ((1, "iD Bank (credit)"), (2, "QP Card (credit)"), (3, "Prepaid Co (prepaid)"))


def default_path() -> Path:
    env = os.environ.get("TERMCTL_KEYRING")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "termctl" / "keyring.json"


class Keyring:
    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data

    @classmethod
    def open(cls, path: Path | str | None = None) -> Keyring:
        p = Path(path) if path else default_path()
        return cls(p, jsonfile.load(p, "terminals", "keyring"))

    def _save(self) -> None:
        jsonfile.save(self.path, self.data, mode=0o600)

    def add(self, terminal_id: int, key: bytes, note: str = "") -> None:
        self.data["terminals"]["%08x" % terminal_id] = {
            "key": key.hex(), "counter": 0, "note": note}
        self._save()

    def get(self, terminal_id: int) -> tuple[bytes, int]:
        entry = self.data["terminals"].get("%08x" % terminal_id)
        if entry is None:
            raise ToolError(
                f"no key for terminal {terminal_id:08x} in keyring {self.path} "
                "(emulated boards add theirs at first start; real boards at `make flash`)")
        return bytes.fromhex(entry["key"]), int(entry.get("counter", 0))

    def deployment(self) -> dict:
        """The deployment keys (token-hash list key, issuers' card MAC keys), made on
        first use: the host side of what `termctl keys push` installs on terminals."""
        dep = self.data.get("deployment")
        if dep is None:
            dep = {"list_key_id": 1, "list_key": secrets.token_bytes(16).hex(),
                   "issuers": {str(i): {"name": name, "version": 1,
                                        "key": secrets.token_bytes(16).hex()}
                               for i, name in BENCH_ISSUERS}}
            self.data["deployment"] = dep
            self._save()
        return dep

    def list_key(self) -> tuple[int, bytes]:
        dep = self.deployment()
        return int(dep["list_key_id"]), bytes.fromhex(dep["list_key"])

    def issuer_key(self, issuer: int) -> tuple[int, bytes]:
        entry = self.deployment()["issuers"].get(str(issuer))
        if entry is None:
            known = ", ".join(sorted(self.deployment()["issuers"]))
            raise ToolError(f"unknown issuer {issuer} (keyring {self.path} has {known})")
        return int(entry["version"]), bytes.fromhex(entry["key"])

    def set_counter(self, terminal_id: int, counter: int) -> None:
        if not 0 <= counter < 1 << 64:  # a u64 on the wire; never store what cannot be sent
            raise ToolError(f"terminal {terminal_id:08x}: counter {counter} is not a u64")
        self.data["terminals"]["%08x" % terminal_id]["counter"] = counter
        self._save()

