"""`sparsetier` command line: one sub-command per job, errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from ..errors import SparsetierError
from . import bench, evaluate, generate, models, plan, profile, serve, synth

# Sub-command modules each expose `register(subparsers)` that adds their parsers with a
# `func` default taking the parsed args and returning an exit code.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    generate.register,
    models.register,
    evaluate.register,
    serve.register,
    bench.register,
    synth.register,
    plan.register,
    profile.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsetier",
        description="LLM inference for machines smaller than their models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SparsetierError as e:
        print(f"sparsetier: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error; silence the flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:
        print("sparsetier: error: out of memory", file=sys.stderr)
        return 2


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
