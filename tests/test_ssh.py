"""SSH transport and remote agent against real OpenSSH servers on loopback (tests/sshd.py).

Refusals (unknown / changed host key, wrong user key, unreachable port, no torch) must each be a
clear error naming the device; nothing from a device name or a workload may reach a shell.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest
import yaml

from hil.cli import main
from hil.devices.host.agent_bundle import make_bundle
from hil.devices.host.ssh_target import SshTarget
from hil.devices.host.ssh_transport import (
    HostKeyChangedError,
    HostKeyUnknownError,
    connect,
    forget_host_key,
    key_fingerprint,
    record_host_key,
    scan_host_key,
)
from hil.devices.host.targets import open_target
from hil.errors import ConfigError, DeviceError
from hil.inventory import Device, Inventory, SshConfig, parse_inventory
from hil.measure import MeasureSettings
from hil.workload import ConvLayer, Linear, MBConv
from tests.sshd import SshdFactory, SshdHost, free_port, keygen

QUICK = MeasureSettings(warmup_runs=2, warmup_s=0.0, min_repeats=5, min_time_s=0.02, max_time_s=2.0)
SMALL = [MBConv((8, 8, 16), (8, 8, 16), 3, 3, 1, 1), Linear(32, 10)]


def _device(host: SshdHost, python: str = sys.executable, backend: str = "torch-cpu", **ssh: object) -> Device:
    return Device.model_validate({"backend": backend, "ssh": host.ssh_section(python, **ssh)})


def _inv(name: str, dev: Device) -> Inventory:
    return parse_inventory({"devices": {name: dev.model_dump()}}, "test")


def _pubkey(path: Path) -> paramiko.PKey:
    return paramiko.PKey.from_path(path)


# -- host keys, user keys, reachability ----------------------------------------------------------


def test_connects_with_key_and_sets_tcp_nodelay(ssh_farm: dict[str, SshdHost]) -> None:
    conn = connect("ssh-a", SshConfig(**ssh_farm["a"].ssh_section(sys.executable)))
    try:
        sock = conn.transport.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert conn.transport.is_authenticated()
        assert key_fingerprint(conn.host_key) == key_fingerprint(_pubkey(ssh_farm["a"].host_key))
    finally:
        conn.close()


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd_factory: SshdFactory) -> None:
    h = sshd_factory("u")
    h.known_hosts.write_text("")
    fp = key_fingerprint(_pubkey(h.host_key))
    with pytest.raises(HostKeyUnknownError) as e:
        open_target(_inv("dev-u", _device(h)), "dev-u")
    msg = str(e.value)
    assert "device 'dev-u'" in msg and fp in msg and "hil farm trust dev-u" in msg
    assert not list(h.workdir.glob("agent-*")), "nothing may be pushed to an untrusted host"


def test_changed_host_key_is_refused_showing_both_keys(sshd_factory: SshdFactory, tmp_path: Path) -> None:
    h = sshd_factory("c")
    other = keygen(tmp_path / "impostor")
    kind, b64 = Path(f"{other}.pub").read_text().split()[:2]
    h.known_hosts.write_text(f"[127.0.0.1]:{h.port} {kind} {b64}\n")
    with pytest.raises(HostKeyChangedError) as e:
        open_target(_inv("dev-c", _device(h)), "dev-c")
    msg = str(e.value)
    assert "device 'dev-c'" in msg and "CHANGED" in msg
    assert key_fingerprint(_pubkey(h.host_key)) in msg and key_fingerprint(_pubkey(other)) in msg


def test_wrong_user_key_is_refused(ssh_farm: dict[str, SshdHost], tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(DeviceError) as e:
        open_target(_inv("dev-k", _device(ssh_farm["a"], key_file=str(stranger))), "dev-k")
    assert "device 'dev-k'" in str(e.value) and "refused our user key" in str(e.value)
    assert isinstance(e.value, ConfigError), "a refused key is not retried"


def test_unreachable_port_is_a_device_error(ssh_farm: dict[str, SshdHost]) -> None:
    dev = _device(ssh_farm["a"], port=free_port(), connect_timeout_s=3)
    with pytest.raises(DeviceError) as e:
        open_target(_inv("dev-x", dev), "dev-x")
    assert "device 'dev-x'" in str(e.value) and "connection refused" in str(e.value)
    assert not isinstance(e.value, ConfigError), "an unreachable host is retried by builds"


def test_target_without_torch_is_a_clear_error(ssh_farm: dict[str, SshdHost], python_without_torch: str) -> None:
    with pytest.raises(DeviceError) as e:
        open_target(_inv("dev-nt", _device(ssh_farm["a"], python=python_without_torch)), "dev-nt")
    msg = str(e.value)
    assert "device 'dev-nt'" in msg and "torch-cpu" in msg and "No module named 'torch'" in msg


def test_missing_interpreter_is_a_configuration_error(ssh_farm: dict[str, SshdHost]) -> None:
    with pytest.raises(ConfigError) as e:
        open_target(_inv("dev-np", _device(ssh_farm["a"], python="/nonexistent/python3")), "dev-np")
    assert "device 'dev-np'" in str(e.value) and "'/nonexistent/python3' was not found" in str(e.value)


def test_agent_auth_through_ssh_agent(ssh_farm: dict[str, SshdHost], ssh_user_key: Path,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent_bin, add_bin = shutil.which("ssh-agent"), shutil.which("ssh-add")
    if not agent_bin or not add_bin:
        pytest.skip("ssh-agent not installed (openssh-client)")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen([agent_bin, "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run([add_bin, "-q", str(ssh_user_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        section = ssh_farm["a"].ssh_section(sys.executable)
        del section["key_file"]
        conn = connect("dev-agent", SshConfig(**section))
        assert conn.transport.is_authenticated()
        conn.close()
        monkeypatch.delenv("SSH_AUTH_SOCK")
        with pytest.raises(DeviceError, match="no keys in an ssh-agent"):
            connect("dev-agent", SshConfig(**section))
    finally:
        proc.kill()
        proc.wait()


def test_jump_host_reaches_device_and_is_checked_too(ssh_farm: dict[str, SshdHost], tmp_path: Path) -> None:
    a, b = ssh_farm["a"], ssh_farm["b"]
    jump = {"host": "127.0.0.1", "port": a.port, "user": a.user, "known_hosts": str(a.known_hosts)}
    dev = _device(b, jump=jump)
    t = open_target(_inv("dev-j", dev), "dev-j")
    try:
        assert len(t.session.conn.jumps) == 1
        [m] = list(t.measure(SMALL[1:], QUICK))
        assert m.ok and m.device == "dev-j"
    finally:
        t.close()
    partial = tmp_path / "partial_known_hosts"
    partial.write_text(b.host_key_line)  # the device is known, its jump host is not
    dev = _device(b, known_hosts=str(partial), jump={**jump, "known_hosts": None})
    with pytest.raises(HostKeyUnknownError, match=r"jump host \[127\.0\.0\.1\]"):
        open_target(_inv("dev-j2", dev), "dev-j2")
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"dev-j2": dev.model_dump()}}))
    assert main(["farm", "trust", "dev-j2", "-i", str(inv), "--yes"]) == 0  # the jump host, shown first
    assert partial.read_text() == b.host_key_line + a.host_key_line  # inherited the device's known_hosts
    open_target(_inv("dev-j2", dev), "dev-j2").close()


def test_scan_record_and_forget_host_keys(sshd_factory: SshdFactory) -> None:
    h = sshd_factory("s")
    cfg = SshConfig(**h.ssh_section(sys.executable))
    h.known_hosts.write_text("# a comment stays\n")
    scanned = scan_host_key("dev-s", cfg)
    assert scanned.status == "unknown" and scanned.entry == f"[127.0.0.1]:{h.port}"
    record_host_key(h.known_hosts, scanned.entry, scanned.key)
    assert scan_host_key("dev-s", cfg).status == "known"
    connect("dev-s", cfg).close()
    assert forget_host_key(h.known_hosts, scanned.entry) == 1
    assert h.known_hosts.read_text() == "# a comment stays\n"


# -- the agent -----------------------------------------------------------------------------------


def test_handshake_capabilities_ping_and_measure(ssh_farm: dict[str, SshdHost]) -> None:
    t = SshTarget("ssh-a", _device(ssh_farm["a"]))
    try:
        h = t.hello
        assert h["bundle"] == make_bundle().hash and h["bundle_ok"]
        assert h["capabilities"]["torch"] and h["executable"] == sys.executable
        assert 0 < t.ping() < 1000
        fp = t.describe(QUICK)
        assert fp["class"]["device"] == "ssh-a" and fp["class"]["backend"] == "torch-cpu"
        ms = list(t.measure(SMALL, QUICK))
        assert [m.key for m in ms] == [w.key for w in SMALL]
        assert all(m.ok and m.stats and m.stats.median_ms > 0 for m in ms)
        assert all(m.fingerprint["class"] == fp["class"] for m in ms)
    finally:
        t.close()


def test_a_gpu_devices_cuda_section_reaches_the_remote_agent(ssh_farm: dict[str, SshdHost]) -> None:
    """The agent configures its torch-cuda backend with the inventory's `cuda:` section (CUDA graphs
    here), and the fingerprint class it reports records them; no GPU is needed to get that far."""
    dev = Device.model_validate({"backend": "torch-cuda", "ssh": ssh_farm["a"].ssh_section(sys.executable),
                                 "cuda": {"cuda_graphs": True, "channels_last": True}})
    t = SshTarget("ssh-gpu", dev)
    try:
        options = t.describe(QUICK)["class"]["runtime"]["options"]
        assert options["cuda_graphs"] is True and options["channels_last"] is True
        assert options["cudnn_benchmark"] is True  # the rest stay at their defaults
    finally:
        t.close()


def test_damaged_bundle_is_replaced_never_half_used(ssh_farm: dict[str, SshdHost]) -> None:
    dev = _device(ssh_farm["a"])
    SshTarget("ssh-a", dev).close()
    bundle_dir = ssh_farm["a"].workdir / make_bundle().dirname
    victim = bundle_dir / "hil" / "measure.py"
    good = victim.read_bytes()
    victim.write_bytes(good + b"\nraise SystemExit('tampered')\n")
    t = SshTarget("ssh-a", dev)
    try:
        assert victim.read_bytes() == good
        assert [m.ok for m in t.measure(SMALL[1:], QUICK)] == [True]
    finally:
        t.close()


def test_idle_agent_exits_and_command_timeout_fires(ssh_farm: dict[str, SshdHost]) -> None:
    t = SshTarget("ssh-a", _device(ssh_farm["a"], idle_timeout_s=0.5))
    try:
        time.sleep(3.0)
        with pytest.raises(DeviceError, match=r"idle for 0\.5 s, exiting"):
            t.ping()
    finally:
        t.close()
    t = SshTarget("ssh-a", _device(ssh_farm["a"], command_timeout_s=0.3))
    slow = MeasureSettings(warmup_runs=1, warmup_s=0.0, min_repeats=5, min_time_s=3.0, max_time_s=5.0)
    try:
        with pytest.raises(DeviceError, match=r"sent nothing for 0\.3 s"):
            list(t.measure(SMALL[:1], slow))
    finally:
        t.close()


# -- nothing reaches a shell -----------------------------------------------------------------------


def test_shell_metacharacters_in_names_run_nothing(ssh_farm: dict[str, SshdHost], tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    evil = f"x;touch${{IFS}}{canary};$(touch${{IFS}}{canary})`touch${{IFS}}{canary}`"
    dev = _device(ssh_farm["a"])
    inv = parse_inventory({"devices": {evil: dev.model_dump()}}, "test")
    t = open_target(inv, evil)
    try:
        w = ConvLayer(f"c'\"; touch {canary} #$(touch {canary})", (8, 8, 3), (8, 8, 8))
        [m] = list(t.measure([w], QUICK))
        assert m.ok and m.device == evil and m.key == w.key
    finally:
        t.close()
    assert not canary.exists()


@pytest.mark.parametrize("field, value", [
    ("python", "python3; touch /tmp/hil-pwned"),
    ("python", "$(touch /tmp/hil-pwned)"),
    ("python", "/usr/bin/python3 -c 'import os'"),
    ("workdir", "/tmp/x;touch /tmp/hil-pwned"),
    ("workdir", "/tmp/../etc"),
])
def test_unsafe_interpreter_or_workdir_is_rejected(ssh_farm: dict[str, SshdHost], field: str, value: str) -> None:
    # the inventory refuses it when it is loaded ...
    with pytest.raises(ConfigError) as e:
        _inv("dev-evil", Device.model_construct(backend="torch-cpu", ssh=SshConfig.model_construct(
            **{**ssh_farm["a"].ssh_section(sys.executable), field: value})))
    assert "dev-evil" in str(e.value) and f"ssh.{field}" in str(e.value)
    # ... and the SSH target again, for a config made in code without validation
    ssh = SshConfig.model_validate(ssh_farm["a"].ssh_section(sys.executable)).model_copy(update={field: value})
    dev = Device.model_validate({"backend": "torch-cpu"}).model_copy(update={"ssh": ssh})
    inv = Inventory.model_construct(version=1, devices={"dev-evil": dev})
    with pytest.raises(ConfigError) as e:
        open_target(inv, "dev-evil")
    assert "dev-evil" in str(e.value) and f"ssh.{field}" in str(e.value)
    assert not Path("/tmp/hil-pwned").exists()
