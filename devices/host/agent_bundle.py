"""The agent bundle: the part of `hil` a target needs, pushed over SFTP into a content-hashed directory.

The bundle is the agent, the lease, and every backend of the registry, with whatever `hil` modules
they import (found by reading their imports, so a new backend needs no list edited here), laid out
as a `hil` package tree, plus a launcher and a manifest of sha256 sums. Its directory is
`<workdir>/agent-<hash of the manifest>`: a changed file is a new directory, never an overwrite.
A directory is made complete under a temporary name and renamed into place, so a half-pushed bundle
is never started; one that fails verification at handshake is replaced.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import stat
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import paramiko

from hil.devices.agent.local import AGENT_VERSION
from hil.devices.agent.registry import BACKENDS
from hil.devices.agent.server import LAUNCHER, MANIFEST, PROTOCOL

# What the agent imports by name at run time (not visible as an import statement elsewhere).
ROOTS = ("hil.devices.agent.server", "hil.lease", "hil.devices.agent.registry")

LAUNCHER_SOURCE = Path(__file__).parents[1] / "agent" / "launcher.py"


def bundle_hash(manifest: dict[str, object]) -> str:
    """The bundle's identity: the hash of its manifest (agent version, protocol, every file's sha256).
    devices/agent/launcher.py computes the same on the target."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Bundle:
    files: dict[str, bytes]  # path inside the bundle -> content
    manifest: dict[str, object]
    hash: str

    @property
    def dirname(self) -> str:
        return f"agent-{self.hash}"


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # e.g. `hil.measure.Stats`: a name, not a module
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def module_imports(name: str, path: Path) -> set[str]:
    """Every name module `name` imports anywhere in its source (top level or inside functions), made
    absolute: `from hil.x import y` gives both hil.x and hil.x.y, as y may be a module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _hil_imports(name: str, path: Path) -> set[str]:
    return {n for n in module_imports(name, path) if n == "hil" or n.startswith("hil.")}


def _bundle_path(name: str, path: Path) -> str:
    parts = name.split(".")
    return "/".join(parts) + "/__init__.py" if path.name == "__init__.py" else "/".join(parts) + ".py"


def collect_sources() -> dict[str, Path]:
    """Bundle path -> source file for the agent's modules and everything they import from `hil`."""
    todo = [*ROOTS, *(spec.split(":")[0] for spec in BACKENDS.values())]
    seen: set[str] = set()
    out: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue  # not a module (an imported name), or a backend not written yet
        out[_bundle_path(name, path)] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo += parents + sorted(_hil_imports(name, path))
    return out


@lru_cache(maxsize=1)
def make_bundle() -> Bundle:
    files = {rel: p.read_bytes() for rel, p in collect_sources().items()}
    files[LAUNCHER] = LAUNCHER_SOURCE.read_bytes()
    manifest: dict[str, object] = {
        "agent_version": AGENT_VERSION,
        "protocol": PROTOCOL,
        "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(files.items())},
    }
    return Bundle(files, manifest, bundle_hash(manifest))


# -- SFTP ----------------------------------------------------------------------------------------


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def makedirs(sftp: paramiko.SFTPClient, path: str, mode: int = 0o755) -> None:
    """`mkdir -p` over SFTP."""
    parts = path.rstrip("/").split("/")
    for i in range(2, len(parts) + 1):
        sub = "/".join(parts[:i])
        if not sub or _exists(sftp, sub):
            continue
        try:
            sftp.mkdir(sub, mode)
        except OSError:
            if not _exists(sftp, sub):  # someone else made it meanwhile: fine
                raise


def rmtree(sftp: paramiko.SFTPClient, path: str) -> None:
    for entry in sftp.listdir_attr(path):
        child = f"{path}/{entry.filename}"
        if entry.st_mode is not None and stat.S_ISDIR(entry.st_mode):
            rmtree(sftp, child)
        else:
            sftp.remove(child)
    sftp.rmdir(path)


def _manifest_bytes(bundle: Bundle) -> bytes:
    return json.dumps(bundle.manifest, indent=1, sort_keys=True).encode()


def _read(sftp: paramiko.SFTPClient, path: str) -> bytes | None:
    try:
        with sftp.open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _intact_entry(sftp: paramiko.SFTPClient, final: str, bundle: Bundle) -> bool:
    """The launcher and manifest on the target are ours. The launcher checks all other files itself."""
    return (_read(sftp, f"{final}/{MANIFEST}") == _manifest_bytes(bundle)
            and _read(sftp, f"{final}/{LAUNCHER}") == bundle.files[LAUNCHER])


def _upload(sftp: paramiko.SFTPClient, bundle: Bundle, workdir: str) -> str:
    """Write the bundle under a temporary name; returns that directory."""
    tmp = f"{workdir}/.push-{bundle.hash}-{uuid.uuid4().hex[:8]}"
    made: set[str] = set()
    for rel, data in sorted(bundle.files.items()):
        parent = f"{tmp}/{rel}".rsplit("/", 1)[0]
        if parent not in made:
            makedirs(sftp, parent)
            made.add(parent)
        sftp.putfo(io.BytesIO(data), f"{tmp}/{rel}", confirm=False)
    sftp.putfo(io.BytesIO(_manifest_bytes(bundle)), f"{tmp}/{MANIFEST}", confirm=False)
    return tmp


def push_bundle(sftp: paramiko.SFTPClient, workdir: str, bundle: Bundle | None = None, replace: bool = False) -> str:
    """The bundle's directory on the target, pushed if absent (or if `replace`, after a failed check)."""
    bundle = bundle or make_bundle()
    final = f"{workdir}/{bundle.dirname}"
    if not replace and _intact_entry(sftp, final, bundle):
        return final
    makedirs(sftp, workdir)
    tmp = _upload(sftp, bundle, workdir)
    trash = None
    if _exists(sftp, final):
        trash = f"{workdir}/.trash-{bundle.hash}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):  # another coordinator may be replacing it right now
            sftp.posix_rename(final, trash)
    try:
        sftp.posix_rename(tmp, final)
    except OSError:
        # Another coordinator put a complete copy in place first; ours is surplus.
        rmtree(sftp, tmp)
    if trash is not None:
        with contextlib.suppress(OSError):
            rmtree(sftp, trash)
    return final


def push_file(sftp: paramiko.SFTPClient, local: Path, remote_dir: str) -> str:
    """Put a host-built file on the target under its content hash; a file already there is not resent."""
    digest = hashlib.sha256(local.read_bytes()).hexdigest()[:32]
    suffix = local.suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", local.suffix) else ""
    remote = f"{remote_dir}/{digest}{suffix}"
    if _exists(sftp, remote):
        return remote
    makedirs(sftp, remote_dir)
    tmp = f"{remote}.{uuid.uuid4().hex[:8]}.part"
    sftp.put(os.fspath(local), tmp, confirm=False)
    try:
        sftp.posix_rename(tmp, remote)
    except OSError:
        sftp.remove(tmp)
    return remote
