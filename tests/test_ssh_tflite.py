"""Host-built artifacts over SSH, on the real thing: the tflite backend on a loopback sshd target.

The host converts each workload to .tflite (tensorflow), the SSH target pushes the files to
content-hashed paths under the agent's workdir, and the agent hands those paths to the backend,
which times them with the real LiteRT interpreter on the target.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert", reason="LiteRT is the `tflite` extra: pip install -e '.[tflite]'")
pytest.importorskip("tensorflow", reason="the converter is the `tflite-convert` extra")

from hil.devices.host.ssh_target import SshTarget
from hil.devices.host.tflite_convert import CACHE_ENV
from hil.inventory import Device
from hil.measure import MeasureSettings
from hil.workload import Linear, MBConv
from tests.sshd import SshdHost

QUICK = MeasureSettings(warmup_runs=2, warmup_s=0.0, min_repeats=5, min_time_s=0.02, max_time_s=2.0)
WORKLOADS = [MBConv((8, 8, 16), (8, 8, 16), 3, 3, 1, 1), Linear(32, 10)]


@pytest.mark.slow
def test_tflite_models_built_on_host_are_pushed_and_timed_on_target(
    ssh_farm: dict[str, SshdHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "tflite-cache"))
    host = ssh_farm["b"]
    dev = Device.model_validate({"backend": "tflite", "ssh": host.ssh_section(sys.executable)})
    t = SshTarget("phone-standin", dev)
    try:
        bad = MBConv((8, 8, 16), (4, 4, 16), 3, 3, 2, 1)  # identity skip across a shape change: no model
        got = list(t.measure([*WORKLOADS, bad], QUICK))
        # one record per workload; a failure found on the host may come before the target's results
        by_key = {m.key: m for m in got}
        assert len(got) == 3 and set(by_key) == {w.key for w in [*WORKLOADS, bad]}
        ms = [by_key[w.key] for w in [*WORKLOADS, bad]]
        assert all(m.ok and m.stats and m.stats.median_ms > 0 for m in ms[:-1]), [m.error for m in ms]
        assert not ms[-1].ok and ms[-1].error_kind == "build_error"  # a record, and the rest went on
        assert ms[0].fingerprint["class"]["backend"] == "tflite"
        pushed = sorted((host.workdir / "artifacts").iterdir())
        assert len([p for p in pushed if p.suffix == ".tflite"]) == len(WORKLOADS)  # + sidecars
        stamps = {p: p.stat().st_mtime_ns for p in pushed}
        [again] = list(t.measure(WORKLOADS[:1], QUICK))  # already there: not sent again
        assert again.ok and {p: p.stat().st_mtime_ns for p in pushed} == stamps
    finally:
        t.close()
    # closing the device cleans up the models it pushed
    assert not [p for p in (host.workdir / "artifacts").iterdir() if p.suffix == ".tflite"]
