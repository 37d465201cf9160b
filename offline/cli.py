"""`python -m offline <command>`: serve the local Hub stand-in, or run the whole product offline."""
from __future__ import annotations

from common import cli

COMMANDS = {
    "serve": ("offline.server", "run the local, offline stand-in for the Hugging Face Hub API"),
    "demo": ("offline.demo", "the whole product offline: data, training, evaluation, local Hub, Space"),
}


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, prog="python -m offline", description=__doc__.splitlines()[0], commands=COMMANDS)
