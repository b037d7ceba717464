"""The foundation end to end through the real CLI on the local CPU: build, resume, show, export, validate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from tests.hilcli import FAST, ROOT, assert_user_error, hil, keys_in

SPACE = ["--space", "proxyless-mobile", "--resolution", "32"]


SEQ = ["--schedule", "sequential"]


@pytest.mark.slow
def test_build_resume_show_export_validate(tmp_path):
    db = tmp_path / "hil.db"
    # --cv-threshold 9: nothing counts as noisy, so each key is measured exactly once (checkable);
    # sequential: each record is committed as soon as it is timed, so a kill lands mid-build
    args = ["lut", "build", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, *SEQ, "--cv-threshold", "9",
            "--calibration-nets", "0"]
    # 1. start a build, kill it hard once some records are committed
    proc = subprocess.Popen([sys.executable, "-m", "hil", *args, "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if db.exists() and len(keys_in(db)) >= 10:
            break
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = keys_in(db)
    assert 10 <= len(done_before) < 70
    # 2. rerun: measures only what is missing, nothing twice
    p = hil(*args, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["entries"] == 70 and out["total"] == 70
    assert out["reused"] == len(set(done_before))
    assert out["measured"] == 70 - len(set(done_before))
    all_keys = keys_in(db)
    assert sorted(all_keys) == sorted(set(all_keys)) and len(all_keys) == 70
    for field in ("entries", "measured", "reused", "wall_s", "median_cv"):
        assert field in out
    # 3. a third run reuses everything
    again = json.loads(hil(*args, "--json").stdout)
    assert again["measured"] == 0 and again["reused"] == 70

    # 4. show and export
    shown = json.loads(hil("lut", "show", "-d", "local-cpu", *SPACE, "--db", str(db), "--json").stdout)
    assert shown["entries"] == 70 and shown["fingerprint"]["runtime"]["threads"] == 1
    y = tmp_path / "lut.yaml"
    assert hil("lut", "export", "-d", "local-cpu", *SPACE, "--db", str(db), "--format", "proxyless-yaml",
               "-o", str(y)).returncode == 0
    table = yaml.safe_load(y.read_text())
    assert len(table) == 70 and set(next(iter(table.values()))) == {"count", "mean", "var"}
    assert json.loads((tmp_path / "lut.yaml.fingerprint.json").read_text())["device"] == "local-cpu"
    for fmt, name in (("csv", "lut.csv"), ("parquet", "lut.parquet")):
        assert hil("lut", "export", "-d", "local-cpu", *SPACE, "--db", str(db), "--format", fmt,
                   "-o", str(tmp_path / name)).returncode == 0
    # an export that names a folder, a resolution or a batch never built: one line, nothing written
    assert_user_error(hil("lut", "export", "-d", "local-cpu", *SPACE, "--db", str(db), "--format", "csv",
                          "-o", str(tmp_path)), "is a directory")
    assert_user_error(hil("lut", "export", "-d", "local-cpu", "--space", "proxyless-mobile", "--resolution", "64",
                          "--db", str(db), "--format", "csv", "-o", str(tmp_path / "r64.csv")), "no entry", "64")
    assert_user_error(hil("lut", "show", "-d", "local-cpu", *SPACE, "--db", str(db), "--batch", "4"),
                      "batch 4", "it has batch 1")
    assert not (tmp_path / "r64.csv").exists()
    df = pd.read_parquet(tmp_path / "lut.parquet")
    assert len(df) == 70 and (df["latency_ms"] > 0).all()
    assert df.set_index("key")["latency_ms"].to_dict() == pytest.approx(
        {k: v["mean"] for k, v in table.items()})

    # 5. calibrate + validate end to end, with the plot
    assert hil(*args[:-2], "--calibration-nets", "3").returncode == 0
    png = tmp_path / "v.png"
    p = hil("validate", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, *SEQ, "--samples", "4", "--json",
            "--plot", str(png))
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    for field in ("n", "mape", "rmspe", "rmse_ms", "within_5pct", "within_10pct", "kendall_tau"):
        assert field in v
    assert v["n"] == 4 and v["calibration"]["fitted_on"] == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the validation networks are stored measurements too (measured in three passes)
    nets = [k for k in keys_in(db) if k.startswith("network-")]
    # (each pass measures the 4 validation networks with the reference and the 3 calibration networks)
    assert len(nets) == 3 + 3 * (4 + 1 + 3)
    assert v["model"] == "stored" and v["calibration"]["version"] == 1
    assert v["reanchored_in_session"]["n"] == 4 and len(v["session_calibration"]) == 3
    assert -1 <= v["repeatability"]["kendall_tau"] <= 1
    assert v["speedup"]["n"] == 4 and v["speedup"]["reference_chosen"] == "named by the space"

    # 6. anchor: a new calibration version, the build's kept; show lists both; the newest is used
    p = hil("lut", "anchor", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, *SEQ, "--json")
    assert p.returncode == 0, p.stderr
    a = json.loads(p.stdout)
    assert (a["previous"]["version"], a["calibration"]["version"], a["calibration"]["kind"]) == (1, 2, "anchor")
    assert a["calibration"]["drift_reference"]["latency_ms"] > 0
    shown = json.loads(hil("lut", "show", "-d", "local-cpu", *SPACE, "--db", str(db), "--json").stdout)
    assert [(c["version"], c["kind"]) for c in shown["calibrations"]] == [(1, "build"), (2, "anchor")]
    text = hil("lut", "show", "-d", "local-cpu", *SPACE, "--db", str(db)).stdout
    assert "calibration v2 (anchor" in text and "<- used" in text.splitlines()[2]

    # 7. speedup of a candidate over ProxylessNAS-Mobile, both measured in one session
    # ProxylessNAS-Mobile with its last block made cheaper (a network within the calibration's range:
    # a 3-network fit at this toy resolution extrapolates badly)
    from hil.lut_builder.spaces.proxyless import PROXYLESS_MOBILE

    ops = ",".join([*PROXYLESS_MOBILE[:-1], "3x3_MBConv3"])
    p = hil("speedup", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, *SEQ, "--base", "reference",
            "--candidate", ops, "--json")
    assert p.returncode == 0, p.stderr
    sp = json.loads(p.stdout)
    assert sp["measured_speedup"] > 0 and sp["predicted_speedup"] > 0 and sp["candidate"]["from"] == "op list"
    sess = [r for r in records(db) if r["metrics"].get("session") == sp["session"]]
    assert sorted(r["key"] for r in sess) == sorted([sp["base"]["network"], sp["candidate"]["network"]])


def records(db) -> list[dict]:
    from hil.store import SqliteStore

    store = SqliteStore(str(db))
    try:
        return [m.to_json() for c in store.classes("local-cpu") for m in store.attempts(c.fp_class)]
    finally:
        store.close()


@pytest.mark.slow
def test_interleaved_build_and_validation_time_each_request_as_one_slice(tmp_path):
    db = tmp_path / "hil.db"
    # --min-run 0.5: the grouping the build asked for is the one its records' class carries (and validation
    # must ask for the same to find the LUT); --slice-time 3600: one slice however slow the machine
    build = hil("lut", "build", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, "--max-attempts", "1",
                "--calibration-nets", "3", "--min-run", "0.5", "--slice-time", "3600", "--json")
    assert build.returncode == 0, build.stderr
    p = hil("validate", "-d", "local-cpu", *SPACE, "--db", str(db), *FAST, "--max-attempts", "1",
            "--samples", "3", "--min-run", "0.5", "--json")
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    recs = [r for r in records(db) if r["ok"] and not r["key"].startswith("drift:")]
    assert {r["fingerprint"]["class"]["protocol"]["schedule"] for r in recs} == {"interleaved"}
    blocks = [r for r in recs if not r["key"].startswith("network-")]
    assert len(blocks) == 70 and {r["metrics"]["slice_size"] for r in blocks} == {70}
    assert {r["fingerprint"]["class"]["protocol"]["min_run_ms"] for r in blocks} == {0.5}
    # the build's level workloads were timed in its slice, and every block carries their medians there
    from hil.lut_builder.build import level_workloads
    from hil.lut_builder.spaces import make_space

    levels = {w.key for w in level_workloads(make_space("proxyless-mobile", resolution=32).workloads())}
    assert len(levels) == 3 and {r["key"] for r in blocks} >= levels
    assert all(set(r["metrics"]["slice"]["level_ms"]) == levels for r in blocks)
    assert len({r["metrics"]["slice"]["id"] for r in blocks}) == 1
    # the build's calibration session of whole networks is not leveled
    assert not [r for r in recs if r["key"].startswith("network-") and "slice" in r["metrics"]]
    # each validation pass: the 3 networks, the reference network, the 3 calibration networks and the
    # drift reference in one session
    passes = [r for r in records(db) if r["ok"] and "validation_pass" in r["metrics"]]
    assert sorted(r["metrics"]["validation_pass"] for r in passes) == [0] * 8 + [1] * 8 + [2] * 8
    assert {r["metrics"]["slice_size"] for r in passes} == {8}
    assert len({r["metrics"]["session"] for r in passes}) == 3
    assert len(v["session_calibration"]) == 3 and v["n"] == 3


def test_bad_inputs_are_one_line_errors_and_leave_the_store_alone(tmp_path):
    db = tmp_path / "keep.db"
    inv_bad = tmp_path / "bad.yaml"
    inv_bad.write_text("devices:\n  local-cpu: {backend: torch-cpu\n")
    build = ["lut", "build", *SPACE, "--db", str(db), *FAST]
    assert_user_error(hil(*build, "-d", "local-cpu", "--inventory", str(inv_bad)), "bad.yaml", "malformed YAML")
    assert_user_error(hil(*build, "-d", "phone-9"), "unknown device 'phone-9'")
    assert_user_error(hil("lut", "build", "-d", "local-cpu", "--space", "nope", "--db", str(db)),
                      "unknown search space 'nope'")
    assert_user_error(hil("lut", "build", "-d", "local-cpu", "--space", "proxyless-mobile", "--resolution",
                          "-5", "--db", str(db)), "resolution")
    assert_user_error(hil(*build, "-d", "local-cpu", "--min-run", "-1"), "--min-run", "-1")
    assert not db.exists()  # nothing created by failed commands
    text = tmp_path / "text.db"
    text.write_text("not a database " * 200)
    before = text.read_bytes()
    assert_user_error(hil(*build, "-d", "local-cpu", "--db", str(text)), "text.db")
    assert text.read_bytes() == before
    assert_user_error(hil("lut", "show", "-d", "local-cpu", *SPACE, "--db", str(tmp_path / "empty.db")),
                      "empty.db", "no such file")
    assert_user_error(hil("speedup", "-d", "local-cpu", *SPACE, "--db", str(db), "--base", "reference",
                          "--candidate", "3x3_MBConv3,zero"), "--candidate", "21 block choices")
    assert_user_error(hil("speedup", "-d", "local-cpu", *SPACE, "--db", str(db), "--base", "nope.safetensors",
                          "--candidate", "reference"), "--base", "nope.safetensors")
    assert not db.exists()


def test_a_batch_too_large_for_this_host_is_refused_before_measuring(tmp_path):
    db = tmp_path / "hil.db"
    p = hil("lut", "build", "-d", "local-cpu", "--space", "proxyless-mobile", "--resolution", "224",
            "--batch", "100000", "--db", str(db), *FAST)
    assert_user_error(p, "local-cpu", "batch 100000", "GiB", "lower --batch")
    assert not db.exists()
