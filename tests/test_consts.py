"""Private const()s that repeat another module's public name.

The compiler folds a const() only when it is defined in the module that uses
it, so tap-path modules repeat the indices and codes they read from
terminal.params, terminal.issuers, terminal.card, terminal.tap,
terminal.decision and the negative list's on-demand modules (terminal.nl_format,
terminal.nl_dir, drivers.lfsfile) under a private name. Under CPython those
private names are module attributes: pin every one to the name it repeats."""

import importlib
import pkgutil
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"

# private prefix -> (module, public prefix)
SOURCES = {"_P_": ("params", "P_"), "_I_": ("issuers", "I_"), "_CARD_": ("card", "CARD_"),
           "_PRODUCT_": ("card", "PRODUCT_"), "_S_": ("nl_format", "S_"),
           "_G_": ("nl_format", "G_")}
SINGLE = {"_APPROVED_OFFLINE": ("tap", "APPROVED_OFFLINE"),
          "_APPROVED_ONLINE": ("tap", "APPROVED_ONLINE"),
          "_NO_KEYS": ("decision", "R_CARD_DATA_BAD"),
          "_REC_LEN": ("nl_format", "REC_LEN"), "_NEWEST": ("nl_format", "NEWEST"),
          "_ST": ("nl_format", "ST"), "_PD_LEN": ("nl_dir", "PD_LEN"),
          "_SPILLED": ("nl_dir", "SPILLED"), "_VIA_FILE": ("nl_dir", "VIA_FILE"),
          "_RBUF_RECS": ("nl_dir", "RBUF_RECS"), "_PTR_MAX": ("drivers.lfsfile", "PTR_MAX")}


def _module(name):
    return importlib.import_module(name if "." in name else "terminal." + name)


def _modules():
    return sorted(m.name for m in pkgutil.iter_modules([str(FIRMWARE / "terminal")]))


def _pins():
    out = []
    for name in _modules():
        mod = importlib.import_module("terminal." + name)
        for attr, value in vars(mod).items():
            if not isinstance(value, int):
                continue
            for prefix, (src, public) in SOURCES.items():
                if attr.startswith(prefix) and name != src:
                    out.append((name, attr, value, src, public + attr[len(prefix):]))
            if attr in SINGLE and name != SINGLE[attr][0]:
                out.append((name, attr, value) + SINGLE[attr])
    return out


PINS = _pins()


def test_the_repeated_consts_are_found():
    modules = {m for m, *_ in PINS}
    assert {"decision", "tap", "sale", "counters", "service", "negative_list"} <= modules
    assert len(PINS) > 30


@pytest.mark.parametrize("module,attr,value,src,public", PINS,
                         ids=[f"{m}.{a}" for m, a, *_ in PINS])
def test_repeated_const_matches_its_source(module, attr, value, src, public):
    assert value == getattr(_module(src), public)
