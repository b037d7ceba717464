"""`hil farm check|trust`: the health of the device farm, and trusting a device's host key.

`check` visits every device at once (one thread each) and reports, per device: reachable, the
request round-trip time through SSH and the agent, the target's Python, its runtimes, the
fingerprint class measurements would get, who holds the lease, and the substitute. It exits non-zero
when any device is unreachable or cannot run its backend.

`trust` shows the host key a device (or its jump host) offers and records it in the device's
known_hosts file only after that: on a terminal when you answer yes, otherwise with `--yes` or
when it matches `--expect SHA256:...`. A changed key is replaced only with `--replace`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from hil.commands.common import add_inventory_arg, add_json_arg, add_substitute_arg, emit
from hil.errors import ConfigError, DeviceError
from hil.inventory import SshConfig, load_inventory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("farm", help="check the device farm; trust a device's SSH host key")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = s.add_parser("check", help="reach every device: round trip, Python, runtimes, fingerprint, lease")
    c.add_argument("devices", nargs="*", metavar="DEVICE", help="devices to check (default: all)")
    add_inventory_arg(c)
    add_substitute_arg(c)
    add_json_arg(c)
    c.set_defaults(func=_check)

    t = s.add_parser("trust", help="show a device's SSH host key and record it in known_hosts")
    t.add_argument("device", metavar="DEVICE")
    t.add_argument("--expect", metavar="SHA256:...", help="record the key only if it has this fingerprint")
    t.add_argument("--yes", "-y", action="store_true", help="record the key shown without asking")
    t.add_argument("--replace", action="store_true", help="replace a known key that has CHANGED")
    add_inventory_arg(t)
    t.set_defaults(func=_trust)


# -- check ---------------------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> str:
    from hil.lease import describe_holder

    head = ["DEVICE", "REACHABLE", "RTT", "PYTHON", "RUNTIMES", "FINGERPRINT", "LEASE", "SUBSTITUTE"]
    body = []
    for r in rows:
        reach = ("yes" if r["backend_ok"] else "yes, NO BOARD" if r["absent"] else "yes, backend fails") \
            if r["reachable"] else "NO"
        sub = r["substitute"] or "-"
        if r["substitution"]:
            sub = f"{r['substituted_by']} stands in" if r["substituted_by"] else f"{sub} (not allowed)"
        body.append([
            r["device"], reach, f"{r['rtt_ms']:.2f} ms" if r["rtt_ms"] is not None else "-",
            (r["python"] or "-").split(" ")[0], r["runtimes"] or "-", r["fingerprint"] or "-",
            "-" if not r["reachable"] else describe_holder(r["lease_holder"]) if r["lease_holder"] else "free",
            sub,
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
             for line in [head, *body]]
    lines += [f"{r['device']}: {r['error']}" for r in rows if r["error"]]
    lines += [f"{r['device']}: substitute {r['substitution']}" for r in rows if r["substitution"]]
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    inv = load_inventory(args.inventory)
    names = args.devices or list(inv.devices)
    for n in names:
        inv.device(n)  # an unknown name is an error before anything is contacted
    rows: dict[str, dict[str, Any]] = {}

    def visit(n: str) -> None:
        from hil.devices.host.health import check_device

        rows[n] = check_device(inv, n, args.allow_substitute)

    threads = [threading.Thread(target=visit, args=(n,), name=f"check-{n}", daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ordered = [rows[n] for n in names]
    # an absent device whose substitute may stand in is healthy: a build would measure (on the substitute)
    healthy = all((r["reachable"] and r["backend_ok"]) or r["substituted_by"] for r in ordered)
    emit({"inventory": args.inventory, "healthy": healthy, "devices": ordered}, args.json, _table(ordered))
    return 0 if healthy else DeviceError.exit_code


# -- trust ---------------------------------------------------------------------------------------


def _confirm(args: argparse.Namespace, fingerprint: str) -> bool:
    if args.expect:
        if args.expect.strip() != fingerprint:
            raise DeviceError(args.device, f"the host offers {fingerprint}, not the expected {args.expect}; "
                              "nothing recorded")
        return True
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError("not recorded: confirm the key with --yes, or pin it with --expect SHA256:...")
    answer = input("Trust this key? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _record(args: argparse.Namespace, label: str, entry: str, key: Any, known_hosts: Path, old: str = "") -> bool:
    from hil.devices.host.ssh_transport import describe_key, forget_host_key, key_fingerprint, record_host_key

    print(f"device {args.device!r}: {label} {entry} offers {describe_key(key)}", file=sys.stderr)
    if old:
        print(f"  known_hosts {known_hosts} has {old} for it: the key CHANGED", file=sys.stderr)
    if not _confirm(args, key_fingerprint(key)):
        print("not recorded", file=sys.stderr)
        return False
    if old:
        forget_host_key(known_hosts, entry)
    record_host_key(known_hosts, entry, key)
    print(f"recorded {entry} in {known_hosts}", file=sys.stderr)
    return True


def _trust(args: argparse.Namespace) -> int:
    from hil.devices.host.ssh_transport import (
        HostKeyChangedError,
        HostKeyUnknownError,
        describe_key,
        scan_host_key,
    )

    inv = load_inventory(args.inventory)
    dev = inv.device(args.device)
    if dev.ssh is None:
        raise ConfigError(f"device {args.device!r} is not reached over SSH (no 'ssh:' section): nothing to trust")
    cfg: SshConfig = dev.ssh
    for _ in range(8):  # each pass trusts at most one more host along the jump chain
        try:
            scanned = scan_host_key(args.device, cfg)
        except HostKeyUnknownError as e:  # a jump host in front of the device
            if not _record(args, "jump host", e.entry, e.offered, e.known_hosts):
                return 1
            continue
        except HostKeyChangedError as e:  # a jump host in front of the device
            if not args.replace:
                raise
            if not _record(args, "jump host", e.entry, e.offered, e.known_hosts, old=", ".join(e.known)):
                return 1
            continue
        if scanned.status == "known":
            print(f"device {args.device!r}: {scanned.entry} is already trusted ({describe_key(scanned.key)})",
                  file=sys.stderr)
            return 0
        if scanned.status == "changed" and not args.replace:
            raise DeviceError(
                args.device, f"HOST KEY CHANGED for {scanned.entry}: it offers {describe_key(scanned.key)}, "
                f"{scanned.known_hosts} has {', '.join(scanned.known)}; if you know why, rerun with --replace",
            )
        old = ", ".join(scanned.known) if scanned.status == "changed" else ""
        return 0 if _record(args, "host", scanned.entry, scanned.key, scanned.known_hosts, old=old) else 1
    raise DeviceError(args.device, "jump chain too long to trust")

