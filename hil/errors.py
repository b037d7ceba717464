"""Errors a user can cause and fix. The CLI prints them as one line and exits non-zero, no traceback.

Anything else that escapes is a bug in hil and is allowed its traceback.
"""

from __future__ import annotations


class HilError(Exception):
    """A user-facing error: bad input, a missing resource, an unreachable device."""

    exit_code = 2


class AlreadyReported(HilError):
    """A failure another process of the same job has already reported in its one line (a
    training worker of rank > 0, a launcher whose rank 0 said why): exit non-zero, print nothing."""

    def __init__(self, exit_code: int = 2) -> None:
        super().__init__("")
        self.exit_code = exit_code


class ConfigError(HilError):
    """Invalid inventory, search space, option or file."""


class StoreError(HilError):
    """The measurement store can't be opened, or its schema is unknown."""


class MissingEntryError(HilError, KeyError):
    """A LUT lookup for a key that was never measured. Never silently defaulted."""

    def __init__(self, key: str, device: str = "", hint: str = "") -> None:
        self.key = key
        where = f" on device {device!r}" if device else ""
        msg = f"no LUT entry for key {key!r}{where}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would print the repr
        return self.args[0]


class NoBoardError(HilError):
    """No board here: PYNQ is not installed, it finds no device, or the overlay's bitstream is missing.
    Never papered over with numbers from elsewhere: the caller reports it, or substitutes when allowed."""

    exit_code = 3


class DeviceError(HilError):
    """A device failed: unreachable, refused, crashed, or lacks the runtime a workload needs."""

    exit_code = 3

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"device {device!r}: {message}")
