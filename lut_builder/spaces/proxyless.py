"""The ProxylessNAS mobile search space as a LUT needs it: the family of `hil.nets.proxyless`, its
unique workloads (70 at 224) and seeded samples of whole networks for validation."""

from __future__ import annotations

import random

from hil.nets.proxyless import OPS, PROXYLESS_MOBILE, ProxylessMobile
from hil.workload import Network, Workload

__all__ = ["OPS", "PROXYLESS_MOBILE", "ProxylessMobileSpace"]


class ProxylessMobileSpace(ProxylessMobile):
    name = "proxyless-mobile"

    def workloads(self) -> list[Workload]:
        seen: dict[str, Workload] = {w.key: w for w in self.fixed}
        for slot in self.slots:
            for op in slot.choices:
                w = slot.workload(op)
                if w is not None:
                    seen.setdefault(w.key, w)
        return sorted(seen.values(), key=lambda w: w.key)

    def sample(self, n: int, seed: int) -> list[Network]:
        rng = random.Random(seed)
        nets: dict[str, Network] = {}
        while len(nets) < n:
            net = self.network(self.random_arch(rng))
            nets.setdefault(net.key, net)
        return list(nets.values())
