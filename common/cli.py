"""The command runner behind `python -m training` and `python -m hub`: each command lives in its own module.

A command module exposes `add_arguments(parser)` and `run(args) -> int`, and keeps heavy imports
(torch, transformers, datasets) inside functions so that `--help` stays instant.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from common.errors import EXIT_ENV, UserError

# A full disk or a read-only folder is the machine's problem, not a bug: one line, exit 5.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def main(argv: list[str] | None, prog: str, description: str, commands: dict[str, tuple[str, str]]) -> int:
    """Parse `argv` into one of `commands` (name -> (module, help)) and run it guarded."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in commands.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return run_guarded(modules[args.command].run, args)


def run_guarded(func, *args) -> int:
    """Run a command; user errors become one line on stderr and their exit code."""
    try:
        return int(func(*args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror}{where}; free some space or choose another output folder", file=sys.stderr)
        return EXIT_ENV
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)  # on a line of its own, after any progress bar
        return 130
