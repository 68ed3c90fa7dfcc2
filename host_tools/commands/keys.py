"""termctl keys push: install the deployment keys on a terminal."""

from __future__ import annotations


def argparse_keys(sub):
    p = sub.add_parser("keys", help="install the deployment keys on a terminal",
                       description="Push the token-hash (list) key and the issuers' card MAC "
                       "keys from the keyring to the terminal, wrapped and signed. The keys "
                       "are made on first use and kept in the keyring.")
    ksub = p.add_subparsers(dest="keys_cmd", required=True)
    ksub.add_parser("push", help="install the keys")


def do_keys(state, args):
    from host_tools.provision import push_keys

    t = state.link()
    print(f"keys installed: {push_keys(t, t.keyring)}")
    return 0
