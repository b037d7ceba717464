"""Options and output helpers shared by command groups."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hil.inventory import DEFAULT_INVENTORY
from hil.store import DB_ENV

if TYPE_CHECKING:
    from hil.inventory import Inventory
    from hil.measure import Measurement
    from hil.store import Store
    from hil.target import Target


def add_inventory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inventory", "-i", default=DEFAULT_INVENTORY, metavar="FILE",
                   help=f"inventory file (default: {DEFAULT_INVENTORY})")


def add_substitute_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-substitute", action="store_true",
                   help="measure an absent device (a board not there) on its inventory 'substitute'; its records "
                        "say provenance simulated and substitute_for, in the substitute's own LUT")


def add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, metavar="PATH|URL",
                   help="measurement store: an SQLite file, or postgresql://user@host:port/db for one shared "
                        f"by several coordinators (default: ${DB_ENV} or ./hil.db)")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print only JSON on stdout")


def emit(obj: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    """JSON on stdout with --json; otherwise the human text (or pretty JSON)."""
    if as_json or text is None:
        json.dump(obj, sys.stdout, indent=None if as_json else 2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def progress_enabled(as_json: bool) -> bool:
    """Progress bars go to stderr, and only when someone is watching."""
    return sys.stderr.isatty() and not as_json


def progress_bar(total: int | None, unit: str, desc: str, file: Any = None) -> Any:
    """A tqdm bar on stderr that redraws itself every second: with the interleaved schedule a
    session's records arrive together when it ends, and the ticking elapsed time shows the work
    is alive meanwhile."""
    import threading

    from tqdm import tqdm

    class Ticking(tqdm):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._stop = threading.Event()
            self._ticker = threading.Thread(target=self._tick, name="progress-tick", daemon=True)
            self._ticker.start()

        def _tick(self) -> None:
            while not self._stop.wait(1.0):
                self.refresh()

        def close(self) -> None:
            ticker = getattr(self, "_ticker", None)  # None when tqdm's __init__ failed before it started
            if ticker is not None:
                self._stop.set()
                if ticker is not threading.current_thread():
                    ticker.join()  # a redraw under way ends before the bar does, not after
            super().close()

    return Ticking(total=total, unit=unit, desc=desc, dynamic_ncols=True, file=file)


@dataclass
class Measuring:
    """What a command that measures whole networks holds while it runs."""

    store: Store
    target: Target
    progress: Callable[[Measurement], None] | None  # ticks the bar, if one is shown


@contextlib.contextmanager
def measuring(db: str | None, inv: Inventory, device: str, unit: str, desc: str, as_json: bool,
              total: int | None = None, allow_substitute: bool = False) -> Iterator[Measuring]:
    """The store of `--db`, the opened device (or its substitute, when allowed: --allow-substitute)
    and a progress bar (unless --json or unwatched), all closed again however the command ends."""
    from hil.devices.host.targets import open_target
    from hil.store import open_store

    with contextlib.ExitStack() as stack:
        store = open_store(db)
        stack.callback(store.close)
        target = open_target(inv, device, allow_substitute=allow_substitute)
        stack.callback(target.close)
        bar = progress_bar(total, unit, desc) if progress_enabled(as_json) else None
        if bar is not None:
            stack.callback(bar.close)
        yield Measuring(store, target, (lambda m: bar.update(1)) if bar is not None else None)
