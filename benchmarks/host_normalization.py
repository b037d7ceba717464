"""Does host normalization make interleaved sessions agree with each other?

Times N networks of the proxyless-mobile space in rounds (shuffled, one call each per round) in
several sessions, each with freshly built modules, and compares the sessions' per-network medians
pairwise, raw and after `hil.measure.host_normalize`: Kendall's tau and the level-free MAPE (one
session scaled to the other by their median ratio, since the host's speed may differ between them).

    .venv/bin/python benchmarks/host_normalization.py --networks 30 --rounds 30 --sessions 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import time

import torch
from scipy.stats import kendalltau

from hil.devices.agent.host_info import pin_allocator
from hil.lut_builder.spaces import make_space
from hil.measure import host_normalize
from hil.nets.torch_build import build_module, input_shape


def session(nets: list, rounds: int, rng: random.Random) -> list[tuple[int, float]]:
    x = torch.randn(input_shape(nets[0], 1))
    modules = [build_module(n).eval() for n in nets]
    for m in modules:
        for _ in range(3):
            m(x)
    timeline = []
    for _ in range(rounds):
        order = list(range(len(nets)))
        rng.shuffle(order)
        for i in order:
            t0 = time.perf_counter_ns()
            modules[i](x)
            timeline.append((i, (time.perf_counter_ns() - t0) / 1e6))
    return timeline


def medians(timeline: list[tuple[int, float]], n: int) -> list[float]:
    return [statistics.median(x for j, x in timeline if j == i) for i in range(n)]


def level_free_mape(a: list[float], b: list[float]) -> float:
    r = statistics.median(p / q for p, q in zip(a, b, strict=True))
    return 100 * statistics.mean(abs(p - r * q) / p for p, q in zip(a, b, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--cpu", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {args.cpu})
    pin_allocator()
    nets = make_space("proxyless-mobile", resolution=args.resolution).sample(args.networks, seed=0)
    rng = random.Random(0)
    with torch.inference_mode():
        sessions = [session(nets, args.rounds, rng) for _ in range(args.sessions)]
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "loadavg": os.getloadavg(), **vars(args)}
    for name, transform in (("raw", lambda t: t), ("normalized", host_normalize)):
        est = [medians(transform(t), args.networks) for t in sessions]
        pairs = list(itertools.combinations(range(args.sessions), 2))
        report[name] = {
            "kendall_tau": [round(float(kendalltau(est[a], est[b]).statistic), 3) for a, b in pairs],
            "level_free_mape": [round(level_free_mape(est[a], est[b]), 2) for a, b in pairs],
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
