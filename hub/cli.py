"""`python -m hub <command>`: publish to the Hub or deploy the Space."""
from __future__ import annotations

from common import cli

COMMANDS = {
    "push": ("hub.publish", "publish the dataset, every experiment's adapter and model cards"),
    "deploy-space": ("hub.space_deploy", "create or update the Gradio Space and pin the best adapter"),
    # Aliases kept from before the offline Hub and the demo moved to their own package: `python -m offline`.
    "serve": ("offline.server", "alias of `python -m offline serve` (the local stand-in for the Hub API)"),
    "demo": ("offline.demo", "alias of `python -m offline demo` (the whole product offline)"),
}


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, prog="python -m hub", description=__doc__.splitlines()[0], commands=COMMANDS)
