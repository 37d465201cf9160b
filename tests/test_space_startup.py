"""A misconfigured Space still serves a page: the real space/app.py imported against the local Hub
with a private adapter and no token, a rejected token, an unknown revision or a missing base.

Each case checks the page (HTML served, the problem in the page's config), an API call to
`/chat` (answered with the same problem) and the log (one `error:` line saying the same).
"""
from __future__ import annotations

import contextlib
import importlib
import os

import pytest

from space_support import SHORT_ANSWER_TOKENS, environment, free_port, make_adapter, push_adapter, space_importable


@pytest.fixture(scope="module")
def private_adapter(tiny_base, hub_server, tmp_path_factory) -> str:
    """A private adapter repo whose `main` holds a working adapter for the tiny base."""
    folder = make_adapter(tiny_base, tmp_path_factory.mktemp("startup") / "adapter", SHORT_ANSWER_TOKENS)
    repo = hub_server.repo_id("startup-adapter")
    push_adapter(hub_server, repo, "main", folder)
    return repo


@contextlib.contextmanager
def launched_space(variables: dict[str, str]):
    """space/app.py imported with these variables (HF_TOKEN only when given), launched on loopback."""
    saved_token = os.environ.pop("HF_TOKEN", None)
    try:
        with space_importable(), environment(variables):
            app = importlib.import_module("app")
            port = free_port()
            app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
            try:
                yield app, f"http://127.0.0.1:{port}/"
            finally:
                app.demo.close()
                os.environ.pop("HF_TOKEN", None)
    finally:
        if saved_token is not None:
            os.environ["HF_TOKEN"] = saved_token


def misconfigurations(repo: str, base: str, read_token: str) -> dict[str, tuple[dict[str, str], str]]:
    """name -> (Space variables, what the message must say)."""
    good = {"BASE_MODEL": base, "ADAPTER_REPO": repo, "ADAPTER_REVISION": "main"}
    return {
        "private-adapter-without-token": (good, f"adapter {repo} @ main: RepositoryNotFoundError (no such repo, "
                                                "or it is private and no HF_TOKEN secret is set)"),
        "rejected-token": (good | {"HF_TOKEN": "hf_not_a_valid_token"},
                           f"adapter {repo} @ main: 401 Unauthorized (the HF_TOKEN secret is invalid or expired"),
        "unknown-revision": (good | {"HF_TOKEN": read_token, "ADAPTER_REVISION": "exp/never-pushed"},
                             f"adapter {repo} @ exp/never-pushed: RevisionNotFoundError"),
        "missing-base": (good | {"HF_TOKEN": read_token, "BASE_MODEL": "tester/no-such-base"},
                         "base model tester/no-such-base @ main: not found"),
        "unknown-base-revision": (good | {"HF_TOKEN": read_token, "BASE_REVISION": "v-none"},
                                  f"base model {base} @ v-none:"),
        "missing-variables": ({"BASE_MODEL": "", "ADAPTER_REPO": ""},
                              "set the Space variable(s) BASE_MODEL, ADAPTER_REPO"),
    }


CASES = ["private-adapter-without-token", "rejected-token", "unknown-revision", "missing-base",
         "unknown-base-revision", "missing-variables"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_misconfigured_space_serves_a_page_saying_what_to_fix(case, private_adapter, hub_server, tiny_base, capfd):
    import requests
    from gradio_client import Client

    base = str(tiny_base)
    if case == "unknown-base-revision":  # a revision only means something for a Hub repo
        base = hub_server.repo_id("startup-base")
        from huggingface_hub import HfApi

        api = HfApi(token=hub_server.write_token)
        api.create_repo(base)
        api.upload_folder(repo_id=base, folder_path=tiny_base)
    variables, expected = misconfigurations(private_adapter, base, hub_server.read_token)[case]
    with launched_space(variables) as (app, url):
        assert app.assistant is None
        page = requests.get(url, timeout=30)
        config = requests.get(url + "config", timeout=30).text
        answer = Client(url, verbose=False).predict("What causes anaemia?", api_name="/chat")
    log_lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "This Space could not start" in config and expected in config
    assert answer.startswith("This Space could not start: ") and expected in answer
    assert len(log_lines) == 1 and expected in log_lines[0], log_lines
    problem = log_lines[0].removeprefix("error: the Space cannot start: ")
    assert problem in config and problem in answer  # the page and the log say the same
    assert hub_server.read_token not in config + answer + log_lines[0]


def test_analytics_are_off_before_gradio_is_imported(private_adapter, hub_server, tiny_base):
    variables = {"BASE_MODEL": str(tiny_base), "ADAPTER_REPO": private_adapter, "HF_TOKEN": hub_server.read_token,
                 "GRADIO_ANALYTICS_ENABLED": "True"}
    with launched_space(variables) as (app, _):
        import gradio.analytics

        assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
        assert not gradio.analytics.analytics_enabled() and not app.demo.analytics_enabled


@pytest.mark.slow
def test_footer_names_the_base_commit_served_as_it_names_the_adapters(private_adapter, hub_server, tiny_base):
    """A Hub base is resolved to its commit and loaded there, and the footer links that commit, as the adapter's."""
    import requests
    from huggingface_hub import HfApi, constants

    base = hub_server.repo_id("footer-base")
    api = HfApi(token=hub_server.write_token)
    api.create_repo(base)
    sha = api.upload_folder(repo_id=base, folder_path=tiny_base).oid
    api.upload_file(path_or_fileobj=b"later", path_in_repo="notes.txt", repo_id=base)  # main moves on
    variables = {"BASE_MODEL": base, "BASE_REVISION": sha, "ADAPTER_REPO": private_adapter,
                 "HF_TOKEN": hub_server.read_token}
    with launched_space(variables) as (app, url):
        assert app.assistant.base_sha == sha
        config = requests.get(url + "config", timeout=30).text
    assert f"[{base} @ {sha[:12]}]({constants.ENDPOINT}/{base}/tree/{sha}), requested as `{sha}`" in config
    with launched_space(variables | {"BASE_REVISION": "main"}) as (app, url):
        assert app.assistant.base_sha == api.model_info(base).sha != sha

