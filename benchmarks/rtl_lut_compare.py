"""Entry-by-entry comparison of RTL LUT tables: a speed change of the simulation must not move a cycle.

    # 1. before the change: build the tables, dump them
    hil lut build -d bismo-edge -d bismo-cloud -d bitfusion-spatial --space mobilenet-v1-layers \
        --bits 2..8 --db before.db
    .venv/bin/python benchmarks/rtl_lut_compare.py dump before.db docs/img/rtl-lut-before.json
    # 2. after it: the same build into another store, then
    .venv/bin/python benchmarks/rtl_lut_compare.py dump after.db out/rtl-lut-after.json
    .venv/bin/python benchmarks/rtl_lut_compare.py compare docs/img/rtl-lut-before.json out/rtl-lut-after.json

A dump holds, per rtl-sim device and LUT key, the cycles and every counter the RTL reported. `compare`
checks that both have the same keys and that cycles and all counters are identical; it prints a
summary and exits 1 on any difference. Records are taken from the store whatever their fingerprint
class (an RTL change makes a new class), one class per device.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any


def dump(db: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{device: {key: {"cycles": ..., "counters": {...}}}} of the ok, non-drift records in `db`."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT m.device, m.class, m.key, m.metrics FROM measurements m JOIN fingerprints f ON f.class = m.class "
        "WHERE m.ok = 1 AND m.key NOT LIKE 'drift:%' AND m.provenance = 'simulated' ORDER BY m.id"
    ).fetchall()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    classes: dict[str, set[str]] = {}
    for device, cls, key, metrics in rows:
        m = json.loads(metrics)
        classes.setdefault(device, set()).add(cls)
        out.setdefault(device, {})[key] = {"cycles": m["cycles"], "counters": m.get("extra", {}).get("counters", {})}
    several = {d: sorted(c) for d, c in classes.items() if len(c) > 1}
    if several:
        raise SystemExit(f"{db}: devices with several LUT classes, dump one build per store: {several}")
    return {d: dict(sorted(v.items())) for d, v in sorted(out.items())}


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per device: entries compared, identical cycles, identical counters, and the first differences."""
    report: dict[str, Any] = {}
    for device in sorted(set(before) | set(after)):
        b, a = before.get(device, {}), after.get(device, {})
        common = sorted(set(b) & set(a))
        cyc_diff = [k for k in common if b[k]["cycles"] != a[k]["cycles"]]
        cnt_diff = [k for k in common if b[k]["counters"] != a[k]["counters"]]
        report[device] = {
            "before": len(b), "after": len(a), "compared": len(common),
            "only_before": len(set(b) - set(a)), "only_after": len(set(a) - set(b)),
            "cycles_identical": len(common) - len(cyc_diff), "counters_identical": len(common) - len(cnt_diff),
            "first_differences": [{"key": k, "before": b[k]["cycles"], "after": a[k]["cycles"]} for k in cyc_diff[:5]],
        }
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="write a store's RTL LUT entries to JSON")
    d.add_argument("db", type=Path)
    d.add_argument("out", type=Path)
    c = sub.add_parser("compare", help="compare two dumps entry by entry")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "dump":
        table = dump(args.db)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # one line per entry: a readable diff, a compact file
        lines = [f"{json.dumps(dev)}: {{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}"
                                                        for k, v in entries.items()) + "\n}"
                 for dev, entries in table.items()]
        args.out.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        print(json.dumps({dev: len(v) for dev, v in table.items()}))
        return 0
    report = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    print(json.dumps(report, indent=2))
    ok = all(r["only_before"] == r["only_after"] == 0 and r["cycles_identical"] == r["counters_identical"]
             == r["compared"] for r in report.values())
    total = sum(r["compared"] for r in report.values())
    print(f"{total} entries compared: {'all identical' if ok else 'DIFFERENCES'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
