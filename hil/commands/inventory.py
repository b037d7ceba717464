"""`hil inventory check|schema`."""

from __future__ import annotations

import argparse
import sys

from hil.commands.common import add_inventory_arg, add_json_arg, emit
from hil.errors import ConfigError
from hil.inventory import inventory_schema, load_inventory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inventory", help="validate and list the device inventory")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = s.add_parser("check", help="validate inventory.yaml and list its devices")
    add_inventory_arg(c)
    add_json_arg(c)
    c.set_defaults(func=_check)
    sc = s.add_parser("schema", help="print the inventory's JSON Schema")
    sc.set_defaults(func=lambda a: sys.stdout.write(inventory_schema() + "\n") and 0)


def _check(args: argparse.Namespace) -> int:
    from hil.devices.host.targets import check_device_config  # the rules opening a device applies

    inv = load_inventory(args.inventory)
    for name, d in inv.devices.items():
        try:
            check_device_config(name, d)
        except ConfigError as e:
            raise ConfigError(f"{args.inventory}: {e}") from None
    rows = []
    for name, d in inv.devices.items():
        where = f"ssh {d.ssh.user}@{d.ssh.host}:{d.ssh.port}" if d.ssh else "this host"
        rows.append({"device": name, "backend": d.backend, "where": where,
                     "accelerator": d.rtl.accelerator if d.rtl else None, "substitute": d.substitute})
    lines = [f"{args.inventory}: {len(rows)} device(s), valid"]
    for r in rows:
        extra = f" accelerator={r['accelerator']}" if r["accelerator"] else ""
        extra += f" substitute={r['substitute']}" if r["substitute"] else ""
        lines.append(f"  {r['device']:<20} {r['backend']:<11} {r['where']}{extra}")
    emit({"inventory": args.inventory, "devices": rows}, args.json, "\n".join(lines))
    return 0
