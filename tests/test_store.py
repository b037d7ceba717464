import sqlite3
import time

import pytest

from hil.errors import StoreError
from hil.measure import Measurement, summarize
from hil.store import SCHEMA_VERSION, Store, open_store
from hil.target import fingerprint_class

FP = {"class": {"device": "d", "batch": 1}, "state": {"cur_freq_khz": 1}}


def rec(key: str, xs: list[float], noisy: bool = False, ok: bool = True, kind: str = "") -> Measurement:
    st = summarize(xs) if ok else None
    return Measurement("d", key, {"kind": "x"}, FP, "measured", st, ok=ok, noisy=noisy, error_kind=kind,
                       created_at=time.time())


def test_lut_accepts_clean_latest_and_keeps_every_attempt(tmp_path):
    s = Store(tmp_path / "s.db")
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


def test_missing_respects_attempts_and_unsupported(tmp_path):
    s = Store(tmp_path / "s.db")
    cls = fingerprint_class(FP)
    s.add(rec("clean", [1.0]))
    s.add(rec("noisy", [1.0, 3.0], noisy=True))
    s.add(rec("failed", [], ok=False, kind="run_error"))
    s.add(rec("unsup", [], ok=False, kind="unsupported"))
    keys = ["clean", "noisy", "failed", "unsup", "new"]
    assert s.missing(cls, keys, max_attempts=3) == ["noisy", "failed", "new"]
    assert s.missing(cls, keys, max_attempts=1) == ["failed", "new"]


def test_records_survive_reopen_and_fingerprint_is_kept(tmp_path):
    p = tmp_path / "s.db"
    with Store(p) as s:
        s.add(rec("a", [1.0, 1.2]))
    with open_store(str(p)) as s:
        (m,) = list(s.attempts(fingerprint_class(FP)))
        assert m.fingerprint["class"] == FP["class"] and m.stats.n == 2
        assert s.classes("d")[0].entries == 1


def test_not_a_database_is_a_clear_error_and_file_untouched(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("hello, I am not a database\n" * 100)
    before = p.read_bytes()
    with pytest.raises(StoreError, match=r"notes\.db"):
        Store(p)
    assert p.read_bytes() == before


def test_foreign_sqlite_and_wrong_schema_are_refused(tmp_path):
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a hil store"):
        Store(p)
    q = tmp_path / "old.db"
    Store(q).close()
    con = sqlite3.connect(q)
    con.execute("UPDATE meta SET value=? WHERE name='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="schema version"):
        Store(q)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "nope" / "s.db")
