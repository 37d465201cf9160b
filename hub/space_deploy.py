"""`python -m hub deploy-space`: the Gradio Space, pinned to the adapter revision that was verified.

The Space repo holds exactly `space/`; its variables name the adapter commit (the target of the
newest `best-<N>` tag, i.e. the last verified promotion of `main`) and the base model at the commit
its revision resolves to, so the Space serves a fixed, tested pair until the next deploy. The Space
card's `preload_from_hub` names the same commits, so the Space build downloads the weights once (no
cold-start download); the Hub preloads public repos only, so a private adapter or base is left to the app.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from common.errors import ConfigError, HubError
from common.hub_errors import hub_errors
from common.hub_ids import is_hub_id
from hub.auth import current_token, preflight_config
from hub.cards import published_base
from hub.config import HubConfig, load_hub_config
from hub.revisions import NEVER_PUBLISHED, newest_promotion
from training.layout import RUN_PROVENANCE

# Set on every deploy, beside the pinned model: gradio's usage analytics off (app.py forces it too;
# the variable also covers anything that imports gradio before app.py runs).
SPACE_SETTINGS = {"GRADIO_ANALYTICS_ENABLED": "False"}
# The base files transformers loads: config and weights as safetensors (other weight formats and
# the base's own tokenizer are never read; the tokenizer comes with the adapter).
BASE_FILE_SUFFIXES = (".json", ".safetensors")


def add_arguments(parser) -> None:
    parser.add_argument("--config-dir", type=Path, default=Path("configs"), help="folder with hub.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hub.yaml setting")


def run(args) -> int:
    config = load_hub_config(args.config_dir, args.set)
    url = deploy(config)
    print(f"Space: {url}")
    if config.private:  # the publisher's token never goes into the Space
        print("The adapter repo is private: add a read-only token as the Space secret HF_TOKEN.")
    return 0


def deploy(config: HubConfig) -> str:
    from huggingface_hub import HfApi

    if not (config.space_dir / "app.py").exists():
        raise ConfigError(f"{config.space_dir}: no app.py, nothing to deploy (space_dir in hub.yaml)")
    token = current_token()
    ids = preflight_config(config, ("space",))
    api = HfApi(token=token)
    variables = pinned_variables(api, ids["adapter"], token, config)
    preload = preload_entries(api, variables, token)
    space = ids["space"]
    with hub_errors(space, "main", "cannot deploy the Space", token), tempfile.TemporaryDirectory() as tmp:
        staged = stage_space(config.space_dir, Path(tmp) / "space", variables, ids["dataset"], preload)
        repo = api.create_repo(space, repo_type="space", space_sdk="gradio", private=config.private, exist_ok=True)
        api.upload_folder(
            repo_id=space, repo_type="space", folder_path=staged, delete_patterns="*",
            commit_message=f"Deploy, adapter {variables['ADAPTER_REVISION'][:12]}",
        )
        for key, value in (variables | SPACE_SETTINGS).items():
            api.add_space_variable(space, key, value)
        api.request_space_hardware(space, config.space_hardware)
    return repo.url


def stage_space(space_dir: Path, dest: Path, variables: dict[str, str], dataset_repo: str,
                preload: list[str]) -> Path:
    """space/ as uploaded: its card's `models` and `datasets` name what this deploy serves, and
    `preload_from_hub` the commits to download at build time (the key is left out when empty)."""
    from huggingface_hub import SpaceCard

    shutil.copytree(space_dir, dest, ignore=shutil.ignore_patterns(*NEVER_PUBLISHED))
    card = SpaceCard.load(dest / "README.md")
    card.data.models = list(dict.fromkeys([variables["BASE_MODEL"], variables["ADAPTER_REPO"]]))
    card.data.datasets = list(dict.fromkeys([*(card.data.datasets or []), dataset_repo]))
    card.data.preload_from_hub = preload or None
    card.save(dest / "README.md")
    return dest


def preload_entries(api, variables: dict[str, str], token: str) -> list[str]:
    """`preload_from_hub` lines, "<repo> <file1,file2,...> <commit sha>", for the adapter at its
    verified commit and the base at the commit BASE_REVISION resolves to now. A repo that is not on
    the Hub (a local base folder), private or gated is skipped: the build could not download it."""
    entries = []
    for repo, revision, wanted in (
        (variables["BASE_MODEL"], variables["BASE_REVISION"], lambda name: name.endswith(BASE_FILE_SUFFIXES)),
        (variables["ADAPTER_REPO"], variables["ADAPTER_REVISION"], lambda name: True),
    ):
        if not is_hub_id(repo):
            continue
        with hub_errors(repo, revision, "cannot read the files of", token):
            info = api.model_info(repo, revision=revision, files_metadata=False)
        files = sorted(f.rfilename for f in info.siblings or [] if wanted(f.rfilename) and "," not in f.rfilename
                       and " " not in f.rfilename and f.rfilename != ".gitattributes")
        if info.private or info.gated or not files:
            print(f"preload_from_hub: {repo} left out (private or gated: the Space downloads it at start-up)")
            continue
        entries.append(f"{repo} {','.join(files)} {info.sha}")
    return entries


def pinned_variables(api, adapter_repo: str, token: str, config: HubConfig) -> dict[str, str]:
    """BASE_MODEL/BASE_REVISION/ADAPTER_REPO/ADAPTER_REVISION from the newest best-<N> tag."""
    from huggingface_hub import hf_hub_download

    revision = newest_promotion(api, adapter_repo, token)
    if revision is None:
        raise HubError(f"{adapter_repo} has no verified best-<N> tag yet; run `make push` first")
    with hub_errors(adapter_repo, revision, f"cannot read {RUN_PROVENANCE} of", token):
        provenance = json.loads(Path(hf_hub_download(adapter_repo, RUN_PROVENANCE, revision=revision, token=token)).read_text())
    base = provenance.get("base_model") or {}
    base_id, base_revision = published_base(base.get("id"), base.get("revision"),
                                            config.base_model_repo, config.base_model_revision)
    base_revision = base_revision or "main"
    if is_hub_id(str(base_id)):  # pinned as the adapter is: a branch that moves later does not move the Space
        with hub_errors(base_id, base_revision, "cannot resolve the base model", token):
            base_revision = api.model_info(base_id, revision=base_revision, files_metadata=False).sha
    return {
        "BASE_MODEL": str(base_id),
        "BASE_REVISION": base_revision,
        "ADAPTER_REPO": adapter_repo,
        "ADAPTER_REVISION": revision,
    }


def checkout_space(config: HubConfig, dest: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A fresh copy of the Space repo and its variables, read from the Hub named in `env` (the demo)."""
    from huggingface_hub import HfApi, snapshot_download

    endpoint, token = env["HF_ENDPOINT"], env.get("HF_TOKEN")
    api = HfApi(endpoint=endpoint, token=token)
    space = config.repo_ids(config.namespace or "<the token's user>")["space"]
    with hub_errors(space, "main", "cannot check out the Space", token):
        space = config.repo_ids(config.namespace or api.whoami()["name"])["space"]
        folder = snapshot_download(space, repo_type="space", local_dir=dest, endpoint=endpoint, token=token)
        variables = {key: var.value for key, var in api.get_space_variables(space).items()}
    return Path(folder), variables
