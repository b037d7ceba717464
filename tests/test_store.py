"""The store contract, on both engines: SQLite (a file) and PostgreSQL (a private server,
tests/pgserver.py). Tests taking `store_url` run once per engine with the same cases; the rest are
about one engine's own failure modes."""

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from hil.errors import StoreError
from hil.measure import Measurement, summarize
from hil.store import SCHEMA_VERSION, SqliteStore, is_postgres_url, open_store
from hil.target import fingerprint_class

FP = {"class": {"device": "d", "batch": 1}, "state": {"cur_freq_khz": 1}}


def rec(key: str, xs: list[float], noisy: bool = False, ok: bool = True, kind: str = "") -> Measurement:
    st = summarize(xs) if ok else None
    return Measurement("d", key, {"kind": "x"}, FP, "measured", st, ok=ok, noisy=noisy, error_kind=kind,
                       created_at=time.time())


def raw(url: str, *statements: str) -> list[tuple]:
    """Run SQL on a store's database behind hil's back (to damage or age it); the last result's rows."""
    rows: list[tuple] = []
    if is_postgres_url(url):
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            for stmt in statements:
                cur = db.execute(stmt)
                rows = cur.fetchall() if cur.description else []
        return rows
    con = sqlite3.connect(url)
    try:
        for stmt in statements:
            rows = con.execute(stmt).fetchall()
        con.commit()
    finally:
        con.close()
    return rows


def test_lut_accepts_clean_latest_and_keeps_every_attempt(store_url):
    s = open_store(store_url)
    cls = fingerprint_class(FP)
    s.add(rec("a", [1.0, 1.0], noisy=True))
    s.add(rec("a", [2.0, 2.0]))
    s.add(rec("a", [3.0, 3.0], noisy=True))
    s.add(rec("b", [5.0, 9.0], noisy=True))
    s.add(rec("b", [4.0, 5.0], noisy=True))
    s.add(rec("c", [8.0, 8.2], noisy=True))  # the steadiest, but the host was slow then
    s.add(rec("c", [3.0, 5.0], noisy=True))
    s.add(rec("c", [5.0, 7.0], noisy=True))
    lut = s.lut(cls)
    assert lut["a"].latency_ms == 2.0  # the clean one beats later noisy ones
    assert lut["b"].latency_ms == 4.5 and lut["b"].noisy  # all noisy: the median attempt (lower middle of 2)
    assert lut["c"].latency_ms == 6.0 and lut["c"].noisy  # the median of 4.0, 6.0, 8.1, not the lowest CV
    assert len(list(s.attempts(cls))) == 8
    s.close()


def test_missing_respects_attempts_and_unsupported(store_url):
    s = open_store(store_url)
    cls = fingerprint_class(FP)
    s.add(rec("clean", [1.0]))
    s.add(rec("noisy", [1.0, 3.0], noisy=True))
    s.add(rec("failed", [], ok=False, kind="run_error"))
    s.add(rec("unsup", [], ok=False, kind="unsupported"))
    keys = ["clean", "noisy", "failed", "unsup", "new"]
    assert s.missing(cls, keys, max_attempts=3) == ["noisy", "failed", "new"]
    assert s.missing(cls, keys, max_attempts=1) == ["failed", "new"]
    s.close()


def test_records_survive_reopen_and_fingerprint_is_kept(store_url):
    with open_store(store_url) as s:
        s.add(rec("a", [1.0, 1.2]))
    with open_store(store_url) as s:
        (m,) = list(s.attempts(fingerprint_class(FP)))
        assert m.fingerprint["class"] == FP["class"] and m.stats.n == 2
        assert s.classes("d")[0].entries == 1


def test_the_database_itself_refuses_a_second_accepted_entry(store_url):
    with open_store(store_url) as s:
        s.add(rec("a", [1.0]))
        s.add(rec("a", [2.0]))
    assert raw(store_url, "SELECT COUNT(*) FROM measurements WHERE key = 'a' AND accepted = 1") == [(1,)]
    with pytest.raises(Exception, match=r"(?i)unique"):
        raw(store_url, "UPDATE measurements SET accepted = 1 WHERE key = 'a'")
    with open_store(store_url, readonly=True) as s:
        assert s.lut(fingerprint_class(FP))["a"].latency_ms == 2.0


def test_concurrent_writers_of_one_key_leave_one_accepted_entry(store_url):
    open_store(store_url).close()
    stores = [open_store(store_url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(s) -> None:
        try:
            for i in range(10):
                s.add(rec("k", [1.0 + i, 1.0 + i]))
        except BaseException as e:  # reported below: a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert not errors, errors
    assert raw(store_url, "SELECT COUNT(*), SUM(accepted) FROM measurements WHERE key = 'k'") == [(40, 1)]
    newest = raw(store_url, "SELECT accepted FROM measurements WHERE key = 'k' ORDER BY created_at DESC, id DESC")
    assert newest[0] == (1,)


def test_foreign_database_and_wrong_schema_are_refused(store_url, tmp_path):
    raw(store_url, "CREATE TABLE t (x INTEGER)")
    with pytest.raises(StoreError, match="not a hil store"):
        open_store(store_url)
    raw(store_url, "DROP TABLE t")
    open_store(store_url).close()
    raw(store_url, f"UPDATE meta SET value='{SCHEMA_VERSION + 1}' WHERE name='schema_version'")
    with pytest.raises(StoreError, match=r"schema version .*newer hil"):
        open_store(store_url)


def test_a_schema_2_store_is_migrated_keeping_every_record(store_url):
    with open_store(store_url) as s:
        s.add(rec("a", [1.0], noisy=True))
        s.add(rec("a", [2.0]))
        s.add(rec("b", [3.0, 4.0], noisy=True))
        s.add(rec("b", [5.0, 6.0], noisy=True))
        s.add(rec("b", [7.0, 8.0], noisy=True))
        s.save_model(fingerprint_class(FP), "m", {"scale": 1.0}, 1.0)
    # back to the shape schema 2 had: no accepted flag, provenance or uids
    raw(store_url, "DROP INDEX measurements_accepted", "DROP INDEX measurements_uid", "DROP INDEX model_versions_uid",
        *[f"ALTER TABLE measurements DROP COLUMN {c}" for c in ("accepted", "coordinator", "host", "uid")],
        "ALTER TABLE model_versions DROP COLUMN uid", "UPDATE meta SET value = '2' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="older hil"):
        open_store(store_url, readonly=True)
    with open_store(store_url) as s:
        lut = s.lut(fingerprint_class(FP))
        assert lut["a"].latency_ms == 2.0 and lut["b"].latency_ms == 5.5 and lut["b"].noisy
        assert len(list(s.attempts(fingerprint_class(FP)))) == 5
        assert s.model_versions(fingerprint_class(FP), "m")[0].params == {"scale": 1.0}
    assert raw(store_url, "SELECT value FROM meta WHERE name = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert raw(store_url, "SELECT COUNT(DISTINCT uid) FROM measurements") == [(5,)]


def test_read_only_opening_never_changes_a_store(store_url):
    with open_store(store_url) as s:
        s.add(rec("a", [1.0]))
    before = raw(store_url, "SELECT * FROM measurements ORDER BY id")
    with open_store(store_url, readonly=True) as s:
        assert len(s.lut(fingerprint_class(FP))) == 1
        with pytest.raises(Exception):  # noqa: B017 - either engine's own read-only error
            s.add(rec("b", [1.0]))
    assert raw(store_url, "SELECT * FROM measurements ORDER BY id") == before


def test_not_a_database_is_a_clear_error_and_file_untouched(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("hello, I am not a database\n" * 100)
    before = p.read_bytes()
    with pytest.raises(StoreError, match=r"notes\.db"):
        SqliteStore(p)
    assert p.read_bytes() == before


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        SqliteStore(tmp_path / "nope" / "s.db")


def _store_with_records(tmp_path, n=300):
    db = tmp_path / "hil.db"
    with SqliteStore(db) as s:
        for i in range(n):
            s.add(rec(f"k{i:04d}", [1.0 + i / 100, 1.1 + i / 100, 1.05 + i / 100]))
    return db


def test_a_store_with_damaged_pages_is_refused_at_open_and_left_as_it_was(tmp_path):
    db = _store_with_records(tmp_path)
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for k in range(2, len(data) // page):  # scribble over the b-tree page headers of the tables
        data[k * page] = 0xFF
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"damaged.*recover"):
        SqliteStore(db)
    assert db.read_bytes() == bytes(data)


def test_read_only_opening_never_creates_or_changes_a_store(tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        open_store(str(tmp_path / "none.db"), readonly=True)
    assert not (tmp_path / "none.db").exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="empty database"):
        open_store(str(empty), readonly=True)
    assert empty.read_bytes() == b""
    db = _store_with_records(tmp_path, 3)
    before = db.read_bytes()
    with open_store(str(db), readonly=True) as s:
        assert len(s.lut(s.classes("d")[0].fp_class)) == 3
    assert db.read_bytes() == before


def test_a_store_this_user_cannot_write_is_refused_before_measuring(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from tests.hilcli import FAST, ROOT

    setpriv = shutil.which("setpriv")
    if os.getuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run hil as an unprivileged user")
    folder = Path(tempfile.mkdtemp(prefix="hil-ro-"))
    try:
        folder.chmod(0o755)
        db = folder / "hil.db"
        SqliteStore(db).close()
        db.chmod(0o444)
        before = db.read_bytes()
        p = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                            "hil", "lut", "build", "-d", "local-cpu", "--space", "proxyless-mobile",
                            "--resolution", "32", "--db", str(db), *FAST], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, env={**os.environ, "HOME": str(folder)})
        if "Permission denied" in p.stderr and "hil" not in p.stderr.splitlines()[-1]:
            pytest.skip(f"user nobody cannot run this checkout's Python: {p.stderr.strip()[:200]}")
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        assert "cannot be written" in p.stderr and str(db) in p.stderr
        assert db.read_bytes() == before
    finally:
        shutil.rmtree(folder, ignore_errors=True)
