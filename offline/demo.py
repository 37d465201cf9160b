"""`make demo`: the whole product, offline, on a laptop CPU.

Builds the real pretrained base (SmolLM2-135M-Instruct, from its registry package), prepares the
bundled sample flashcards, trains two short experiments, evaluates base and adapters, exports the best one
(merged weights, GGUF through llama.cpp), starts the local Hub server, publishes the dataset, adapters, the
exports, cards and the Space there, then runs the Space exactly as the Hub would: from a fresh
download of the Space repo, configured only by its Space variables.

Each stage runs as its own `python -m ...` process, the same commands a user runs by hand.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import EnvironmentProblem, UserError
from common.hub_errors import hub_errors
from training.config import REPO_ROOT

DEMO_CONFIG_DIR = REPO_ROOT / "configs" / "demo"
WORKDIR = REPO_ROOT / "artifacts" / "demo"
REAL_BASE = REPO_ROOT / "artifacts" / "real-base"
DEMO_USER = "demo"


def add_arguments(parser) -> None:
    parser.add_argument("--hub-port", type=int, default=8089, help="port of the local Hub server")
    parser.add_argument("--space-port", type=int, default=7860, help="port of the Space app")
    parser.add_argument("--fresh", action="store_true", help="start from scratch (removes artifacts/demo)")
    parser.add_argument(
        "--no-wait", action="store_true", help="stop the server and the Space once they answered (for benchmarks)"
    )


@dataclass
class Demo:
    hub_port: int
    space_port: int
    workdir: Path = WORKDIR
    processes: list[subprocess.Popen] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    @property
    def space_url(self) -> str:
        return f"http://127.0.0.1:{self.space_port}"

    def step(self, label: str, *argv: str, env: dict | None = None) -> None:
        print(f"\n==> {label}", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env)
        self.timings[label] = time.perf_counter() - start
        if result.returncode:
            # The stage printed its own one-line error; the demo exits with the stage's code (4 for the Hub, ...).
            raise UserError(f"demo stage '{label}' failed (exit {result.returncode}); its error is above",
                            exit_code=result.returncode if 2 <= result.returncode <= 6 else 1)

    def start(self, label: str, argv: list[str], env: dict, cwd: Path, ready_url: str, timeout: float) -> None:
        print(f"\n==> {label}", flush=True)
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
        self.processes.append(proc)
        wait_until_answering(ready_url, proc, timeout, label)
        self.timings[label] = time.perf_counter() - start

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()


def wait_until_answering(url: str, proc: subprocess.Popen, timeout: float, label: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EnvironmentProblem(f"{label} exited with code {proc.returncode} before answering on {url}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered, even if with an error status
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise EnvironmentProblem(f"{label} did not answer on {url} within {timeout:.0f} s")


def hub_env(demo: Demo, token: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=demo.hub_url,
        HF_TOKEN=token,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False",  # nothing phones home: gradio would report to api.gradio.app
        HF_HOME=str(demo.workdir / "hf-home"),
    )
    for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(offline, None)
    return env


def run_pipeline(demo: Demo) -> None:
    config = str(DEMO_CONFIG_DIR)
    demo.step("build the real base model", "-m", "training", "build-real-base", "--output", str(REAL_BASE))
    demo.step("prepare the sample flashcards", "-m", "training", "prepare", "--config", f"{config}/data.yaml")
    demo.step("train two experiments", "-m", "training", "train", "--config-dir", config, "--all")
    demo.step("evaluate base and adapters", "-m", "training", "evaluate", "--config-dir", config)
    demo.step("export the best adapter (merged, GGUF)", "-m", "training", "export", "--config-dir", config)


def publish(demo: Demo) -> dict[str, str]:
    from hub.config import load_hub_config
    from offline.server import ensure_token

    hub_dir = demo.workdir / "hub"
    token = ensure_token(hub_dir, DEMO_USER, "write")
    env = hub_env(demo, token)
    demo.start(
        "start the local Hub server",
        [sys.executable, "-m", "offline", "serve", "--dir", str(hub_dir), "--port", str(demo.hub_port)],
        env, REPO_ROOT, f"{demo.hub_url}/api/whoami-v2", timeout=30,
    )
    base_commit = upload_base(env, load_hub_config(DEMO_CONFIG_DIR).base_model_repo)
    # The cards and the Space name the base at the commit just published, as they name the adapter.
    pinned = ["--config-dir", str(DEMO_CONFIG_DIR), "--set", f"base_model_revision={base_commit}"]
    demo.step("push dataset, adapters, exports and cards", "-m", "hub", "push", *pinned, env=env)
    demo.step("deploy the Space", "-m", "hub", "deploy-space", *pinned, env=env)
    return env


def upload_base(env: dict[str, str], repo_id: str) -> str:
    """The runs trained on a local folder; the Space and the cards name it by its Hub id. Returns the commit
    that holds it."""
    print(f"\n==> upload the base model as {repo_id}", flush=True)
    os.environ.update(env)  # before huggingface_hub is first imported: it reads HF_ENDPOINT once
    from huggingface_hub import HfApi

    api = HfApi()
    with hub_errors(repo_id, "main", "cannot upload the base model to"):
        api.create_repo(repo_id, exist_ok=True)
        # Unchanged files make no new commit on a rerun (the upload compares hashes).
        commit = api.upload_folder(repo_id=repo_id, folder_path=REAL_BASE,
                                   commit_message="SmolLM2-135M-Instruct, dequantized from its GGUF (see real_base.json)")
        return commit.oid


def launch_space(demo: Demo, env: dict[str, str]) -> None:
    """Run the Space as the Hub would: a fresh copy of its repo, configured by its variables."""
    from hub.config import load_hub_config
    from hub.space_deploy import checkout_space

    hub_config = load_hub_config(DEMO_CONFIG_DIR)
    checkout, variables = checkout_space(hub_config, demo.workdir / "space-checkout", env)
    space_env = {**env, **variables, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(demo.space_port)}
    space_env.pop("HF_TOKEN")  # a public Space reads public repos; it never holds the publisher's token
    demo.start(
        "launch the Space app", [sys.executable, "app.py"], space_env, checkout, demo.space_url, timeout=180
    )


def run(args) -> int:
    demo = Demo(args.hub_port, args.space_port)
    if args.fresh and demo.workdir.exists():
        shutil.rmtree(demo.workdir)
    start = time.perf_counter()
    try:
        run_pipeline(demo)
        env = publish(demo)
        launch_space(demo, env)
        demo.timings["total"] = time.perf_counter() - start
        print_summary(demo)
        if not args.no_wait:
            print("Press Ctrl-C to stop the Space and the local Hub server.", flush=True)
            wait_for_interrupt(demo)
    finally:
        demo.stop()
    return 0


def wait_for_interrupt(demo: Demo) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while all(proc.poll() is None for proc in demo.processes):
            time.sleep(1)
        raise EnvironmentProblem("the Space or the local Hub server stopped unexpectedly")
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)


def print_summary(demo: Demo) -> None:
    from hub.config import load_hub_config

    cfg = load_hub_config(DEMO_CONFIG_DIR)
    print("\n" + "-" * 72)
    for label, seconds in demo.timings.items():
        print(f"  {label:<40} {seconds:7.1f} s")
    print("-" * 72)
    print(f"  Space (chat in your browser):  {demo.space_url}")
    print(f"  Adapter model card:            {demo.hub_url}/{cfg.namespace}/{cfg.adapter_repo}/blob/main/README.md")
    print(f"  GGUF model card:               {demo.hub_url}/{cfg.namespace}/{cfg.gguf_repo}/blob/main/README.md")
    print(f"  Dataset card:                  {demo.hub_url}/datasets/{cfg.namespace}/{cfg.dataset_repo}/blob/main/README.md")
    print(f"  Evaluation table:              {REPO_ROOT / cfg.eval_dir / 'comparison.md'}")
    print("-" * 72, flush=True)
