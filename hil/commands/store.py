"""`hil store copy`: merge one measurement store into another (SQLite and PostgreSQL, either way)."""

from __future__ import annotations

import argparse

from hil.commands.common import emit, progress_bar, progress_enabled
from hil.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="move measurements between stores")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = s.add_parser("copy", help="merge every record of one store into another, without duplicates, keeping who "
                                  "measured what where and when; rerun to resume, a second run adds nothing")
    c.add_argument("--from", dest="source", required=True, metavar="URL",
                   help="source store: FILE, sqlite:///FILE or postgresql://user@host:port/db (only read)")
    c.add_argument("--to", dest="dest", required=True, metavar="URL",
                   help="destination store (created or migrated if needed)")
    c.add_argument("--json", action="store_true", help="print only JSON on stdout")
    c.set_defaults(func=_copy)


def _copy(args: argparse.Namespace) -> int:
    from hil.store import copy_records, open_store
    from hil.store_pg import redact

    if args.source == args.dest:
        raise ConfigError(f"--from and --to name the same store ({redact(args.source)})")
    src = open_store(args.source, readonly=True)
    try:
        dst = open_store(args.dest)
        try:
            bar = progress_bar(None, "rec", "copying") if progress_enabled(args.json) else None
            try:
                res = copy_records(src, dst, progress=bar.update if bar else None)
            finally:
                if bar:
                    bar.close()
            out = {"from": src.path, "to": dst.path, **res.to_json()}
        finally:
            dst.close()
    finally:
        src.close()
    emit(out, args.json, f"{out['from']} -> {out['to']}: {res.records_added} records added, {res.records_present} "
                         f"already there; {res.models_added} model versions added, {res.models_present} already "
                         f"there ({res.classes} fingerprint classes)")
    return 0
