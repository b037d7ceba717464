"""What a training step keeps for its backward: the activation memory path binarization saves.

`saved_bytes` counts the distinct storages autograd saves during a forward (through
`torch.autograd.graph.saved_tensors_hooks`), the memory that lives from forward to backward and
grows with the number of paths run. Deterministic and the same on any machine, unlike a process's
resident size; parameters and their gradients, the same for every mode, are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def saved_bytes(forward: Callable[[], Any]) -> int:
    """Bytes of the distinct tensors autograd saves for backward while `forward()` runs."""
    seen: dict[tuple[int, int], int] = {}
    params: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.nn.Parameter):
            params.add(t.untyped_storage().data_ptr())
        else:
            st = t.untyped_storage()
            seen[(st.data_ptr(), st.nbytes())] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(n for (ptr, _), n in seen.items() if ptr not in params)
