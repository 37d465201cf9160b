"""`configs/hub.yaml`: where `push` and `deploy-space` publish, and from which local folders."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from common.errors import ConfigError
from common.yaml_config import StrictModel, load_config

REPO_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"


class HubConfig(StrictModel):
    """`python -m hub push` / `deploy-space`: repository names, visibility, Space hardware, inputs."""

    namespace: str | None = Field(None, pattern=REPO_NAME, description="user or org; None: the token's user (whoami)")
    dataset_repo: str = Field("medical-flashcards-chat", pattern=REPO_NAME, description="dataset repo name")
    adapter_repo: str = Field("tinyllama-medqa-lora", pattern=REPO_NAME, description="adapter (model) repo name")
    space_repo: str = Field("medqa-assistant", pattern=REPO_NAME, description="Gradio Space repo name")
    merged_repo: str = Field("tinyllama-medqa-merged", pattern=REPO_NAME,
                             description="the best experiment's merged weights (model repo), from exports_dir")
    gguf_repo: str = Field("tinyllama-medqa-GGUF", pattern=REPO_NAME,
                           description="its GGUF files (model repo; '-GGUF', the Hub's convention)")
    publish_exports: bool | None = Field(
        None, description="publish exports_dir/<best>/ (`make export`): null: when there is a verified export of "
        "the best experiment's adapter as pushed, and say in one line when there is none; true: a push without "
        "one stops before anything is published; false: never")
    export_verify_questions: int = Field(
        8, gt=0, description="test questions the pushed exports answer before main moves to them")
    private: bool = Field(False, description="create the repositories private")
    space_hardware: Literal["zero-a10g", "t4-small", "cpu-basic", "cpu-upgrade"] = Field(
        "zero-a10g", description="hardware requested for the Space"
    )
    branch_prefix: str = Field("exp/", pattern=r"^[A-Za-z0-9_.-]+/$", description="adapter branch = prefix + experiment")
    license: str = Field("apache-2.0", description="license id for cards and repos")
    base_model_repo: str | None = Field(
        None, description="Hub id that cards and the Space name when the runs' base model was a local folder"
    )
    base_model_revision: str | None = Field(None, description="revision of base_model_repo (None: its main branch)")
    data_dir: Path = Field(Path("data/processed"), description="output of `prepare`")
    runs_dir: Path = Field(Path("runs"), description="output of `train`")
    eval_dir: Path = Field(Path("eval"), description="output of `evaluate`")
    exports_dir: Path = Field(Path("exports"), description="output of `export`")
    space_dir: Path = Field(Path("space"), description="the Space's files")

    def repo_ids(self, namespace: str) -> dict[str, str]:
        """Full ids of the repositories, keyed dataset / adapter / space / merged / gguf."""
        return {
            "dataset": f"{namespace}/{self.dataset_repo}",
            "adapter": f"{namespace}/{self.adapter_repo}",
            "space": f"{namespace}/{self.space_repo}",
            "merged": f"{namespace}/{self.merged_repo}",
            "gguf": f"{namespace}/{self.gguf_repo}",
        }


def load_hub_config(config_dir: str | Path, overrides=()) -> HubConfig:
    """CONFIG_DIR/hub.yaml (defaults when the folder has none) with `--set` overrides."""
    if not Path(config_dir).is_dir():
        raise ConfigError(f"--config-dir {config_dir}: no such folder")
    path = Path(config_dir) / "hub.yaml"
    return load_config(HubConfig, path if path.exists() else None, overrides)
