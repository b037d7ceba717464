"""A device that can't be reached is replaced by its substitute when that is allowed, and the records
say so; without permission its absence is one error line."""

import socket

import pytest

from hil.devices.host.targets import open_target
from hil.errors import ConfigError
from hil.inventory import parse_inventory
from hil.lut_builder.build import build_devices
from hil.lut_builder.spaces import make_space
from hil.measure import MeasureSettings
from hil.store import SqliteStore


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_absent_device_falls_back_to_its_substitute(tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    inv = parse_inventory({"devices": {
        "board": {"backend": "torch-cpu", "substitute": "cpu",
                  "ssh": {"host": "127.0.0.1", "port": closed_port(), "user": "nobody", "known_hosts": str(kh),
                          "connect_timeout_s": 2}},
        "cpu": {"backend": "torch-cpu"},
    }}, "test")
    notes: list[str] = []
    with pytest.raises(ConfigError, match="--allow-substitute"):
        open_target(inv, "board", notes.append)
    assert not notes
    t = open_target(inv, "board", notes.append, allow_substitute=True)
    assert t.name == "cpu" and t.substitute_for == "board"
    assert "board" in notes[0] and "'cpu' stands in" in notes[0]
    store = SqliteStore(tmp_path / "s.db")
    fast = MeasureSettings(min_repeats=3, min_time_s=0.0, warmup_runs=1, warmup_s=0.0, cv_threshold=9)
    space = make_space("proxyless-mobile", resolution=16)
    (res,) = build_devices(store, {"board": lambda: open_target(inv, "board", notes.append, allow_substitute=True)},
                           space,
                           lambda n: fast)
    assert res.status == "ok" and res.substituted_by == "cpu"
    assert {c.device for c in store.classes()} == {"cpu"}  # nothing recorded under the board's name
