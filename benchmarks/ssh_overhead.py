"""What the SSH path costs: a LUT built through loopback SSH vs in-process on the same CPU.

Starts two real OpenSSH servers on 127.0.0.1 (tests/sshd.py: own config, generated keys) and times,
each from one run:

1. a LUT build (proxyless-mobile) in-process (`local-cpu`) and through SSH + the remote agent
   (`ssh-a`), each into a fresh store so both measure every workload, alternating local and SSH
   `--pairs` times; the ratio of the totals is the SSH cost. Once through the build function in this
   process (torch already imported here, so the agent's own torch import counts against SSH alone),
   once as `hil lut build` commands end to end, as a user runs them;
   The SSH time includes connecting, starting the agent and its torch import; the bundle is pushed
   beforehand (a one-time cost, reported separately);
2. opening an SSH device (connect, start the agent, load the backend's runtime), the per-request
   round trip through SSH and the agent (a `ping`, also with TCP_NODELAY switched off), and the
   overhead of a tiny measure request over SSH compared with the same request in-process;
3. a 2-device build (`ssh-a` and `ssh-b` concurrently, one worker each) vs the two one after the
   other.

    .venv/bin/python benchmarks/ssh_overhead.py [--resolution 224] [--min-time 0.2] [--pairs 2] [--json out.json]

Ratios come from one run on a shared machine: compare them only with numbers from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/sshd.py: the same real-sshd fixture the tests use

from hil.devices.agent.host_info import cpu_model  # noqa: E402
from hil.devices.host.ssh_target import AgentSession  # noqa: E402
from hil.devices.host.targets import open_target, settings_for  # noqa: E402
from hil.inventory import parse_inventory  # noqa: E402
from hil.lut_builder.build import build_devices  # noqa: E402
from hil.lut_builder.spaces import make_space  # noqa: E402
from hil.measure import MeasureSettings  # noqa: E402
from hil.store import SqliteStore  # noqa: E402
from hil.workload import Linear  # noqa: E402
from tests.sshd import SshdHost, keygen, sshd_missing  # noqa: E402


def _build(inv: Any, names: list[str], space: Any, protocol: MeasureSettings, db: Path) -> tuple[float, Any]:
    store = SqliteStore(db)
    t0 = time.perf_counter()
    try:
        results = build_devices(
            store, {n: (lambda n=n: open_target(inv, n)) for n in names}, space,
            lambda n: settings_for(inv.device(n), protocol), retries=0,
        )
    finally:
        wall = time.perf_counter() - t0
        store.close()
    for r in results:
        if r.status != "ok":
            raise SystemExit(f"build on {r.device} did not finish: {r.status} {r.errors[-1:]}")
    return wall, results


def _build_cli(inv_file: Path, device: str, space: Any, protocol: MeasureSettings, db: Path) -> float:
    """`hil lut build` end to end in a fresh process, as a user runs it (interpreter and imports included)."""
    cmd = [sys.executable, "-m", "hil", "lut", "build", "-i", str(inv_file), "--db", str(db), "-d", device,
           "--space", space.name, "--resolution", str(space.options()["resolution"]), "--calibration-nets", "0",
           "--min-time", str(protocol.min_time_s), "--cv-threshold", str(protocol.cv_threshold)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"hil lut build -d {device} failed: {p.stdout[-400:]} {p.stderr[-400:]}")
    return wall


def _lut_sum(db: Path, device: str) -> float:
    with SqliteStore(db) as store:
        [cls] = [c for c in store.classes(device) if c.entries > 1]
        return sum(m.latency_ms for m in store.lut(cls.fp_class).values())


def _round_trips(inv: Any, n: int) -> dict[str, float]:
    """Opening the device, ping RTT through SSH + agent, and a tiny measure request over SSH vs in-process."""
    opens = []
    for _ in range(3):  # connect, start the agent (bundle already there), load the backend
        t0 = time.perf_counter()
        open_target(inv, "ssh-a").close()
        opens.append(time.perf_counter() - t0)
    ssh = open_target(inv, "ssh-a")
    local = open_target(inv, "local-cpu")
    tiny = MeasureSettings(warmup_runs=1, warmup_s=0.0, min_repeats=1, min_time_s=0.0, min_run_ms=0.0)
    w = [Linear(8, 8)]
    try:
        for _ in range(20):  # warm both paths
            ssh.ping()
            list(ssh.measure(w, tiny))
            list(local.measure(w, tiny))
        pings = sorted(ssh.ping() for _ in range(n))

        def per_request(target: Any) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                list(target.measure(w, tiny))
                out.append((time.perf_counter() - t0) * 1e3)
            return sorted(out)

        remote, here = per_request(ssh), per_request(local)
        sock = ssh.session.conn.transport.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)  # what the default socket would do
        nagle = sorted(ssh.ping() for _ in range(n))
    finally:
        ssh.close()
        local.close()
    return {
        "open_ssh_target_s_median": statistics.median(opens),
        "ping_rtt_ms_median": statistics.median(pings),
        "ping_rtt_ms_p90": pings[int(0.9 * (len(pings) - 1))],
        "ping_rtt_ms_median_without_nodelay": statistics.median(nagle),
        "measure_request_ms_ssh_median": statistics.median(remote),
        "measure_request_ms_local_median": statistics.median(here),
        "measure_request_overhead_ms": statistics.median(remote) - statistics.median(here),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--min-time", type=float, default=0.2, help="protocol min_time_s (default 0.2)")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=2, help="local/SSH build pairs, alternating (default 2)")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    args = ap.parse_args()
    reason = sshd_missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    # One attempt per workload (no noisy re-measure): the re-measure policy is the same on both paths
    # and on this shared machine it would only add noise to the comparison.
    protocol = replace(MeasureSettings(), min_time_s=args.min_time, cv_threshold=9.0)
    space = make_space("proxyless-mobile", resolution=args.resolution)
    out: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": os.getloadavg()},
        "space": {"name": space.name, **space.options(), "workloads": len(space.workloads())},
        "protocol": protocol.to_json(),
    }
    with tempfile.TemporaryDirectory(prefix="hil-ssh-bench-") as tmp:
        root = Path(tmp)
        key = keygen(root / "id_ed25519")
        hosts = {n: SshdHost(n, root / n, key).start() for n in ("a", "b")}
        try:
            for h in hosts.values():
                h.trust()
            devices: dict[str, Any] = {"local-cpu": {"backend": "torch-cpu", "threads": 1}}
            for n, h in hosts.items():
                devices[f"ssh-{n}"] = {"backend": "torch-cpu", "threads": 1, "ssh": h.ssh_section(sys.executable)}
            inv = parse_inventory({"devices": devices}, "benchmark")
            first = []
            for n in ("a", "b"):  # the one-time push of the bundle, timed apart from the builds
                t0 = time.perf_counter()
                AgentSession(f"ssh-{n}", inv.device(f"ssh-{n}").ssh).close()
                first.append(time.perf_counter() - t0)
            out["first_connect_with_push_and_agent_start_s"] = first

            # Alternating local, SSH, local, SSH...: a neighbour's load that comes and goes biases
            # neither side.
            pairs = []
            for i in range(args.pairs):
                t_local, _ = _build(inv, ["local-cpu"], space, protocol, root / f"local{i}.db")
                t_ssh, _ = _build(inv, ["ssh-a"], space, protocol, root / f"ssh{i}.db")
                pairs.append({"local_s": t_local, "ssh_s": t_ssh, "ratio": t_ssh / t_local,
                              "lut_sum_ms_local": _lut_sum(root / f"local{i}.db", "local-cpu"),
                              "lut_sum_ms_ssh": _lut_sum(root / f"ssh{i}.db", "ssh-a")})
            local_total, ssh_total = sum(p["local_s"] for p in pairs), sum(p["ssh_s"] for p in pairs)
            out["lut_build"] = {"pairs": pairs, "ratio_ssh_over_local": ssh_total / local_total}

            inv_file = root / "inventory.yaml"
            inv_file.write_text(json.dumps({"version": 1, "devices": devices}))  # JSON is YAML
            cli = []
            for i in range(args.pairs):
                cli.append({"local_s": _build_cli(inv_file, "local-cpu", space, protocol, root / f"cli-l{i}.db"),
                            "ssh_s": _build_cli(inv_file, "ssh-a", space, protocol, root / f"cli-s{i}.db")})
            out["lut_build_cli"] = {
                "pairs": cli,
                "ratio_ssh_over_local": sum(c["ssh_s"] for c in cli) / sum(c["local_s"] for c in cli),
            }
            out["round_trip"] = _round_trips(inv, args.pings)

            t_a, _ = _build(inv, ["ssh-a"], space, protocol, root / "seq-a.db")
            t_b, _ = _build(inv, ["ssh-b"], space, protocol, root / "seq-b.db")
            t_both, _ = _build(inv, ["ssh-a", "ssh-b"], space, protocol, root / "both.db")
            out["two_devices"] = {"sequential_s": t_a + t_b, "concurrent_s": t_both,
                                  "ratio_concurrent_over_sequential": t_both / (t_a + t_b)}
        finally:
            for h in hosts.values():
                h.stop()
    out["machine"]["loadavg_after"] = os.getloadavg()
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
