"""Devices, in two halves that run in different places.

- `agent/`: what runs where the hardware is. The JSON-lines agent (`server`), its launcher, the
  Backend seam and the backends (torch-cpu, torch-cuda, tflite), the in-process target. Standard
  library plus the backend's own runtime only: this is what the agent bundle pushes to an SSH host.
- `host/`: what runs on the host that drives the farm. Opening targets (`targets`), the SSH transport
  and target, building and pushing the agent bundle, converting TFLite models, the Verilator-simulated
  accelerators (`rtl_sim`), the farm health check (`health`).

The host side imports the agent side (an in-process device runs the agent's code here); never the
other way round (tests/test_layers.py).
"""
