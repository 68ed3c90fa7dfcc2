"""termctl batch pull: pull, store and acknowledge the clearing batch."""

from __future__ import annotations

from host_tools.commands.common import json_output, print_json
from host_tools.errors import ToolError


def argparse_batch(sub):
    p = sub.add_parser("batch", help="pull and acknowledge the clearing batch",
                       description="Close the terminal's batch, read every record not yet "
                       "acknowledged, check the batch MAC, store the records (centre "
                       "database, CSV, JSONL), then acknowledge so the terminal frees them. "
                       "Safe to repeat: the centre de-duplicates by terminal, journal epoch "
                       "and sequence, and a batch with a record that differs from the "
                       "centre's copy is not acknowledged.")
    bsub = p.add_subparsers(dest="batch_cmd", required=True)
    pull = bsub.add_parser("pull", help="pull, store, acknowledge")
    pull.add_argument("--centre", default=None, metavar="DB",
                      help="centre database to fill (default: $TERMCTL_CENTRE)")
    pull.add_argument("--create", action="store_true",
                      help="start a new --centre database if the file does not exist")
    pull.add_argument("--csv", default=None, help="also write the records as CSV")
    pull.add_argument("--jsonl", default=None, help="also write the records as JSON lines")
    pull.add_argument("--no-ack", action="store_true",
                      help="do not acknowledge (the terminal keeps the records)")
    json_output(pull)


def do_batch(state, args) -> int:
    from host_tools import recordfile
    from host_tools.centre import Centre
    from host_tools.statefiles import DEFAULT_CENTRE, named, state_file
    from host_tools.transfer import ack_batch, pull_batch

    centre = None
    if named(args.centre, "TERMCTL_CENTRE"):
        path = state_file(args.centre, "TERMCTL_CENTRE", DEFAULT_CENTRE, "centre database",
                          create=args.create)
        centre = Centre.for_deployment(path, state.keyring())
    if not (centre is not None or args.csv or args.jsonl or args.no_ack):
        raise ToolError("batch pull needs somewhere to store the records before they are "
                        "acknowledged: --centre DB, --csv FILE or --jsonl FILE "
                        "(or --no-ack to only look)")
    t = state.link()
    batch = pull_batch(t)
    stored: dict = {}
    if centre is not None:
        inserted, dup = centre.ingest_clearing(batch.terminal_id, batch.records)
        stored["centre"] = {"new": inserted, "already_there": dup}
    if args.csv:
        recordfile.append_csv(args.csv, batch.records)
        stored["csv"] = args.csv
    if args.jsonl:
        recordfile.append_jsonl(args.jsonl, batch.records)
        stored["jsonl"] = args.jsonl
    if args.json:
        acked = None if args.no_ack else ack_batch(t, batch.batch_id)
        print_json({"batch_id": batch.batch_id, "terminal_id": "%08x" % batch.terminal_id,
                    "epoch": "%08x" % batch.epoch, "first_seq": batch.first_seq,
                    "count": batch.count,
                    "wire_bytes": batch.wire_bytes, "seconds": round(batch.seconds, 3),
                    "stored": stored, "acknowledged": acked})
        return 0
    where = [f"centre: {v['new']} new, {v['already_there']} already there" if k == "centre"
             else f"{k}: {v}" for k, v in stored.items()]
    print(f"batch {batch.batch_id}: {batch.count} records (seq {batch.first_seq}.."
          f"{batch.first_seq + batch.count - 1}, journal epoch {batch.epoch:08x}), "
          f"{batch.wire_bytes} bytes on the wire, "
          f"{batch.seconds:.2f} s; " + "; ".join(where or ["not stored"]))
    if not args.no_ack:
        print(f"acknowledged: {ack_batch(t, batch.batch_id)}")
    return 0
