"""The ``custody`` command: one console script, a subcommand per job.

Each part of the system registers its own subcommands (``register(subparsers)``) and imports
its heavy dependencies only when a command runs, so a Raspberry Pi with only the ``agent``
extra installed can still run every ``custody agent`` command. Errors are printed as one line
and a non-zero exit code; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from protocol.errors import CustodyError

#: Modules that contribute subcommands, each with ``register(subparsers)``. A module whose
#: extra is not installed still registers (its register() imports nothing heavy).
COMMAND_MODULES = (
    "custody.demo",
    "agent.cli",
    "server.cli",
    "server.cases_cli",
    "server.governance_cli",
    "custody.verify",
    "custody.export",
    "custody.witness",
    "simulators.cli",
)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int | None]


class CliError(CustodyError):
    """A command-line problem a person can fix (bad argument, missing file)."""

    code = "cli_error"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="custody",
        description="Custody: evidence-grade recording for administrative law enforcement "
        "(执法全过程记录). Signed, chained, write-once footage tied to case steps.",
        epilog="Run 'custody COMMAND --help' for a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output; -v shows tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of the system is not in this install
            raise
        module.register(sub)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr: warnings with -q, info by default, debug with -vv."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Alembic announces each of its plugins at INFO whenever its autogenerate package is imported:
    # a screenful of noise before a command's own output, and nothing an operator acts on.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(level, logging.WARNING))


def missing_extra(exc: ModuleNotFoundError) -> str:
    """A one-line hint for a command whose optional dependencies are not installed."""
    extra = {"av": "agent", "tinydb": "agent", "aiortc": "agent", "sqlalchemy": "server", "boto3": "server"}.get(
        (exc.name or "").split(".")[0], "server"
    )
    return f"this command needs the {extra!r} extra ({exc.name} is missing): pip install 'custody[{extra}]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``custody`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    handler: Handler = args.handler
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("custody: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CustodyError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"custody: error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"custody: error: {missing_extra(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"custody: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
              file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, but say it is one
        if args.verbose:
            traceback.print_exc()
        print(
            f"custody: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
