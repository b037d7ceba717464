"""Running the real `hil` CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "inventory.yaml"
# A fast protocol for tests: correctness of the pipeline, not fidelity of the numbers.
FAST = ["--min-time", "0.02", "--min-repeats", "5", "--warmup-runs", "2", "--warmup-time", "0"]


def hil(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "hil", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=e, timeout=timeout, check=False)


def assert_user_error(p: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit != 0, no traceback, one line on stderr naming each of `words`."""
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def keys_in(db: Path) -> list[str]:
    """Workload keys of the successful records in a store (one per record, so repeats show)."""
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("SELECT key FROM measurements WHERE key NOT LIKE 'drift:%' AND ok=1")]
    except sqlite3.OperationalError:  # the store is being created right now
        return []
    finally:
        con.close()
