"""A kill at any moment loses at most one bounded slice, under the default (interleaved) schedule.

A build is SIGKILLed at a random moment (several seeds), then rerun: the store ends with exactly the
entries of a clean run, each workload measured once — what was committed is kept, what was in
flight is measured again, nothing twice.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.hilcli import FAST, ROOT, hil, keys_in

SPACE = ["--space", "proxyless-mobile", "--resolution", "32"]
WORKLOADS = 70  # the space's unique workloads at 32


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interleaved_build_killed_at_a_random_moment_resumes_exactly(tmp_path, seed):
    rng = random.Random(seed)
    db = tmp_path / "hil.db"
    # --slice-time 0: slices of the minimum size (8 workloads), so a kill lands between commits;
    # --cv-threshold 9: nothing is noisy, so a clean run measures every key exactly once
    args = ["lut", "build", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, "--cv-threshold", "9",
            "--calibration-nets", "0", "--slice-time", "0", "--seed", str(seed)]
    proc = subprocess.Popen([sys.executable, "-m", "hil", *args, "--json"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # committed records to wait for, then a random delay shorter than the three slices (~1 s) still to
    # come, so the kill lands inside the build, never after it
    wait_for = rng.randrange(0, WORKLOADS - 3 * 8)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(keys_in(db)) < wait_for:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the build ended before the kill: the test tested nothing"
    before = keys_in(db)
    assert len(before) == len(set(before)), "a key was committed twice before the kill"
    print(f"killed with {len(before)} of {WORKLOADS} committed")

    p = hil(*args, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["entries"] == WORKLOADS and out["reused"] == len(before)
    assert out["measured"] == WORKLOADS - len(before)
    counts = Counter(keys_in(db))
    assert len(counts) == WORKLOADS and set(counts.values()) == {1}, "a workload was measured twice"


@pytest.fixture(scope="module")
def calibrated_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("lut") / "hil.db"
    p = hil("lut", "build", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, "--calibration-nets", "4", "--json")
    assert p.returncode == 0, p.stderr
    return db


def validation_records(db: Path) -> list[tuple[int, str]]:
    """(pass, key) of every validation record of a scored or calibration network."""
    con = sqlite3.connect(db)
    try:
        return [(int(r[0]), r[1]) for r in con.execute(
            "SELECT json_extract(metrics, '$.validation_pass'), key FROM measurements"
            " WHERE json_extract(metrics, '$.validation_pass') IS NOT NULL AND key NOT LIKE 'drift:%' AND ok=1")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_validation_killed_at_a_random_moment_loses_one_part_at_most(tmp_path, calibrated_lut, seed):
    rng = random.Random(seed)
    db = tmp_path / "hil.db"
    shutil.copy(calibrated_lut, db)
    # --slice-time 0: each pass is cut into sessions of the minimum size, so a kill lands between them
    args = ["validate", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, "--samples", "12", "--slice-time", "0",
            "--seed", str(seed), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "hil", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for = rng.randrange(0, 30)  # committed network records to wait for, then a random delay
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(validation_records(db)) < wait_for:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 0.5))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the validation ended before the kill: the test tested nothing"
    before = Counter(validation_records(db))
    print(f"killed with {sum(before.values())} network records committed")

    p = hil(*args)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    counts = Counter(validation_records(db))
    scored = {pt["network"] for pt in out["points"]}
    assert len(scored) == 12
    ref = out["speedup"]["reference"]
    # what was committed before the kill is still there and was reused, not measured again
    assert all(counts[k] == n for k, n in before.items() if k[1] != ref)
    # each pass has each scored network exactly once; the reference network once per part
    assert {(p_, k) for p_, k in counts if k != ref} >= {(p_, k) for p_ in range(3) for k in scored}
    assert {n for (_, k), n in counts.items() if k != ref} == {1}, "a network was measured twice"
    assert sum(counts[(p_, ref)] for p_ in range(3)) == len(out["sessions"])
