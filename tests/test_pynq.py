"""PYNQ boards as devices (docs/PYNQ.md), on a host without a board.

A real PYNQ from PyPI, in its own virtual environment (scripts/pynq-venv: PYNQ pins numpy<2, so it
stays out of the project's venv), is the Python of a loopback sshd "board". The pushed agent's
`pynq` backend imports there, PYNQ itself reports "No Devices Found", and the device is absent:
`hil farm check` says so, and the substitute (the RTL simulation) stands in only when allowed, with
`provenance: simulated` and `substitute_for` on every record. Nothing fakes PYNQ's results.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hil.devices.host.rtl_sim import RtlSimTarget
from hil.devices.host.targets import open_target
from hil.errors import ConfigError
from hil.inventory import load_inventory, parse_inventory
from hil.measure import MeasureSettings
from hil.target import fingerprint_class
from hil.workload import Gemm
from tests.hilcli import ROOT, assert_user_error, hil
from tests.sshd import SshdFactory, write_inventory


@pytest.fixture(scope="session")
def pynq_python() -> str:
    """The Python of a venv with PyPI's pynq (made once, cached; skipped with the reason if it can't be)."""
    try:
        p = subprocess.run([str(ROOT / "scripts" / "pynq-venv")], capture_output=True, text=True, timeout=1200,
                           check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("installing pynq from PyPI took over 20 minutes")
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"cannot make a venv with pynq from PyPI (scripts/pynq-venv): {tail}")
    return p.stdout.strip().splitlines()[-1]


def _board(h: Any, python: str, bitstream: Path, **extra: Any) -> dict[str, Any]:
    return {"backend": "pynq", "rtl": {"accelerator": "bismo-edge", "bitstream": str(bitstream)},
            "substitute": "bismo-edge", "ssh": h.ssh_section(python), **extra}


def _inventory(tmp_path: Path, h: Any, python: str, **extra: Any) -> Path:
    bit = tmp_path / "bismo_edge.bit"
    bit.write_bytes(b"")  # a file where the inventory says: PYNQ, not the path check, must refuse
    return write_inventory(tmp_path / "inventory.yaml", {
        "pynq-z1": _board(h, python, bit, **extra),
        "bismo-edge": {"backend": "rtl-sim", "rtl": {"accelerator": "bismo-edge"}},
    }, local=False)


@pytest.fixture
def lease_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "leases"
    monkeypatch.setenv("HIL_LEASE_DIR", str(d))
    return d


def test_farm_check_over_ssh_reports_no_board_and_the_substitution(
        pynq_python: str, sshd_factory: SshdFactory, tmp_path: Path, lease_dir: Path) -> None:
    inv = _inventory(tmp_path, sshd_factory("board"), pynq_python)
    p = hil("farm", "check", "--json", "-i", str(inv), "pynq-z1")
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    (row,) = json.loads(p.stdout)["devices"]
    assert row["reachable"] and not row["backend_ok"]
    assert row["capabilities"]["pynq"], row["capabilities"]  # the agent ran in the pynq venv
    assert "no board" in row["absent"] and "No Devices Found" in row["absent"], row
    assert row["substituted_by"] is None and "--allow-substitute" in row["substitution"]
    assert row["fingerprint"] is None  # nothing measured, nothing made up

    p = hil("farm", "check", "--json", "-i", str(inv), "--allow-substitute", "pynq-z1")
    assert p.returncode == 0, p.stdout + p.stderr
    (row,) = json.loads(p.stdout)["devices"]
    assert row["substituted_by"] == "bismo-edge" and "would stand in" in row["substitution"]

    text = hil("farm", "check", "-i", str(inv), "pynq-z1").stdout
    assert "NO BOARD" in text and "bismo-edge (not allowed)" in text


def test_absent_board_without_permission_is_one_line(
        pynq_python: str, sshd_factory: SshdFactory, tmp_path: Path, lease_dir: Path) -> None:
    inv = _inventory(tmp_path, sshd_factory("board"), pynq_python)
    with pytest.raises(ConfigError) as e:
        open_target(load_inventory(inv), "pynq-z1")
    msg = str(e.value)
    assert "\n" not in msg and "'pynq-z1'" in msg and "no board" in msg and "--allow-substitute" in msg
    db = tmp_path / "s.db"
    p = hil("lut", "anchor", "-i", str(inv), "--db", str(db), "-d", "pynq-z1", "--space", "mobilenet-v1-layers")
    assert_user_error(p, "pynq-z1", "--allow-substitute")


def test_absent_board_is_measured_on_its_substitute_when_allowed(
        pynq_python: str, sshd_factory: SshdFactory, tmp_path: Path, lease_dir: Path) -> None:
    inv_path = _inventory(tmp_path, sshd_factory("board"), pynq_python, allow_substitute=True)
    inv = load_inventory(inv_path)
    notes: list[str] = []
    settings = MeasureSettings(batch=1)
    target = open_target(inv, "pynq-z1", notes.append)
    try:
        assert target.name == "bismo-edge" and target.substitute_for == "pynq-z1"
        assert "no board" in notes[0] and "'bismo-edge' stands in" in notes[0]
        (m,) = list(target.measure([Gemm(16, 256, 8, 2, 2)], settings))
        fp = target.describe(settings)
    finally:
        target.close()
    assert m.ok and m.device == "bismo-edge" and m.provenance == "simulated"
    assert m.metrics["substitute_for"] == "pynq-z1" and m.fingerprint["state"]["substitute_for"] == "pynq-z1"
    plain = RtlSimTarget("bismo-edge", inv.device("bismo-edge"))
    try:  # the simulation's own LUT: never the board's class
        assert fingerprint_class(fp) == fingerprint_class(plain.describe(settings))
        assert fp["class"]["backend"] == "rtl-sim"
    finally:
        plain.close()


@pytest.mark.parametrize(("fields", "words"), [
    ({"rtl": {"accelerator": "bismo-edge"}}, ["pynq-z1", "rtl.bitstream"]),
    ({"rtl": {"accelerator": "bismo-edge", "bitstream": "/opt/x.bin"}}, ["pynq-z1", "rtl.bitstream", ".bit"]),
    ({"rtl": {"accelerator": "bismo-edge", "bitstream": "/opt/a b.bit"}}, ["pynq-z1", "rtl.bitstream"]),
    ({"allow_substitute": True, "substitute": None}, ["pynq-z1", "allow_substitute"]),
])
def test_inventory_check_validates_board_entries(tmp_path: Path, fields: dict[str, Any], words: list[str]) -> None:
    dev = {"backend": "pynq", "rtl": {"accelerator": "bismo-edge", "bitstream": "/home/xilinx/bismo.bit"},
           "ssh": {"host": "pynq.example.org", "user": "xilinx"}, "substitute": "bismo-edge", **fields}
    dev = {k: v for k, v in dev.items() if v is not None}
    inv = write_inventory(tmp_path / "inv.yaml", {
        "pynq-z1": dev, "bismo-edge": {"backend": "rtl-sim", "rtl": {"accelerator": "bismo-edge"}}}, local=False)
    assert_user_error(hil("inventory", "check", "-i", str(inv)), *words)


def test_inventory_accepts_a_board_and_rejects_a_bitstream_on_rtl_sim() -> None:
    ok = parse_inventory({"devices": {
        "pynq-z1": {"backend": "pynq", "rtl": {"accelerator": "bismo-edge", "bitstream": "~/bismo.bit"},
                    "ssh": {"host": "h", "user": "xilinx"}, "substitute": "sim", "allow_substitute": True},
        "sim": {"backend": "rtl-sim", "rtl": {"accelerator": "bismo-edge"}}}}, "t")
    assert ok.devices["pynq-z1"].allow_substitute
    with pytest.raises(ConfigError, match=r"rtl\.bitstream"):
        parse_inventory({"devices": {"sim": {"backend": "rtl-sim",
                                             "rtl": {"accelerator": "bismo-edge", "bitstream": "/a.bit"}}}}, "t")


@pytest.mark.parametrize("case", ["python without pynq", "bitstream missing"])
def test_farm_check_says_why_there_is_no_board(
        case: str, pynq_python: str, python_without_torch: str, sshd_factory: SshdFactory, tmp_path: Path,
        lease_dir: Path) -> None:
    python = python_without_torch if case == "python without pynq" else pynq_python
    inv = _inventory(tmp_path, sshd_factory("board"), python)
    if case == "bitstream missing":
        (tmp_path / "bismo_edge.bit").unlink()
    p = hil("farm", "check", "--json", "-i", str(inv), "--allow-substitute", "pynq-z1")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    (row,) = json.loads(p.stdout)["devices"]
    assert row["reachable"] and row["substituted_by"] == "bismo-edge"
    want = "PYNQ is not installed" if case == "python without pynq" else "bismo_edge.bit not found"
    assert "no board" in row["absent"] and want in row["absent"], row["absent"]
