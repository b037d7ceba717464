"""`hil validate`: predicted vs measured latency of sampled networks on one device."""

from __future__ import annotations

import argparse

from hil.commands.common import (
    add_db_arg,
    add_inventory_arg,
    add_json_arg,
    add_substitute_arg,
    emit,
    measuring,
)
from hil.commands.lut import add_protocol_args, add_space_args, protocol_from_args, space_from_args
from hil.errors import ConfigError
from hil.validate import DEFAULT_PASSES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="compare LUT predictions with end-to-end measurements")
    p.add_argument("--device", "-d", required=True)
    add_space_args(p)
    p.add_argument("--samples", type=int, default=50, help="networks to sample (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--passes", type=int, default=DEFAULT_PASSES,
                   help=f"times each network is measured, each pass in its own sessions; the median is scored "
                        f"(default {DEFAULT_PASSES}; at least 2 on a measured device)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="write the predicted-vs-measured scatter")
    p.add_argument("--against", default=None, metavar="DEVICE",
                   help="measure nothing: score DEVICE's LUT (e.g. the simulated accelerator) entry by entry "
                        "against --device's (e.g. the board), both of the same accelerator, from the store")
    add_protocol_args(p)
    add_inventory_arg(p)
    add_substitute_arg(p)
    add_db_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from hil.devices.host.targets import check_fits, settings_for
    from hil.inventory import load_inventory
    from hil.validate import plot, validate

    if args.against is not None:
        return _against(args)
    if args.samples < 2:
        raise ConfigError("--samples must be at least 2")
    inv = load_inventory(args.inventory)
    dev = inv.device(args.device)
    space = space_from_args(args)
    settings = settings_for(dev, protocol_from_args(args), args.batch, args.clock)
    check_fits(args.device, dev, space.workloads(), settings.batch)
    with measuring(args.db, inv, args.device, "net", "measuring networks", args.json,
                   allow_substitute=args.allow_substitute) as m:
        report = validate(m.store, m.target, space, settings, args.samples, args.seed, m.progress, args.passes)
    out = report.to_json()
    if args.plot:
        plot(report, args.plot)
        out["plot"] = args.plot
    c, r, rep, a, sp = report.stored, report.raw_sum, report.repeatability, report.reanchored, report.speedup
    u = report.unleveled
    cal = report.calibration
    cal_line = ("none stored (identity)" if not cal["version"] else
                f"version {cal['version']} ({cal['kind']}, {_when(cal['created_at'])}): scale {cal['scale']:.4f} "
                f"offset {cal['offset_ms']:.3f} ms"
                + (f", {1e6 * cal['per_weight_byte_ms']:.3f} ms per MB of weights" if cal.get("per_weight_byte_ms")
                   else "")
                + f", fitted on {cal['fitted_on']} held-out networks")
    dr = report.drift_reference
    drift_line = ""
    if dr and dr.get("calibration_ms"):
        drift_line = (f"\n  host drift reference: {_ms(dr.get('build_ms'))} at build, {_ms(dr['calibration_ms'])} "
                      f"at the calibration used, {', '.join(_ms(x) for x in dr['validation_ms'])} now "
                      f"(x{dr['validation_vs_calibration']:.3f})")
    text = (
        f"{args.device} / {space.name} {space.options()}: {c.n} networks\n"
        f"  stored model : ±10% {100 * c.within_10pct:5.1f}%  ±5% {100 * c.within_5pct:5.1f}%  "
        f"tau {c.kendall_tau:.3f}  MAPE {c.mape:.2f}%  RMSPE {c.rmspe:.2f}%  RMSE {c.rmse_ms:.3f} ms  "
        f"bias {c.mean_bias:+.2f}%  (what an optimizer gets: the LUT + stored calibration)\n"
        + (f"    (measured: each network at the validation's typical host speed, its session's level fitted "
           f"from every network it timed; as timed: ±10% {100 * u.within_10pct:5.1f}%  "
           f"±5% {100 * u.within_5pct:5.1f}%  "
           f"tau {u.kendall_tau:.3f}  MAPE {u.mape:.2f}%)\n" if u and rep["n"] else "")
        + f"  plain sum    : ±10% {100 * r.within_10pct:5.1f}%  ±5% {100 * r.within_5pct:5.1f}%  "
        f"tau {r.kendall_tau:.3f}  MAPE {r.mape:.2f}%  bias {r.mean_bias:+.2f}%\n"
        f"  speedup over the reference network (stored model): ±10% {100 * sp['within_10pct']:5.1f}%  "
        f"±5% {100 * sp['within_5pct']:5.1f}%  median error {sp['median_abs_err']:.2f}%  "
        f"p90 {sp['p90_abs_err']:.2f}%  tau {sp['kendall_tau']:.3f}\n"
        + (f"  re-anchored in this session (calibration refitted on networks timed with these; no optimizer "
           f"has it): ±10% {100 * a.within_10pct:5.1f}%  MAPE {a.mape:.2f}%  bias {a.mean_bias:+.2f}%\n" if a else "")
        + (f"  repeatability (same networks, {rep['passes']} passes, pairwise): MAPE {rep['mape']:.2f}%  within ±10% "
           f"{100 * rep['within_10pct']:.1f}%  repeatability tau {rep['kendall_tau']:.3f} "
           f"(as timed {rep['kendall_tau_unleveled']:.3f})\n" if rep["n"] else "")
        + f"  calibration: {cal_line}"
        + drift_line
        + (f"\n  plot: {args.plot}" if args.plot else "")
    )
    emit(out, args.json, text)
    return 0


def _when(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f} ms"


def _against(args: argparse.Namespace) -> int:
    from hil.inventory import load_inventory
    from hil.store import open_store
    from hil.validate import compare_luts

    inv = load_inventory(args.inventory)
    accel = {}
    for name in (args.device, args.against):
        rtl = inv.device(name).rtl
        if rtl is None:
            raise ConfigError(f"--against compares two LUTs of one accelerator; device {name!r} has no 'rtl:' section")
        accel[name] = rtl.accelerator
    if accel[args.device] != accel[args.against]:
        raise ConfigError(f"--against compares two LUTs of one accelerator: {args.device!r} is "
                          f"{accel[args.device]}, {args.against!r} is {accel[args.against]}")
    space = space_from_args(args)
    store = open_store(args.db, readonly=True)
    try:
        cmp = compare_luts(store, args.device, args.against, [w.key for w in space.workloads()], args.batch)
    finally:
        store.close()
    m = cmp.metrics
    text = (f"{args.against} predicting {args.device} ({accel[args.device]}), {space.name} {space.options()}: "
            f"{m.n} entries in both\n"
            f"  ±10% {100 * m.within_10pct:5.1f}%  ±5% {100 * m.within_5pct:5.1f}%  tau {m.kendall_tau:.3f}  "
            f"MAPE {m.mape:.2f}%  bias {m.mean_bias:+.2f}% (negative: {args.against} is faster)\n"
            f"  only in {args.device}: {len(cmp.only_device)}, only in {args.against}: {len(cmp.only_against)}")
    emit({"space": space.name, "options": space.options(), "accelerator": accel[args.device], **cmp.to_json()},
         args.json, text)
    return 0
