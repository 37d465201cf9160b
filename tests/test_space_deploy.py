"""`hub deploy-space` staging against the local Hub: `preload_from_hub` names the base and the
adapter at exact commits, in the Space card the Hub reads back; private repos and local folders
are left out (the Space build could not download them)."""
from __future__ import annotations

import pytest

from space_support import SHORT_ANSWER_TOKENS, SPACE_DIR, make_adapter


@pytest.fixture(scope="module")
def repos(tiny_base, hub_server, tmp_path_factory):
    """A public base, a public adapter and a private copy of the adapter on the local Hub."""
    from huggingface_hub import HfApi

    api = HfApi(token=hub_server.write_token)
    adapter = make_adapter(tiny_base, tmp_path_factory.mktemp("deploy") / "adapter", SHORT_ANSWER_TOKENS)
    ids = {"base": hub_server.repo_id("deploy-base"), "adapter": hub_server.repo_id("deploy-adapter"),
           "private": hub_server.repo_id("deploy-private")}
    for key, folder in (("base", tiny_base), ("adapter", adapter), ("private", adapter)):
        api.create_repo(ids[key], private=key == "private")
        api.upload_folder(repo_id=ids[key], folder_path=folder)
    return api, ids


def variables_for(api, base: str, adapter: str) -> dict[str, str]:
    return {"BASE_MODEL": base, "BASE_REVISION": "main", "ADAPTER_REPO": adapter,
            "ADAPTER_REVISION": api.model_info(adapter).sha}


def test_preload_names_base_and_adapter_at_their_commits(repos, hub_server):
    from hub.space_deploy import preload_entries

    api, ids = repos
    entries = preload_entries(api, variables_for(api, ids["base"], ids["adapter"]), hub_server.write_token)
    (base_repo, base_files, base_sha), (adapter_repo, adapter_files, adapter_sha) = (e.split(" ") for e in entries)
    assert (base_repo, base_sha) == (ids["base"], api.model_info(ids["base"], revision="main").sha)
    assert (adapter_repo, adapter_sha) == (ids["adapter"], api.model_info(ids["adapter"]).sha)
    assert {"config.json", "model.safetensors"} <= set(base_files.split(","))
    assert not [name for name in base_files.split(",") if not name.endswith((".json", ".safetensors"))]
    assert set(adapter_files.split(",")) == set(api.list_repo_files(ids["adapter"])) - {".gitattributes"}
    assert len(base_sha) == len(adapter_sha) == 40


def test_private_adapter_and_local_base_are_not_preloaded(repos, hub_server, tiny_base):
    from hub.space_deploy import preload_entries

    api, ids = repos
    assert preload_entries(api, variables_for(api, str(tiny_base), ids["private"]), hub_server.write_token) == []


def test_staged_space_card_carries_preload_and_the_hub_reads_it_back(repos, hub_server, tmp_path):
    from huggingface_hub import SpaceCard

    from hub.space_deploy import preload_entries, stage_space

    api, ids = repos
    variables = variables_for(api, ids["base"], ids["adapter"])
    preload = preload_entries(api, variables, hub_server.write_token)
    staged = stage_space(SPACE_DIR, tmp_path / "space", variables, "tester/data", preload)
    card = SpaceCard.load(staged / "README.md")
    assert card.data.preload_from_hub == preload and card.data.sdk == "gradio"
    space = hub_server.repo_id("deploy-space")
    api.create_repo(space, repo_type="space", space_sdk="gradio")
    api.upload_folder(repo_id=space, repo_type="space", folder_path=staged)
    assert api.space_info(space).card_data.preload_from_hub == preload
    # no preload: the key is left out rather than written empty
    bare = stage_space(SPACE_DIR, tmp_path / "bare", variables, "tester/data", [])
    assert "preload_from_hub" not in SpaceCard.load(bare / "README.md").data.to_dict()


def test_the_deploy_pins_a_hub_base_to_its_commit(repos, hub_server, tmp_path):
    """BASE_REVISION is the commit the base's revision resolves to at deploy time, as ADAPTER_REVISION is the
    verified adapter commit: a branch that moves later does not move the Space."""
    import json

    from hub.config import HubConfig
    from hub.space_deploy import pinned_variables

    api, ids = repos
    adapter = hub_server.repo_id("deploy-pinned")
    api.create_repo(adapter)
    provenance = {"base_model": {"id": ids["base"], "revision": "main"}}
    commit = api.upload_file(path_or_fileobj=json.dumps(provenance).encode(), path_in_repo="provenance.json",
                             repo_id=adapter).oid
    api.create_tag(adapter, tag="best-1", revision=commit)
    variables = pinned_variables(api, adapter, hub_server.write_token, HubConfig())
    assert variables == {"BASE_MODEL": ids["base"], "BASE_REVISION": api.model_info(ids["base"]).sha,
                         "ADAPTER_REPO": adapter, "ADAPTER_REVISION": commit}

