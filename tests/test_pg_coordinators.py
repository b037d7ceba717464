"""Many coordinators, one truth: `hil lut build` processes sharing one PostgreSQL store (a private
server, tests/pgserver.py), and `hil store copy` moving records between engines.

The coordinators are separate processes told apart by `HIL_COORDINATOR`, each with its own lease
folder, so only the store's lease (an advisory lock on the server) keeps them off the device at
the same time.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.hilcli import FAST, ROOT, assert_user_error, hil

SPACE = ["--space", "proxyless-mobile", "--resolution", "32"]
WORKLOADS = 70  # the space's unique workloads at 32
# --cv-threshold 9: nothing is noisy, so each key is measured exactly once by whoever gets to it;
# --slice-time 0: commits every 8 workloads, so a kill lands between commits
BUILD = ["lut", "build", "-d", "local-cpu", *SPACE, *FAST, "--cv-threshold", "9", "--calibration-nets", "0",
         "--slice-time", "0"]


def rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        try:
            return db.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:  # the first coordinator is creating the store
            return []


def lut_rows(url: str) -> list[tuple]:
    return rows(url, "SELECT key, coordinator FROM measurements WHERE ok = 1 AND key NOT LIKE 'drift:%%'")


def env_of(name: str, tmp_path: Path) -> dict[str, str]:
    return {"HIL_COORDINATOR": name, "HIL_LEASE_DIR": str(tmp_path / f"leases-{name}")}


@pytest.mark.slow
def test_two_coordinators_one_killed_mid_build_nothing_lost_nothing_twice(pg_url, tmp_path):
    import os

    def start(name: str, seed: int) -> tuple[subprocess.Popen[str], Path]:
        err = tmp_path / f"{name}.err"
        p = subprocess.Popen([sys.executable, "-m", "hil", *BUILD, "--min-time", "0.1", "--db", pg_url,
                              "--seed", str(seed), "--json"],
                             cwd=ROOT, env={**os.environ, **env_of(name, tmp_path)}, text=True,
                             stdout=subprocess.PIPE, stderr=err.open("w"))
        return p, err

    alpha, _ = start("alpha", 1)
    deadline = time.time() + 300
    while time.time() < deadline and alpha.poll() is None and len(lut_rows(pg_url)) < 8:
        time.sleep(0.05)
    # Stopped, alpha keeps its connection and so its lease, however long beta takes to start on a busy
    # machine; otherwise alpha could finish the rest of its build first.
    alpha.send_signal(signal.SIGSTOP)
    try:
        beta, beta_err = start("beta", 2)
        # beta waits for the device: the store's lease names who holds it
        while time.time() < deadline and beta.poll() is None and "leased by" not in beta_err.read_text():
            time.sleep(0.05)
        assert "coordinator alpha" in beta_err.read_text(), beta_err.read_text()
    finally:
        alpha.send_signal(signal.SIGKILL)
        alpha.wait()
    committed_by_alpha = {k for k, c in lut_rows(pg_url) if c == "alpha"}
    assert 8 <= len(committed_by_alpha) < WORKLOADS, "alpha finished before it was killed"
    print(f"alpha killed with {len(committed_by_alpha)} of {WORKLOADS} committed")

    out, _ = beta.communicate(timeout=300)
    assert beta.returncode == 0, beta_err.read_text()
    summary = json.loads(out)
    # beta skipped what alpha had committed and measured only the rest
    assert summary["entries"] == WORKLOADS and summary["reused"] == len(committed_by_alpha)
    assert summary["measured"] == WORKLOADS - len(committed_by_alpha)
    records = lut_rows(pg_url)
    counts = Counter(k for k, _ in records)
    assert len(counts) == WORKLOADS and set(counts.values()) == {1}, "a workload was measured twice"
    assert {k for k, c in records if c == "alpha"} == committed_by_alpha  # nothing committed was lost
    assert rows(pg_url, "SELECT COUNT(*) FROM measurements WHERE accepted = 1 AND key NOT LIKE 'drift:%%'") == \
        [(WORKLOADS,)]
    # a third coordinator finds the LUT complete and measures nothing
    p = hil(*BUILD, "--min-time", "0.1", "--db", pg_url, "--json", env=env_of("gamma", tmp_path))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["measured"] == 0


def export_csv(db: str, out: Path) -> list[dict[str, str]]:
    p = hil("lut", "export", "-d", "local-cpu", *SPACE, "--db", db, "--format", "csv", "-o", str(out))
    assert p.returncode == 0, p.stderr
    with out.open() as f:
        return sorted(csv.DictReader(f), key=lambda r: r["key"])


def copy(src: str, dst: str) -> dict[str, int]:
    p = hil("store", "copy", "--from", src, "--to", dst, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.slow
def test_store_copy_both_ways_twice_keeps_provenance_and_adds_nothing_the_second_time(pg_server, tmp_path):
    built = pg_server.create_database()
    p = hil(*BUILD, "--db", built, "--seed", "3", env=env_of("lab-a", tmp_path))
    assert p.returncode == 0, p.stderr
    n = rows(built, "SELECT COUNT(*) FROM measurements")[0][0]
    # PostgreSQL -> SQLite, twice
    db = tmp_path / "copy.db"
    first = copy(built, f"sqlite:///{db}")
    assert first["records_added"] == n and first["records_present"] == 0
    again = copy(built, f"sqlite:///{db}")
    assert again["records_added"] == 0 and again["records_present"] == n
    # SQLite -> a fresh PostgreSQL database, twice
    back = pg_server.create_database()
    assert copy(str(db), back)["records_added"] == n
    assert copy(str(db), back)["records_added"] == 0
    # the LUT exports the same from every store, and who measured what, where and when came along
    assert export_csv(built, tmp_path / "a.csv") == export_csv(str(db), tmp_path / "b.csv") == \
        export_csv(back, tmp_path / "c.csv")
    provenance = "SELECT uid, coordinator, host, created_at, class, state, accepted FROM measurements"
    assert sorted(rows(built, provenance)) == sorted(rows(back, provenance))
    assert {r[0] for r in rows(back, "SELECT DISTINCT coordinator FROM measurements")} == {"lab-a"}
    # a merge: records of another coordinator join the ones there, the LUT keeps one entry per key
    other = tmp_path / "other.db"
    p = hil(*BUILD, "--db", str(other), "--seed", "4", env=env_of("lab-b", tmp_path))
    assert p.returncode == 0, p.stderr
    merged = copy(str(other), back)
    assert merged["records_added"] > 0 and merged["records_present"] == 0
    assert rows(back, "SELECT COUNT(*) FROM measurements WHERE accepted = 1 AND key NOT LIKE 'drift:%%'") == \
        [(WORKLOADS,)]
    assert {r[0] for r in rows(back, "SELECT DISTINCT coordinator FROM measurements")} == {"lab-a", "lab-b"}


def test_postgres_user_errors_are_one_line_and_never_show_the_password(pg_server, tmp_path):
    closed = f"postgresql://alice:s3cret-pw@127.0.0.1:{_closed_port()}/hil"
    for db in (closed, "postgresql://alice:s3cret-pw@127.0.0.1:notaport/hil"):
        p = hil("lut", "show", "-d", "local-cpu", *SPACE, "--db", db)
        assert_user_error(p, "postgresql://alice:***@127.0.0.1")
        assert "s3cret-pw" not in p.stderr + p.stdout
    p = hil("lut", "show", "-d", "local-cpu", *SPACE, "--db", pg_server.url("no_such_db"))
    assert_user_error(p, pg_server.url("no_such_db"), "cannot connect")
    p = hil("lut", "show", "-d", "local-cpu", *SPACE, env={"HIL_DB": pg_server.create_database()})
    assert_user_error(p, "empty database")
    p = hil("store", "copy", "--from", "mysql://x@y/z", "--to", str(tmp_path / "x.db"))
    assert_user_error(p, "mysql://", "unknown kind of store")


def _closed_port() -> int:
    from tests.pgserver import free_port

    return free_port()  # bound and released: nothing listens there now


def test_a_killed_holder_leaves_no_stale_store_lease(pg_url, tmp_path):
    import os

    from hil.lease import LeaseBusy, this_holder
    from hil.store import open_store

    open_store(pg_url).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hil.store import open_store; from hil.lease import this_holder;"
         f"l = open_store({pg_url!r}).lease('dev'); l.acquire(this_holder(), 10); print('held', flush=True);"
         "time.sleep(600)"],
        cwd=ROOT, env={**os.environ, "HIL_COORDINATOR": "doomed"}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with open_store(pg_url) as s:
            lease = s.lease("dev")
            assert lease.holder()["coordinator"] == "doomed"
            with pytest.raises(LeaseBusy, match="doomed"):
                lease.acquire(this_holder(), 0.3)
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            lease.acquire(this_holder(), 30)  # the server ended the dead session and its lock
            assert lease.holder()["pid"] == os.getpid()
            lease.release()
            assert lease.holder() is None
    finally:
        holder.kill()
        holder.wait()
