"""`make demo` end to end, on the real base (SmolLM2-135M-Instruct): from a copy of the repo with
nothing generated, the demo leaves a running Space that streams a real answer to a headless browser
and to gradio_client, and a model card on the local Hub showing the adapter beating the base."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from demo_support import copy_repo
from space_support import chromium_page, free_port, needs_chromium

pytestmark = [pytest.mark.slow]
READY = "Press Ctrl-C to stop"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("demo-repo"))
    log_path = root / "demo.log"
    hub_port, space_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offline", "demo", "--hub-port", str(hub_port), "--space-port", str(space_port)],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
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

    with chromium_page(demo["space"]) as page:
        expect(page.locator("#disclaimer")).to_be_visible()
        expect(page.locator("#served-revision")).to_contain_text("demo/")
        box = page.get_by_test_id("textbox").first
        box.fill("What is the first-line treatment for anaphylaxis?")
        asked = time.monotonic()
        box.press("Enter")
        answer, text = page.locator(".bot.message").last, ""
        while time.monotonic() - asked < 30 and not is_real_answer(text):
            text = answer.inner_text() if answer.count() else ""
            time.sleep(0.2)
        assert is_real_answer(text), f"no answer in real words within 30 s on 2 cores: {text!r}"


def test_ctrl_c_stops_the_space_and_the_hub_server(demo):
    proc = demo["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    for url in (demo["space"], demo["hub"] + "/api/whoami-v2"):
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)
