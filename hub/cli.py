"""`python -m hub <command>`: publish to the Hub, deploy the Space, or serve the local Hub stand-in."""
from __future__ import annotations

from common import cli

COMMANDS = {
    "serve": ("hub.server", "run the local, offline stand-in for the Hugging Face Hub API"),
    "push": ("hub.publish", "publish the dataset, every experiment's adapter and model cards"),
    "deploy-space": ("hub.space_deploy", "create or update the Gradio Space and pin the best adapter"),
    "demo": ("hub.demo", "the whole product offline: data, training, evaluation, local Hub, Space"),
}


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, prog="python -m hub", description=__doc__.splitlines()[0], commands=COMMANDS)
