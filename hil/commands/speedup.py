"""`hil speedup`: predicted vs measured speedup of one architecture over another on one device.

Both networks are timed together in one interleaved session (docs/MEASUREMENT.md), so the host's
speed drift falls on both alike and cancels in their ratio; the prediction is the stored model's
(`LatencyModel.from_store`), exactly what an optimizer ranked them with.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("speedup", help="predicted and measured speedup of a candidate architecture over a base one")
    p.add_argument("--device", "-d", required=True)
    add_space_args(p)
    p.add_argument("--base", required=True, metavar="ARCH",
                   help="comma-separated ops of the space (e.g. 21 for proxyless-mobile), 'reference' for the "
                        "space's reference network, or a `hil train` checkpoint of a space model")
    p.add_argument("--candidate", required=True, metavar="ARCH", help="as --base")
    p.add_argument("--seed", type=int, default=0, help="seed of the session's shuffled order")
    add_protocol_args(p)
    add_inventory_arg(p)
    add_substitute_arg(p)
    add_db_arg(p)
    add_json_arg(p)
    p.set_defaults(func=_speedup)


def resolve_arch(space: Any, arch: str, flag: str) -> tuple[Any, str]:
    """The network an ARCH argument names, and where it came from."""
    from hil.calibration import ArchSpace, reference_network

    if arch == "reference":
        net, how = reference_network(space)
        return net, f"the space's reference network ({how})"
    if not isinstance(space, ArchSpace):
        raise ConfigError(f"{flag}: search space {space.name!r} has no op-list architectures")
    path = Path(arch)
    if path.suffix in (".safetensors", ".pt") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{flag}: checkpoint {arch} does not exist")
        # The lead redirects this import when the optimizers move.
        from hil.optimizers.train import read_checkpoint

        _, meta = read_checkpoint(path)
        ops = (meta.get("options") or {}).get("arch")
        if meta.get("model") != "proxyless" or not ops:
            raise ConfigError(f"{flag}: checkpoint {arch} holds a {meta.get('model')!r} model, not an architecture "
                              f"of space {space.name!r}")
        return space.network([o.strip() for o in str(ops).split(",")]), f"checkpoint {arch}"
    ops = [o.strip() for o in arch.split(",")]
    try:
        return space.network(ops), "op list"
    except ConfigError as e:
        raise ConfigError(f"{flag}: {e}") from None


def _speedup(args: argparse.Namespace) -> int:
    from hil.devices.host.targets import check_fits, settings_for
    from hil.inventory import load_inventory
    from hil.latency import LatencyModel
    from hil.speedup import measure_speedup
    from hil.validate import lut_class

    inv = load_inventory(args.inventory)
    dev = inv.device(args.device)
    space = space_from_args(args)
    base, base_how = resolve_arch(space, args.base, "--base")
    cand, cand_how = resolve_arch(space, args.candidate, "--candidate")
    if base.key == cand.key:
        raise ConfigError("--base and --candidate name the same network")
    settings = settings_for(dev, protocol_from_args(args), args.batch, args.clock)
    check_fits(args.device, dev, [*base.layers, *cand.layers], settings.batch)
    with measuring(args.db, inv, args.device, "net", "measuring both networks", args.json, total=2,
                   allow_substitute=args.allow_substitute) as m:
        cls = lut_class(m.store, m.target, settings)
        model = LatencyModel.from_store(m.store, m.target.name, cls)
        s = measure_speedup(m.store, m.target, model, base, cand, settings, seed=args.seed, progress=m.progress)
    out = {"device": args.device, "space": space.name, "options": space.options(), "fingerprint_class": cls,
           **s.to_json(), "calibration": model.calibration.to_json()}
    out["base"]["from"], out["candidate"]["from"] = base_how, cand_how
    text = (
        f"{args.device} / {space.name} {space.options()}: speedup of the candidate over the base\n"
        f"  base      : predicted {s.base.predicted_ms:8.3f} ms  measured {s.base.measured_ms:8.3f} ms  ({base_how})\n"
        f"  candidate : predicted {s.candidate.predicted_ms:8.3f} ms  measured {s.candidate.measured_ms:8.3f} ms  "
        f"({cand_how})\n"
        f"  speedup   : predicted x{s.predicted:.3f}  measured x{s.measured:.3f}  error {100 * s.error:+.2f}% "
        f"(both measured in one session)"
    )
    emit(out, args.json, text)
    return 0
