import json

import pytest

from hil.errors import ConfigError
from hil.inventory import inventory_schema, load_inventory
from tests.hilcli import INVENTORY


def write(tmp_path, text):
    p = tmp_path / "inv.yaml"
    p.write_text(text)
    return p


def test_shipped_inventory_is_valid():
    inv = load_inventory(INVENTORY)
    assert inv.device("local-cpu").backend == "torch-cpu"


def test_unknown_key_names_file_device_and_field(tmp_path):
    p = write(tmp_path, "devices:\n  cpu0:\n    backend: torch-cpu\n    thread: 2\n")
    with pytest.raises(ConfigError) as e:
        load_inventory(p)
    msg = str(e.value)
    assert str(p) in msg and "'cpu0'" in msg and "'thread'" in msg and "unknown key" in msg


def test_bad_value_names_field(tmp_path):
    p = write(tmp_path, "devices:\n  x:\n    backend: torch-cpu\n    ssh: {host: h, user: u, port: seventy}\n")
    with pytest.raises(ConfigError, match=r"device 'x', field 'ssh.port'"):
        load_inventory(p)


def test_backend_sections_are_checked(tmp_path):
    p = write(tmp_path, "devices:\n  sim:\n    backend: rtl-sim\n")
    with pytest.raises(ConfigError, match="rtl"):
        load_inventory(p)


def test_malformed_yaml_gives_line(tmp_path):
    p = write(tmp_path, "devices:\n  x: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_inventory(p)


def test_unknown_device_lists_known():
    inv = load_inventory(INVENTORY)
    with pytest.raises(ConfigError, match=r"unknown device 'nope'.*local-cpu"):
        inv.device("nope")


def test_substitute_must_exist(tmp_path):
    p = write(tmp_path, "devices:\n  a:\n    backend: torch-cpu\n    substitute: ghost\n")
    with pytest.raises(ConfigError, match="ghost"):
        load_inventory(p)


def test_schema_is_json_schema():
    s = json.loads(inventory_schema())
    assert "devices" in s["properties"] and "$defs" in s
