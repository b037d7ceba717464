"""Property-based fuzzing of what users hand to hil: inventories, command lines, checkpoints, stores.

The property everywhere: the command succeeds, or it exits non-zero with one line that names the
culprit — never a traceback, and never a changed store. The commands run in-process (`hil.cli.main`)
so hundreds of cases fit in CI; the device they may reach is an SSH host on a closed loopback port,
so nothing is ever measured for long.

Profiles: `ci` (default; fixed seed, small) and `long` (HIL_FUZZ_PROFILE=long, random, large) —
`benchmarks/fuzz_long.sh` runs the long one; docs/HARDENING.md records what it tried.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sqlite3
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hil.cli import build_parser, main
from hil.errors import HilError
from hil.inventory import load_inventory
from hil.store import open_store

LONG = os.environ.get("HIL_FUZZ_PROFILE") == "long"


def fuzz(ci: int, long: int) -> Any:
    return settings(max_examples=long if LONG else ci, derandomize=not LONG, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def run(argv: list[str]) -> tuple[int, str, str]:
    """`hil ARGV` in this process: (exit code, stdout, stderr). Any exception but SystemExit escapes,
    which is what a traceback is."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: usage, then one error line
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_clean_outcome(code: int, err: str, *culprits: str, out: str = "") -> None:
    """Success, or exit != 0 with one error line (argparse's usage lines may precede its own) that
    names one of `culprits`. A report that says what failed (`hil farm check`'s table) may stand on
    stdout instead."""
    if code == 0:
        return
    assert "Traceback" not in err + out, err + out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if not lines and out.strip():
        return
    assert lines, "failed without a word"
    if lines[0].startswith("usage:"):  # argparse names the argument itself
        assert lines[-1].startswith("hil") and ": error: " in lines[-1], err
        return
    assert len(lines) == 1 and lines[0].startswith("hil: error: "), err
    if culprits:
        assert any(c in lines[0] for c in culprits), (culprits, lines[0])


def dump(db: Path) -> list[str]:
    """The store's logical content (a byte compare would see WAL checkpoints)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(con.iterdump())
    finally:
        con.close()


# -- inventories -------------------------------------------------------------------------------

NAMES = st.text(alphabet=string.ascii_letters + string.digits + "-_ .é$;", min_size=0, max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20))
FIELDS = {
    "backend": st.one_of(st.sampled_from(["torch-cpu", "torch-cuda", "tflite", "rtl-sim", "pynq"]), SCALARS),
    "threads": st.one_of(st.integers(-3, 300), SCALARS),
    "batch": st.one_of(st.integers(-3, 10**9), SCALARS),
    "cpus": st.one_of(st.lists(st.integers(-2, 4096), max_size=5), SCALARS),
    "precision": st.one_of(st.sampled_from(["float32", "float16", "int8", "int4"]), SCALARS),
    "clock": st.one_of(st.sampled_from(["wall", "thread", "cpu"]), SCALARS),
    "substitute": st.one_of(NAMES, SCALARS),
    "lease_timeout_s": st.one_of(st.floats(-1, 1e9), SCALARS),
    "rtl": st.one_of(st.fixed_dictionaries({"accelerator": st.sampled_from(
        ["bismo-edge", "bismo-cloud", "bitfusion-spatial", "tpu"])}, optional={
        "workers": st.integers(-1, 100), "overrides": st.dictionaries(NAMES, SCALARS, max_size=3),
        "color": SCALARS}), SCALARS),
    "ssh": st.one_of(st.fixed_dictionaries({"host": st.sampled_from(["127.0.0.1", "h", ""]),
                                            "user": st.sampled_from(["u", "root", ""])}, optional={
        "port": st.integers(-5, 70000), "python": st.sampled_from(
            ["python3", "/usr/bin/python3", "py;rm -rf /", "$(id)", "~/v/bin/python", "a b", "../py"]),
        "workdir": st.sampled_from(["~", "~/x", "/tmp/../etc", "/ok/path", "a`b`"]),
        "jump": st.fixed_dictionaries({"host": st.just("j"), "user": st.just("u")}),
        "connect_timeout_s": st.floats(-1, 100), "extra": SCALARS}), SCALARS),
    "bogus_key": SCALARS,
}
DEVICE = st.fixed_dictionaries({}, optional=FIELDS)
INVENTORY = st.one_of(
    st.fixed_dictionaries({"devices": st.dictionaries(NAMES, st.one_of(DEVICE, SCALARS), max_size=4)},
                          optional={"version": st.one_of(st.just(1), SCALARS), "other": SCALARS}),
    SCALARS, st.lists(SCALARS, max_size=3),
)


def _yaml_text(data: Any, trick: str) -> str:
    text = yaml.safe_dump(data, allow_unicode=True, default_flow_style=False)
    if trick == "duplicate" and "devices:\n" in text:
        twice = "  twice:\n    backend: torch-cpu\n  twice:\n    backend: tflite\n"
        text = text.replace("devices:\n", "devices:\n" + twice, 1)
    elif trick == "anchor":
        text = "base: &b {backend: torch-cpu}\n" + text.replace("devices:\n", "devices:\n  alias: *b\n", 1)
    elif trick == "tab":
        text = text.replace("  ", "\t", 1)
    return text


@fuzz(ci=150, long=3000)
@given(data=INVENTORY, trick=st.sampled_from(["", "duplicate", "anchor", "tab"]),
       encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]), junk=st.binary(max_size=8))
def test_fuzz_inventories(tmp_path_factory: pytest.TempPathFactory, data: Any, trick: str, encoding: str,
                          junk: bytes) -> None:
    p = tmp_path_factory.mktemp("inv") / "inventory.yaml"
    raw = _yaml_text(data, trick).encode(encoding, errors="replace")
    p.write_bytes(raw + junk if junk and junk[0] % 3 == 0 else raw)
    try:
        load_inventory(p)  # the library call: a HilError or an Inventory, nothing else
    except HilError as e:
        assert str(p) in str(e)
    code, _, err = run(["inventory", "check", "--inventory", str(p)])
    assert_clean_outcome(code, err, str(p))


# -- command lines -----------------------------------------------------------------------------

NASTY = ["", "0", "-1", "1", "3", "16", "1e309", "nan", "inf", "-0.5", "9" * 25, "x", "../..", "/", "/dev/null",
         "a;b", "$(id)", "`id`", "ünï", "2..8", "0..9", "8,8", "9,9", "4,2,4", "512,2048,512", "0,0,0",
         "20000,20000,20000", "1,1,1", "far", "nope", "local-cpu", "proxyless-mobile", "mobilenet-v1-layers",
         "mobilenet-v2", "csv", "proxyless-yaml", "parquet", "wall", "sequential", "-d", "--json", "\t"]


def _commands(parser: argparse.ArgumentParser,
              path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable (sub)command of the parser: its words and its own parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: parser}
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for name, child in subs[0].choices.items():
        out.update(_commands(child, (*path, name)))
    return out


COMMANDS = _commands(build_parser())
# Commands that run real work when their arguments are valid: each gets a setting appended that makes
# it fail fast instead (train reads a missing data set; everything else reaches only `far`).
SAFETY = {("train",): ["--data-dir", "/nonexistent/fashion-mnist"]}


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    words = draw(st.sampled_from(sorted(COMMANDS)))
    parser = COMMANDS[words]
    argv = list(words)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not draw(st.booleans()):
            continue
        value = [draw(st.sampled_from(NASTY))] if action.nargs != 0 else []
        if action.option_strings:
            argv += [draw(st.sampled_from(action.option_strings)), *value]
        else:
            argv += value or [draw(st.sampled_from(NASTY))]
    return argv


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    inv = d / "inventory.yaml"
    inv.write_text("devices:\n  far:\n    backend: torch-cpu\n"
                   "    ssh: {host: 127.0.0.1, port: 1, user: nobody, connect_timeout_s: 0.5,"
                   f" known_hosts: {d / 'known_hosts'}}}\n")
    (d / "known_hosts").write_text("")
    db = d / "hil.db"
    open_store(str(db)).close()
    return {"dir": d, "inventory": inv, "db": db}


@fuzz(ci=120, long=3000)
@given(argv=argvs())
def test_fuzz_command_lines(sandbox: dict[str, Path], argv: list[str]) -> None:
    words = next(c for c in sorted(COMMANDS, key=len, reverse=True) if tuple(argv[: len(c)]) == c)
    parser = COMMANDS[words]
    tail = []
    opts = {s for a in parser._actions for s in a.option_strings}
    if "--inventory" in opts:
        tail += ["--inventory", str(sandbox["inventory"])]
    if "--db" in opts:
        tail += ["--db", str(sandbox["db"])]
    tail += SAFETY.get(words, [])
    before = dump(sandbox["db"])
    cwd = os.getcwd()
    os.chdir(sandbox["dir"])  # relative outputs (checkpoints, exports) land in the sandbox
    try:
        code, out, err = run([*argv, *tail])
    finally:
        os.chdir(cwd)
    assert_clean_outcome(code, err, out=out)
    if code != 0:
        assert dump(sandbox["db"]) == before, f"a failed `hil {' '.join(argv)}` changed the store"


# -- checkpoints -------------------------------------------------------------------------------


@fuzz(ci=60, long=2000)
@given(blob=st.one_of(st.binary(max_size=512), st.builds(
    lambda n, head: n.to_bytes(8, "little") + head,
    st.integers(0, 2**64 - 1), st.binary(max_size=256)), st.builds(
    lambda meta: _safetensors_with(meta), st.one_of(SCALARS, st.dictionaries(st.text(max_size=8), SCALARS)))))
def test_fuzz_checkpoints(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    from hil.optimizers.train import CheckpointError, load_model

    p = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    p.write_bytes(blob)
    with contextlib.suppress(CheckpointError):
        load_model(p)


def _safetensors_with(meta: Any) -> bytes:
    header = {"__metadata__": {"format": "hil-checkpoint/1", "hil": json.dumps(meta)},
              "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + b"\0\0\0\0"


# -- stores ------------------------------------------------------------------------------------


def _valid_store_bytes(tmp: Path) -> bytes:
    db = tmp / "seed.db"
    open_store(str(db)).close()
    return db.read_bytes()


@fuzz(ci=60, long=2000)
# found by the long profile: an integrity report over lines, and one quoting bytes that are not UTF-8
@example(cut=36865, flips=[], raw=b"")
@example(cut=36865, flips=[(3632, 128)], raw=b"")
@given(cut=st.integers(0, 1 << 16), flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)),
                                                   max_size=6), raw=st.binary(max_size=64))
def test_fuzz_store_files(tmp_path_factory: pytest.TempPathFactory, cut: int, flips: list[tuple[int, int]],
                          raw: bytes) -> None:
    d = tmp_path_factory.mktemp("store")
    data = bytearray(_valid_store_bytes(d)[: max(cut, 1)] if cut else raw)
    for at, x in flips:
        if data:
            data[at % len(data)] ^= x
    db = d / "hil.db"
    db.write_bytes(bytes(data))
    for argv in (["lut", "show", "--device", "far", "--space", "proxyless-mobile", "--db", str(db)],
                 ["lut", "export", "--device", "far", "--space", "proxyless-mobile", "--format", "csv",
                  "-o", str(d / "out.csv"), "--db", str(db)]):
        code, _, err = run(argv)
        assert_clean_outcome(code, err, str(db))
        assert db.read_bytes() == bytes(data), "reading a store changed its file"
