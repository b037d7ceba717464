"""`hil` command line. Each command group lives in hil/commands/<name>.py and exposes `register()`.

User errors (HilError) print one line and exit non-zero without a traceback. Ctrl-C exits 130;
whatever was measured before it is already committed to the store.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hil import __version__
from hil.errors import AlreadyReported, HilError

# Command modules under hil.commands, in the order `hil --help` lists them.
COMMANDS = ["inventory", "lut", "store", "validate", "speedup", "farm", "rtl", "train", "haq", "amc", "nas"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil", description="Hardware-in-the-loop latency tables and optimizers.")
    parser.add_argument("--version", action="version", version=f"hil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hil.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"hil.commands.{name}":
                continue  # a command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The words as given, for a command that starts itself again in worker processes (`--nproc`).
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except AlreadyReported as e:
        return e.exit_code
    except HilError as e:
        print(f"hil: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("hil: interrupted; every finished measurement is kept in the store, rerun to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
