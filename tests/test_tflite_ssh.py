"""The TFLite target through a real OpenSSH server on loopback: the phone path end to end.

The host converts, the SSH target pushes the models over SFTP, the agent (started with the
target's own Python) times them with LiteRT. A second "phone" runs a Python without LiteRT.
"""

from __future__ import annotations

import sys
import venv
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert", reason="LiteRT is the `tflite` extra: pip install -e '.[tflite]'")
pytest.importorskip("tensorflow", reason="the converter is the `tflite-convert` extra (tensorflow-cpu)")
pytest.importorskip("paramiko")

from hil.devices.host.ssh_target import SshTarget
from hil.inventory import Device
from hil.measure import MeasureSettings
from hil.workload import ConvLayer, MBConv, Network
from tests.sshd import SshdHost, keygen, sshd_missing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sshd_missing() is not None, reason=str(sshd_missing()))]

QUICK = MeasureSettings(warmup_runs=2, warmup_s=0.0, min_repeats=5, min_time_s=0.02, max_time_s=2.0)
STEM = ConvLayer("Conv", (16, 16, 3), (8, 8, 16), 3, 2)
SKIP = MBConv((8, 8, 16), (8, 8, 16), 3, 3, 1, 1)
BAD = MBConv((8, 8, 16), (4, 4, 16), 3, 3, 2, 1)  # identity skip across a shape change
NET = Network((STEM, SKIP), name="tiny")


@pytest.fixture(scope="module")
def phone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdHost]:
    root = tmp_path_factory.mktemp("phone")
    host = SshdHost("phone", root / "sshd", keygen(root / "user_key")).start()
    host.trust()
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture
def tflite_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # one cache for the module's tests: conversions are the slow part
    path = tmp_path_factory.getbasetemp() / "tflite-ssh-cache"
    monkeypatch.setenv("HIL_TFLITE_CACHE", str(path))
    return path


def _device(host: SshdHost, python: str) -> Device:
    return Device.model_validate({"backend": "tflite", "ssh": host.ssh_section(python)})


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_tflite_over_ssh_pushes_models_and_times_them(phone: SshdHost, tflite_cache: Path, precision: str) -> None:
    target = SshTarget("phone", _device(phone, sys.executable))
    try:
        settings = replace(QUICK, precision=precision)
        fp = target.describe(settings)
        ms = list(target.measure([STEM, BAD, SKIP, NET], settings))
        pushed = list(phone.workdir.rglob("*.tflite"))
    finally:
        target.close()
    assert len(pushed) >= 3  # the models really went over SFTP
    assert not list(phone.workdir.rglob("*.tflite"))  # and were cleaned up when the device closed
    rt = fp["class"]["runtime"]
    assert rt["package"] == "ai-edge-litert" and rt["precision"] == precision and rt["threads"] == 1
    assert sorted(m.key for m in ms) == sorted([STEM.key, BAD.key, SKIP.key, NET.key])  # one record each
    by_key = {m.key: m for m in ms}
    bad = by_key.pop(BAD.key)
    assert (bad.ok, bad.error_kind, bad.device) == (False, "build_error", "phone") and BAD.key in bad.error
    for m in by_key.values():  # the rest of the build went on
        assert m.ok, m.error
        assert m.stats is not None and m.stats.median_ms > 0
        assert m.metrics["input_dtype"] == ("int8" if precision == "int8" else "float32")
        assert m.metrics["converter"].startswith("tensorflow-")


def test_phone_without_litert_gives_clear_records(phone: SshdHost, tflite_cache: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare-python"
    venv.create(bare, with_pip=False)  # the target's Python: no LiteRT, no numpy
    target = SshTarget("bare-phone", _device(phone, str(bare / "bin" / "python")))
    try:
        ms = list(target.measure([STEM, SKIP], QUICK))
    finally:
        target.close()
    for m in ms:
        assert (m.ok, m.error_kind, m.device) == (False, "unsupported", "bare-phone"), m.error
        assert "no TFLite runtime" in m.error and "ai-edge-litert" in m.error
