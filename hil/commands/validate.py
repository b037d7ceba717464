"""`hil validate`: predicted vs measured latency of sampled networks on one device."""

from __future__ import annotations

import argparse

from hil.commands.common import add_db_arg, add_inventory_arg, add_json_arg, emit, progress_bar, progress_enabled
from hil.commands.lut import add_protocol_args, add_space_args, protocol_from_args, space_from_args
from hil.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="compare LUT predictions with end-to-end measurements")
    p.add_argument("--device", "-d", required=True)
    add_space_args(p)
    p.add_argument("--samples", type=int, default=50, help="networks to sample (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, metavar="FILE.png", help="write the predicted-vs-measured scatter")
    add_protocol_args(p)
    add_inventory_arg(p)
    add_db_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from hil.devices.host.targets import open_target, settings_for
    from hil.inventory import load_inventory
    from hil.store import open_store
    from hil.validate import plot, validate

    if args.samples < 2:
        raise ConfigError("--samples must be at least 2")
    inv = load_inventory(args.inventory)
    dev = inv.device(args.device)
    space = space_from_args(args)
    settings = settings_for(dev, protocol_from_args(args), args.batch, args.clock)
    store = open_store(args.db)
    target = open_target(inv, args.device)
    bar = None
    if progress_enabled(args.json):
        bar = progress_bar(None, "net", "measuring networks")
    try:
        report = validate(store, target, space, settings, args.samples, args.seed,
                          (lambda m: bar.update(1)) if bar else None)
    finally:
        if bar:
            bar.close()
        target.close()
        store.close()
    out = report.to_json()
    if args.plot:
        plot(report, args.plot)
        out["plot"] = args.plot
    c, r, rep, b = report.calibrated, report.raw_sum, report.repeatability, report.build_calibrated
    text = (
        f"{args.device} / {space.name} {space.options()}: {c.n} networks\n"
        f"  LUT model : ±10% {100 * c.within_10pct:5.1f}%  ±5% {100 * c.within_5pct:5.1f}%  "
        f"tau {c.kendall_tau:.3f}  MAPE {c.mape:.2f}%  RMSPE {c.rmspe:.2f}%  RMSE {c.rmse_ms:.3f} ms  "
        f"bias {c.mean_bias:+.2f}%\n"
        + (f"  with the build's calibration: ±10% {100 * b.within_10pct:5.1f}%  MAPE {b.mape:.2f}%  "
           f"bias {b.mean_bias:+.2f}% (includes the host's drift since the build)\n" if b else "")
        + f"  plain sum : ±10% {100 * r.within_10pct:5.1f}%  tau {r.kendall_tau:.3f}  MAPE {r.mape:.2f}%  "
        f"bias {r.mean_bias:+.2f}%\n"
        f"  repeatability (same network twice): MAPE {rep['mape']:.2f}%  within ±10% {100 * rep['within_10pct']:.1f}%  "
        f"tau pass 1 vs pass 2 {rep['kendall_tau']:.3f}\n"
        f"  calibration: scale {report.calibration['scale']:.4f} offset {report.calibration['offset_ms']:.3f} ms "
        f"(fitted on {report.calibration['fitted_on']} held-out networks)"
        + (f"\n  plot: {args.plot}" if args.plot else "")
    )
    emit(out, args.json, text)
    return 0
