"""The network layer: a network described once and used by every other layer.

- `shapes`: channel rounding and output sizes shared by every network family;
- `proxyless`: the ProxylessNAS mobile family (stages, slots, ops, an architecture's layers);
- `models`: `ModelSpec` (a network as named layers), its conv units, MobileNet-V1/V2 and
  ProxylessNAS networks;
- `torch_build`: a `Workload` as a torch module.

It imports only the core (`hil.errors`, `hil.workload`) and torch; search spaces, devices, the RTL
drivers and the optimizers import it (tests/test_layers.py enforces the direction). This file imports
nothing, so the agent bundle can carry `torch_build` without the rest.
"""
