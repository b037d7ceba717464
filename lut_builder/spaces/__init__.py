"""Search spaces: each enumerates its unique workloads and samples whole networks for validation.

A space registers a factory under its CLI name; `make_space(name, **options)` builds one. Options a
space does not take are rejected with an error naming them.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, Protocol

from hil.errors import ConfigError
from hil.workload import Network, Workload


class SearchSpace(Protocol):
    name: str

    def options(self) -> dict[str, Any]:
        """The options this space was made with (recorded with LUTs and summaries)."""
        ...

    def workloads(self) -> list[Workload]:
        """Every unique workload the LUT needs, in a stable order."""
        ...

    def sample(self, n: int, seed: int) -> list[Network]:
        """n networks drawn with a fixed seed, for validating predicted against measured latency."""
        ...


# CLI name -> "module:factory"; factories take keyword options only.
SPACES: dict[str, str] = {
    "proxyless-mobile": "hil.lut_builder.spaces.proxyless:ProxylessMobileSpace",
    "mobilenet-v1-layers": "hil.lut_builder.spaces.quant_layers:mobilenet_v1_layers",
    "mobilenet-v2-layers": "hil.lut_builder.spaces.quant_layers:mobilenet_v2_layers",
}


def make_space(name: str, **options: Any) -> SearchSpace:
    try:
        spec = SPACES[name]
    except KeyError:
        raise ConfigError(f"unknown search space {name!r} (known: {', '.join(sorted(SPACES))})") from None
    module, attr = spec.split(":")
    factory: Callable[..., SearchSpace] = getattr(importlib.import_module(module), attr)
    accepted = set(inspect.signature(factory).parameters)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ConfigError(f"search space {name!r} takes no option(s) {', '.join(unknown)}")
    return factory(**given)
