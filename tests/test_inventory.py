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


# -- input a hostile or careless user gives (issue 13) -------------------------------------------


@pytest.mark.parametrize("text, words", [
    ("devices:\n  a:\n    backend: torch-cpu\n  a:\n    backend: torch-cuda\n", ["duplicate key 'a'", "line 2"]),
    ("devices:\n  a:\n    backend: torch-cpu\n    threads: 2\n    threads: 4\n", ["duplicate key 'threads'"]),
    ("devices:\n  a: &d {backend: torch-cpu}\n  b:\n    <<: *d\n    threads: 2\n", None),  # merge is fine
    ("devices:\n  ? [a, b]\n  : {backend: torch-cpu}\n", ["plain value"]),
])
def test_yaml_keys_given_twice_are_errors(tmp_path, text, words):
    p = write(tmp_path, text)
    if words is None:
        assert load_inventory(p).devices["b"].threads == 2
        return
    with pytest.raises(ConfigError) as e:
        load_inventory(p)
    assert str(p) in str(e.value)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("data, words", [
    (b"devices:\n  a:\n    backend: torch-cpu\n    description: caf\xe9\n", ["not UTF-8", "0xe9", "offset 57"]),
    (bytes(range(256)), ["not UTF-8"]),
    (b"\x00\x01\x02devices: {}", ["malformed YAML"]),
])
def test_a_file_that_is_not_utf8_text_is_named(tmp_path, data, words):
    p = tmp_path / "inv.yaml"
    p.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        load_inventory(p)
    assert str(p) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_a_directory_or_a_huge_file_is_not_an_inventory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_inventory(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text("devices: {}\n" + "#" * (1 << 20))
    with pytest.raises(ConfigError, match="too large"):
        load_inventory(big)


@pytest.mark.parametrize("field, value", [
    ("python", "python3; rm -rf ~"), ("python", "$(reboot)"), ("python", "~/bin/py thon"),
    ("python", "/usr/bin/../../bin/sh"), ("workdir", "/tmp/x`id`"), ("workdir", "~/../../etc"),
])
def test_ssh_fields_a_shell_could_read_more_into_are_refused_at_check(tmp_path, field, value):
    p = write(tmp_path, "devices:\n  r:\n    backend: torch-cpu\n"
                        f"    ssh: {{host: h, user: u, {field}: {json.dumps(value)}}}\n")
    with pytest.raises(ConfigError) as e:
        load_inventory(p)
    assert "'r'" in str(e.value) and f"ssh.{field}" in str(e.value) and value in str(e.value)


@pytest.mark.parametrize("field, value", [("python", "python3.11"), ("python", "~/venv/bin/python"),
                                          ("python", "/opt/py/bin/python3"), ("workdir", "~"),
                                          ("workdir", "/data/hil-agent")])
def test_plain_ssh_fields_pass(tmp_path, field, value):
    p = write(tmp_path, f"devices:\n  r:\n    backend: torch-cpu\n    ssh: {{host: h, user: u, {field}: '{value}'}}\n")
    assert getattr(load_inventory(p).devices["r"].ssh, field) == value


@pytest.mark.parametrize("rtl, words", [
    ("{accelerator: tpu-v9}", ["unknown accelerator configuration 'tpu-v9'"]),
    ("{accelerator: bismo-edge, overrides: {warp: 3}}", ["no parameter 'warp'", "known:"]),
    ("{accelerator: bismo-edge, overrides: {dm: 7}}", ["bismo-edge"]),
    ("{accelerator: bitfusion-spatial, overrides: {rows: 12}}", ["powers of 2"]),
])
def test_inventory_check_applies_the_accelerator_rules_opening_applies(tmp_path, rtl, words):
    from tests.hilcli import assert_user_error, hil

    p = write(tmp_path, f"devices:\n  sim:\n    backend: rtl-sim\n    rtl: {rtl}\n")
    assert_user_error(hil("inventory", "check", "--inventory", str(p)), str(p), "'sim'", "field 'rtl'", *words)


def test_an_accelerator_override_reaches_the_configuration(tmp_path):
    from hil.devices.host.targets import check_device_config
    from hil.rtl.presets import preset_config

    p = write(tmp_path, "devices:\n  sim:\n    backend: rtl-sim\n"
                        "    rtl: {accelerator: bismo-edge, overrides: {dram_latency: 50}}\n")
    dev = load_inventory(p).device("sim")
    check_device_config("sim", dev)
    assert preset_config("bismo-edge", dev.rtl.overrides).dram_latency == 50
