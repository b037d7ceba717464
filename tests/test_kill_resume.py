"""A kill at any moment loses at most one bounded slice, under the default (interleaved) schedule.

A build is SIGKILLed at a random moment (several seeds), then rerun: the store ends with exactly the
entries of a clean run, each workload measured once — what was committed is kept, what was in
flight is measured again, nothing twice.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter

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
    wait_for = rng.randrange(0, WORKLOADS - 8)  # committed records to wait for, then a random delay
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(keys_in(db)) < wait_for:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
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
