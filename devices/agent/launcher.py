"""The agent bundle's entry script, shipped as `<bundle>/hil_agent.py`; never imported on the host.

Run as `<python> <bundle>/hil_agent.py`. Before importing any file of the bundle it checks every one
against the bundle's manifest (and the manifest against the directory's name), so a damaged or
tampered bundle is reported in the handshake and never run, not even in part. It then makes sure
`hil` and its submodules come from this bundle only, not from another `hil` installed on the target.

Its hash rule must equal `hil.devices.host.agent_bundle.bundle_hash`; the handshake compares the two.
Standard library only, and it must parse on old Pythons to say clearly that they are too old.
"""

import hashlib
import importlib.machinery
import json
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))


def reply(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def verify():
    """(hash, problem): every file checked against the manifest; problem is '' when all is sound."""
    try:
        with open(os.path.join(ROOT, "MANIFEST.json"), "rb") as f:
            manifest = json.loads(f.read().decode())
    except (OSError, ValueError) as e:
        return "", "no readable MANIFEST.json: " + str(e)
    canon = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canon.encode()).hexdigest()[:20]
    if os.path.basename(ROOT) != "agent-" + digest:
        return digest, "the directory's name does not carry the manifest's hash " + digest
    for rel, want in sorted(manifest.get("files", {}).items()):
        try:
            with open(os.path.join(ROOT, *rel.split("/")), "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return digest, rel + " is missing"
        if got != want:
            return digest, rel + " does not match the manifest"
    return digest, ""


class BundleOnly:
    """A meta-path finder: `hil` and its submodules come from this bundle or not at all."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != "hil" and not fullname.startswith("hil."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, [ROOT] if path is None else path)
        if spec is None:
            raise ModuleNotFoundError("No module named " + repr(fullname) + " in the hil agent bundle", name=fullname)
        return spec


def run():
    if sys.version_info < (3, 10):  # noqa: UP036 - the target's Python, not the one hil runs on
        reply(type="error", kind="python_too_old",
              message="the hil agent needs Python >= 3.10, this is " + sys.version.split()[0])
        return 2
    bundle, problem = verify()
    if problem:
        reply(type="hello", bundle=bundle, bundle_ok=False, bundle_problem=problem)
        return 3
    sys.meta_path.insert(0, BundleOnly)
    sys.path.insert(0, ROOT)
    from hil.devices.agent.server import main

    return main(ROOT, bundle)


if __name__ == "__main__":
    sys.exit(run())
