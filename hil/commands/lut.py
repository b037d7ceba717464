"""`hil lut build|anchor|show|export`."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from hil.commands.common import (
    add_db_arg,
    add_inventory_arg,
    add_json_arg,
    add_substitute_arg,
    emit,
    measuring,
    progress_bar,
    progress_enabled,
)
from hil.errors import ConfigError
from hil.measure import SCHEDULES, MeasureSettings

# The CLI's default timed runs per workload. With 30 the same 50 networks at 224 ranked alike in two
# sessions only to tau 0.80-0.86 on our 2-core VM, with 100 to 0.90-0.94, and the 224 LUT build
# still took 182-184 s (docs/BENCHMARKS.md, runs G, H, J): 100 is the default a user gets.
CLI_MIN_REPEATS = 100


def add_space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", required=True, help="search space, e.g. proxyless-mobile")
    p.add_argument("--resolution", type=int, default=None, help="input resolution (space default: 224)")
    p.add_argument("--width", type=float, default=None, help="width multiplier (default 1.0)")
    p.add_argument("--bits", default=None, help="bitwidth range for quantized spaces, e.g. 2..8")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the device's)")


def space_from_args(args: argparse.Namespace) -> Any:
    from hil.lut_builder.spaces import make_space

    opts: dict[str, Any] = {"resolution": args.resolution, "width": args.width, "bits": args.bits}
    return make_space(args.space, **opts)


def add_protocol_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("measurement protocol (MEASUREMENT.md defaults)")
    d = MeasureSettings()
    g.add_argument("--min-repeats", type=int, default=CLI_MIN_REPEATS,
                   help=f"timed runs per workload at least (default {CLI_MIN_REPEATS}: see docs/MEASUREMENT.md)")
    g.add_argument("--min-time", type=float, default=d.min_time_s, metavar="S")
    g.add_argument("--min-run", type=float, default=d.min_run_ms, metavar="MS",
                   help="group a workload's calls until one timed run lasts MS milliseconds (0: every call timed "
                        f"alone; default {d.min_run_ms:g}; part of the LUT's fingerprint class)")
    g.add_argument("--warmup-runs", type=int, default=d.warmup_runs)
    g.add_argument("--warmup-time", type=float, default=d.warmup_s, metavar="S")
    g.add_argument("--cv-threshold", type=float, default=d.cv_threshold)
    g.add_argument("--max-attempts", type=int, default=d.max_attempts)
    g.add_argument("--clock", choices=["wall", "thread"], default=None,
                   help="wall: host clock; thread: CPU time of the one runtime thread, for shared hosts "
                        "(default: the device's, wall unless the inventory says otherwise)")
    g.add_argument("--schedule", choices=list(SCHEDULES), default=d.schedule,
                   help="interleaved: the workloads of a request are timed together in shuffled rounds, so "
                        "changes of the host's speed fall on all alike; sequential: one after the other")
    g.add_argument("--slice-time", type=float, default=d.slice_s, metavar="S",
                   help="interleaved: time and commit a request in slices of ~S seconds of timing (at "
                        "least 8 workloads a slice); a kill loses at most one slice")


def protocol_from_args(args: argparse.Namespace) -> MeasureSettings:
    for name in ("min_repeats", "warmup_runs", "max_attempts"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.min_time < 0 or args.warmup_time < 0 or not 0 < args.cv_threshold < 10:
        raise ConfigError("--min-time and --warmup-time must be >= 0 and --cv-threshold within (0, 10)")
    if not 0 <= args.min_run <= 1000:
        raise ConfigError(f"--min-run must be within 0..1000 milliseconds, got {args.min_run:g}")
    if not 0 <= args.slice_time <= 3600:
        raise ConfigError(f"--slice-time must be within 0..3600 seconds, got {args.slice_time:g}")
    return replace(
        MeasureSettings(), min_repeats=args.min_repeats, min_time_s=args.min_time, min_run_ms=args.min_run,
        warmup_runs=args.warmup_runs, warmup_s=args.warmup_time, cv_threshold=args.cv_threshold,
        max_attempts=args.max_attempts, schedule=args.schedule, slice_s=args.slice_time,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lut", help="build, show and export latency lookup tables")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = s.add_parser("build", help="measure the workloads of a search space on devices (resumable)")
    b.add_argument("--device", "-d", action="append", default=[], help="device (repeat for several)")
    b.add_argument("--all", action="store_true", help="every device of the inventory")
    add_space_args(b)
    add_protocol_args(b)
    b.add_argument("--seed", type=int, default=None, help="seed of the randomized measurement order")
    b.add_argument("--calibration-nets", type=int, default=10, metavar="N",
                   help="whole networks measured after the blocks to fit the per-network calibration "
                        "(0: none; see docs/LATENCY_MODEL.md)")
    add_inventory_arg(b)
    add_substitute_arg(b)
    add_db_arg(b)
    add_json_arg(b)
    b.set_defaults(func=_build)

    a = s.add_parser("anchor", help="re-anchor the LUT's calibration now: measure its held-out networks in one "
                                    "session and store a new calibration version (the newest is used)")
    a.add_argument("--device", "-d", required=True)
    add_space_args(a)
    add_protocol_args(a)
    a.add_argument("--seed", type=int, default=0, help="seed of the session's shuffled order")
    add_inventory_arg(a)
    add_substitute_arg(a)
    add_db_arg(a)
    add_json_arg(a)
    a.set_defaults(func=_anchor)

    for action, helptext in (("show", "print a LUT and its calibration versions"), ("export", "write a LUT to a file")):
        x = s.add_parser(action, help=helptext)
        x.add_argument("--device", "-d", required=True)
        add_space_args(x)
        add_db_arg(x)
        if action == "export":
            x.add_argument("--format", required=True, choices=["proxyless-yaml", "csv", "parquet"])
            x.add_argument("-o", "--output", required=True, metavar="FILE")
            x.add_argument("--raw", action="store_true",
                           help="proxyless-yaml: plain block medians, without the stored calibration folded in")
            x.set_defaults(func=_export)
        else:
            add_json_arg(x)
            x.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    from hil.devices.host.targets import check_fits, open_target, settings_for
    from hil.inventory import load_inventory
    from hil.lut_builder.build import build_devices
    from hil.store import open_store

    inv = load_inventory(args.inventory)
    names = list(inv.devices) if args.all else args.device
    if not names:
        raise ConfigError("name at least one --device (or --all)")
    for n in names:
        inv.device(n)  # unknown device: error before anything is opened
    if args.batch is not None and args.batch < 1:
        raise ConfigError("--batch must be at least 1")
    space = space_from_args(args)
    protocol = protocol_from_args(args)
    for n in names:
        check_fits(n, inv.device(n), space.workloads(), settings_for(inv.device(n), protocol, args.batch).batch)
    store = open_store(args.db)
    bar = _progress_bar(len(space.workloads()) * len(names), args.json)

    def progress(device: str, m: Any) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{device}: {m.key[:48]}", refresh=False)
            bar.update(1)

    try:
        results = build_devices(
            store,
            {n: (lambda n=n: open_target(inv, n, allow_substitute=args.allow_substitute)) for n in names},
            space,
            lambda n: settings_for(inv.device(n), protocol, args.batch, args.clock),
            progress,
            seed=args.seed,
            calibration_nets=args.calibration_nets,
            lease_timeout_for=lambda n: inv.device(n).lease_timeout_s,
        )
    finally:
        if bar is not None:
            bar.close()
        store.close()
    summary = _summary(results, space, store.path)
    lines = [
        f"{r['device']}: {r['status']}, {r['entries']}/{r['total']} entries "
        f"({r['measured']} measured, {r['reused']} reused, {r['failed']} failed), "
        f"median CV {_pct(r['median_cv'])}, {r['wall_s']:.1f} s"
        + (f"; errors: {r['errors'][-1]}" if r["errors"] else "")
        for r in summary["devices"]
    ]
    emit(summary, args.json, "\n".join(lines))
    return 0 if all(r["status"] == "ok" for r in summary["devices"]) else 3


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _summary(results: list[Any], space: Any, db: str) -> dict[str, Any]:
    devs = [r.to_json() for r in results]
    cvs = [r.median_cv for r in results if r.median_cv is not None]
    one = devs[0]
    return {
        "space": space.name,
        "options": space.options(),
        "db": db,
        # single-device fields at top level; per-device detail under "devices"
        "entries": one["entries"] if len(devs) == 1 else sum(d["entries"] for d in devs),
        "total": one["total"] if len(devs) == 1 else sum(d["total"] for d in devs),
        "measured": sum(d["measured"] for d in devs),
        "reused": sum(d["reused"] for d in devs),
        "failed": sum(d["failed"] for d in devs),
        "wall_s": max(d["wall_s"] for d in devs),
        "median_cv": sorted(cvs)[len(cvs) // 2] if cvs else None,
        "devices": devs,
    }


def _progress_bar(total: int, as_json: bool) -> Any:
    return progress_bar(total, "wl", "measuring") if progress_enabled(as_json) else None


def _load_lut(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any], dict[str, float], list[Any]]:
    from hil.latency import CALIBRATION_MODEL, lut_latencies, select_class
    from hil.store import open_store

    if args.batch is not None and args.batch < 1:
        raise ConfigError("--batch must be at least 1")
    space = space_from_args(args)
    keys = [w.key for w in space.workloads()]
    store = open_store(args.db, readonly=True)
    try:
        cls = select_class(store, args.device, keys, batch=args.batch)
        lut = store.lut(cls.fp_class)
        entries = {k: lut[k] for k in keys if k in lut}
        latencies = lut_latencies(store, cls.fp_class, entries)
        versions = store.model_versions(cls.fp_class, CALIBRATION_MODEL)
    finally:
        store.close()
    return space, cls, entries, latencies, versions


def _version_line(v: Any) -> str:
    import time

    p = v.params
    drift = (p.get("drift_reference") or {}).get("latency_ms")
    return (f"  calibration v{v.version} ({p.get('kind', 'build')}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(v.created_at))}): scale {p['scale']:.4f} "
            f"offset {p['offset_ms']:+.3f} ms"
            + (f" + {1e6 * p['per_weight_byte_ms']:.3f} ms/MB of weights" if p.get("per_weight_byte_ms") else "")
            + f" on {p['fitted_on']} networks"
            + (f", drift reference {drift:.4f} ms" if drift else "")
            + (f", load {p['state']['loadavg'][0]:.2f}" if isinstance((p.get("state") or {}).get("loadavg"), list)
               else ""))


def _rows(entries: dict[str, Any], latencies: dict[str, float]) -> list[dict[str, Any]]:
    """One row per entry: `latency_ms` is what LatencyModel reads (leveled where the build leveled),
    `median_ms` the accepted attempt's own median."""
    rows = []
    for key, m in entries.items():
        st = m.stats
        rows.append({
            "key": key, "latency_ms": latencies[key], "median_ms": st.median_ms, "n": st.n, "mean_ms": st.mean_ms,
            "std_ms": st.std_ms,
            "min_ms": st.min_ms, "p10_ms": st.p10_ms, "p90_ms": st.p90_ms, "iqr_ms": st.iqr_ms, "cv": st.cv,
            "noisy": m.noisy, "provenance": m.provenance, "attempt": m.attempt, **{
                f"metric_{k}": v for k, v in m.metrics.items() if isinstance(v, (int, float))},
        })
    return rows


def _show(args: argparse.Namespace) -> int:
    space, cls, entries, latencies, versions = _load_lut(args)
    rows = _rows(entries, latencies)
    total = len(space.workloads())
    out = {"device": args.device, "space": space.name, "options": space.options(), "fingerprint_class": cls.fp_class,
           "fingerprint": cls.fingerprint_class, "entries": len(rows), "total": total,
           "calibrations": [v.to_json() for v in versions], "rows": rows}
    text = [f"{args.device} / {space.name} {space.options()}: {len(rows)}/{total} entries, class {cls.fp_class}"]
    text += [_version_line(v) + ("  <- used" if v is versions[-1] else "") for v in versions] or [
        "  calibration: none (predictions are the plain block sum)"]
    text += [f"  {r['latency_ms']:10.4f} ms  cv {100 * r['cv']:5.2f}%{' NOISY' if r['noisy'] else ''}  {r['key']}"
             for r in sorted(rows, key=lambda r: r["key"])]
    emit(out, args.json, "\n".join(text))
    return 0


def _export(args: argparse.Namespace) -> int:
    from hil.lut_builder.export import export_lut

    space, cls, entries, latencies, versions = _load_lut(args)
    if not entries:
        raise ConfigError(f"the LUT of device {args.device!r} (class {cls.fp_class}) has no entry of {space.name} "
                          f"{space.options()}: build it first (hil lut build --device {args.device} "
                          f"--space {space.name} ...), or name the resolution, width and batch it was built at")
    meta = {"device": args.device, "space": space.name, "options": space.options(),
            "fingerprint_class": cls.fp_class, "fingerprint": cls.fingerprint_class}
    cal = {"version": versions[-1].version, "created_at": versions[-1].created_at, **versions[-1].params} \
        if versions else None
    written, note = export_lut(_rows(entries, latencies), meta, args.format, args.output, cal, fold=not args.raw)
    print(f"wrote {len(entries)} entries to {', '.join(written)}" + (f" ({note})" if note else ""))
    return 0


def _anchor(args: argparse.Namespace) -> int:
    from hil.calibration import anchor
    from hil.devices.host.targets import check_fits, settings_for
    from hil.inventory import load_inventory
    from hil.validate import lut_class

    inv = load_inventory(args.inventory)
    dev = inv.device(args.device)
    space = space_from_args(args)
    settings = settings_for(dev, protocol_from_args(args), args.batch, args.clock)
    check_fits(args.device, dev, space.workloads(), settings.batch)
    with measuring(args.db, inv, args.device, "net", "measuring calibration networks", args.json,
                   allow_substitute=args.allow_substitute) as m:
        cls = lut_class(m.store, m.target, settings)
        prev, new = anchor(m.store, m.target, space, settings, cls, args.seed, m.progress)
    p0, p1 = prev.params, new.params
    d0 = (p0.get("drift_reference") or {}).get("latency_ms")
    d1 = (p1.get("drift_reference") or {}).get("latency_ms")
    out = {"device": args.device, "space": space.name, "options": space.options(), "fingerprint_class": cls,
           "previous": prev.to_json(), "calibration": new.to_json(),
           "drift_vs_previous": d1 / d0 if d0 and d1 else None}
    text = (f"{args.device} / {space.name} {space.options()}: stored calibration v{new.version} (anchor)\n"
            f"  now      : scale {p1['scale']:.4f} offset {p1['offset_ms']:+.3f} ms on {p1['fitted_on']} networks\n"
            f"  previous : v{prev.version} ({p0.get('kind', 'build')}) scale {p0['scale']:.4f} "
            f"offset {p0['offset_ms']:+.3f} ms"
            + (f"\n  host drift reference: {d1:.4f} ms now vs {d0:.4f} ms then (x{d1 / d0:.3f})" if d0 and d1 else ""))
    emit(out, args.json, text)
    return 0
