"""`make demo` end to end, on the real base (SmolLM2-135M-Instruct): from a copy of the repo with nothing
generated but the real base (the session's, already built; its build is tested in test_real_base.py, and the demo's
build stage finds it up to date), the demo leaves a running Space that streams a real answer to a headless browser
and to gradio_client, and a model card on the local Hub showing the adapter beating the base, with example answers,
the base's real size and the base at the commit the demo published it at."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from demo_support import copy_repo
from reliability_support import interactive_signals
from space_support import chromium_page, free_port, needs_chromium

pytestmark = [pytest.mark.slow]
READY = "Press Ctrl-C to stop"


@pytest.fixture(scope="module")
def demo(real_base, tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("demo-repo"))
    # Hard links: the demo reads the base and would swap in a new folder, never write into these files.
    shutil.copytree(real_base, root / "artifacts" / "real-base", copy_function=os.link)
    log_path = root / "demo.log"
    hub_port, space_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offline", "demo", "--hub-port", str(hub_port), "--space-port", str(space_port)],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, preexec_fn=interactive_signals,
        )
    deadline = time.monotonic() + 900
    while READY not in log_path.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    output = log_path.read_text()
    assert READY in output, f"the demo did not get ready (exit {proc.poll()}):\n{output[-4000:]}"
    yield {"root": root, "proc": proc, "output": output, "hub": f"http://127.0.0.1:{hub_port}",
           "space": f"http://127.0.0.1:{space_port}"}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def is_real_answer(text: str) -> bool:
    """Words and a finished sentence, on topic: the fine-tuned SmolLM2 answers "Immediate epinephrine."
    (the sample flashcards' answers are that short); a random-weight model produced neither."""
    return (len(re.findall(r"[A-Za-z]{3,}", text)) >= 2 and bool(re.search(r"[.!?]\s*$", text.strip()))
            and ("epinephrine" in text.lower() or "adrenaline" in text.lower()))


def test_demo_prints_the_urls_and_a_timing_table(demo):
    assert demo["space"] in demo["output"]
    assert re.search(r"Adapter model card:\s+http://127\.0\.0\.1:\d+/\S+/blob/main/README\.md", demo["output"])
    assert re.search(r"total\s+\d+\.\d s", demo["output"])


def test_fine_tuned_adapter_beats_base_and_the_card_says_so(demo):
    work = demo["root"] / "artifacts/demo"
    comparison = json.loads((work / "eval/comparison.json").read_text())
    best = json.loads((work / "runs/best.json").read_text())["experiment"]
    metrics = json.loads((work / "runs" / best / "metrics.json").read_text())
    models = comparison["models"]
    assert metrics["final_eval_loss"] < metrics["initial_eval_loss"]  # validation loss: adapter below base
    assert models[best]["perplexity"]["value"] < models["base"]["perplexity"]["value"]
    assert models["base"]["rougeL"]["value"] > 0.05 and models["base"]["bleu"]["value"] > 0  # real answers
    paired = comparison["paired_vs_base"][best]["rougeL"]
    assert paired["ci_low"] > 0, f"ROUGE-L gain not significant: {paired}"

    url = re.search(r"Adapter model card:\s+(\S+)", demo["output"]).group(1)
    page = urllib.request.urlopen(url, timeout=30).read().decode()
    assert "<table>" in page and "perplexity" in page.lower()
    assert f"{paired['diff']:+.4f}" in page  # the paired delta is on the card
    assert "not" in page.lower() and "medical" in page.lower()  # the disclaimer travels with the card


def demo_base_commit(demo) -> tuple[str, str]:
    """The base the demo published on its local Hub, and the commit holding it."""
    from huggingface_hub import HfApi

    from hub.config import load_hub_config

    repo = load_hub_config(demo["root"] / "configs" / "demo").base_model_repo
    return repo, HfApi(endpoint=demo["hub"]).model_info(repo).sha


def test_the_card_shows_example_answers_the_base_size_and_the_published_base(demo):
    from huggingface_hub import ModelCard

    from hub.cards import inert
    from training.config import README_QUESTIONS

    url = re.search(r"Adapter model card:\s+(\S+)", demo["output"]).group(1)
    page = urllib.request.urlopen(url, timeout=30).read().decode()
    text = ModelCard(urllib.request.urlopen(url.replace("/blob/", "/resolve/"), timeout=30).read().decode()).text
    best = json.loads((demo["root"] / "artifacts/demo/runs/best.json").read_text())["experiment"]
    assert text.count(f"| reference | base | {best} |") >= 4  # examples, each base beside fine-tuned
    assert all(f". {inert(question)}**" in text for question in README_QUESTIONS)
    assert page.count("<th>reference</th>") >= 4 and README_QUESTIONS[0] in page
    assert "A 135M-parameter model" in text and "1.1B" not in text
    repo, commit = demo_base_commit(demo)
    assert f"| `base_model` | `{repo}` |" in text and f"| `base_revision` | `{commit}` |" in text
    assert f'AutoModelForCausalLM.from_pretrained("{repo}", revision="{commit}")' in text


def test_the_demo_space_answers_through_gradio_client(demo):
    from gradio_client import Client

    answer = Client(demo["space"], verbose=False).predict(
        "What is the first-line treatment for anaphylaxis?", api_name="/chat")
    text = answer if isinstance(answer, str) else json.dumps(answer)
    assert is_real_answer(text), text


@pytest.mark.browser
@needs_chromium
def test_the_running_space_answers_in_a_browser(demo):
    from playwright.sync_api import expect

    repo, commit = demo_base_commit(demo)
    with chromium_page(demo["space"]) as page:
        expect(page.locator("#disclaimer")).to_be_visible()
        expect(page.locator("#served-revision")).to_contain_text("demo/")
        expect(page.locator("#served-revision")).to_contain_text(f"on base model {repo} @ {commit[:12]}")
        box = page.get_by_test_id("textbox").first
        box.fill("What is the first-line treatment for anaphylaxis?")
        asked = time.monotonic()
        box.press("Enter")
        answer, text = page.locator(".bot.message").last, ""
        while time.monotonic() - asked < 30 and not is_real_answer(text):
            text = answer.inner_text() if answer.count() else ""
            time.sleep(0.2)
        assert is_real_answer(text), f"no answer in real words within 30 s on 2 cores: {text!r}"


@pytest.mark.browser
@needs_chromium
def test_the_card_page_shows_the_example_answers_in_a_browser(demo):
    from training.config import README_QUESTIONS

    url = re.search(r"Adapter model card:\s+(\S+)", demo["output"]).group(1)
    with chromium_page(url) as page:
        tables = page.locator("table").filter(has_text="reference")
        assert tables.count() >= 4
        for question in README_QUESTIONS:
            assert page.get_by_text(question).count() == 1
        for table in tables.all():
            reference, base, tuned = table.locator("tbody td").all_inner_texts()
            assert base.strip() and tuned.strip()  # both answers shown, side by side


@pytest.mark.browser
@needs_chromium
def test_the_gguf_repo_page_shows_how_to_run_it_and_its_checks_in_a_browser(demo):
    """The demo exported its best adapter and published it: the GGUF repo's card on the local Hub names the
    commands that resolve its files by type, and each file's size and checks against the adapter."""
    url = re.search(r"GGUF model card:\s+(\S+)", demo["output"]).group(1)
    repo = url.split("/blob/")[0].split("/", 3)[3]
    with chromium_page(url) as page:
        for command in (f"llama-cli -hf {repo}:Q4_K_M", f"ollama run hf.co/{repo}:Q4_K_M"):
            assert page.get_by_text(command).count() >= 1, command
        rows = page.locator("table").filter(has_text="NMSE").locator("tbody tr")
        assert [row.locator("td").first.inner_text() for row in rows.all()] == ["F16", "Q4_K_M"]


def test_ctrl_c_stops_the_space_and_the_hub_server(demo):
    proc = demo["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    for url in (demo["space"], demo["hub"] + "/api/whoami-v2"):
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)
