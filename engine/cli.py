"""The `retracer` command. Every subcommand prints a one-line error and exits non-zero on bad input.

Each module in engine/commands/ has ``register(subparsers)``, which adds its subcommands and sets
``func`` (args -> exit code) on each.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.commands import (
    analysis,
    backdoor,
    experiments,
    influence,
    lds,
    recommend,
    retraining,
    training,
)
from engine.commands.executing import settings_from_args
from engine.errors import is_user_error, storage_error_message, user_message
from engine.executor import use_executor
from engine.options import flag

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
COMMAND_MODULES = (training, influence, retraining, recommend, lds, experiments, backdoor, analysis)
"""Each adds its subcommands in this order (``retracer --help`` lists them so)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retracer",
        description="Find the training images that hurt your classifier, and prove it by retraining.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in COMMAND_MODULES:
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with use_executor(settings_from_args(args)):
            return int(args.func(args))
    except KeyboardInterrupt:
        print("retracer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the CLI's contract: one line, no traceback
        if is_user_error(e):
            print(f"retracer: error: {user_message(e, spell=flag)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        storage = storage_error_message(e)
        if storage is not None:
            print(f"retracer: error: {storage}", file=sys.stderr)
            return EXIT_FAILED
        print(f"retracer: error ({type(e).__name__}): {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
