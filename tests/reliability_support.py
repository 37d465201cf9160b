"""Shared by the reliability tests (test_bad_inputs, test_faults, test_secrets; RELIABILITY.md).

`build_cli_pipeline` runs the real pipeline as a user would, one `python -m ...` process per step
(prepare -> train -> evaluate -> push -> deploy-space) against the local Hub server, with a
recognisable write token in HF_TOKEN, and keeps every step's output for the secrets checks; the
fault tests push its artifacts again under fresh repository names.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_PREFIX = "hf_local_SECRET"
EXPERIMENT = "alpha"  # the one experiment the pipeline trains (branch exp/alpha)
MEDQA_ROWS = [
    {"question": "Which vitamin deficiency causes scurvy?", "answer_idx": "C",
     "options": {"A": "Vitamin A", "B": "Vitamin D", "C": "Vitamin C", "D": "Vitamin K"}},
    {"question": "Which organ secretes insulin?", "answer_idx": "B",
     "options": {"A": "Liver", "B": "Pancreas", "C": "Spleen", "D": "Kidney"}},
]


def interactive_signals() -> None:
    """`preexec_fn` of a child that a test stops with Ctrl-C: SIGINT as an interactive terminal has it.

    A shell's background job (`cmd &`, as CI runners and nohup start test suites) inherits SIGINT ignored, and a
    Python started with it ignored never raises KeyboardInterrupt: the test would stop nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def cli(module: str, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m <module> args...` from the repo root, output captured as text."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def _run_main(package: str, argv, stdout: io.StringIO, stderr: io.StringIO) -> int:
    main = importlib.import_module(f"{package}.cli").main
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        return main(list(argv))


def run_in_process(package: str, *argv: str) -> tuple[int, str, str]:
    """`python -m <package> argv...` (training or hub) in the test process (no import cost):
    exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = _run_main(package, argv, out, err)
    return code, out.getvalue(), err.getvalue()


def run_hub(*argv: str) -> tuple[int, str]:
    """`python -m hub ...` in the test process, stdout and stderr captured together."""
    out = io.StringIO()
    return _run_main("hub", argv, out, out), out.getvalue()


def check_one_line_error(code: int, stderr: str, expected_code: int, fragment: str) -> str:
    """The error contract: the documented exit code, exactly one `error:` line, no traceback."""
    assert code == expected_code, f"exit {code}, expected {expected_code}; stderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def digests(*paths: Path) -> dict[str, str]:
    """sha256 of every file under the given files or folders, to prove nothing was modified."""
    files = []
    for path in map(Path, paths):
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def add_token(data_dir: Path, token: str, user: str, role: str = "write") -> str:
    """Register a token of our choosing (ensure_token makes random ones) in the server's tokens.json."""
    from offline.server import auth
    from common.atomic import write_json_atomic

    with auth._lock:
        tokens = auth.load_tokens(data_dir)
        tokens[token] = {"user": user, "role": role}
        write_json_atomic(auth.tokens_path(data_dir), {"tokens": tokens})
    return token


def write_hub_yaml(folder: Path, work: Path, namespace: str, suffix: str, **settings) -> Path:
    """configs/hub.yaml for `work`'s artifacts, repositories named after `suffix` (fresh per test)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"namespace": namespace, "dataset_repo": f"data-{suffix}", "adapter_repo": f"adapter-{suffix}",
              "space_repo": f"space-{suffix}", "space_hardware": "t4-small",
              "data_dir": str(work / "data" / "processed"), "runs_dir": str(work / "runs"),
              "eval_dir": str(work / "eval"), **settings}
    (folder / "hub.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


@dataclass
class CliPipeline:
    work: Path
    config_dir: Path
    token: str
    suffix: str  # of the repository names
    repos: dict[str, str]  # dataset / adapter / space -> repo id
    outputs: dict[str, str] = field(default_factory=dict)  # step -> stdout + stderr


def build_cli_pipeline(work: Path, hub_server, tiny_base: Path, sample_flashcards: Path) -> CliPipeline:
    import uuid

    token = add_token(hub_server.data_dir, f"{SECRET_PREFIX}_{uuid.uuid4().hex}", hub_server.user)
    configs = work / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "data.yaml").write_text(yaml.safe_dump({
        "source": str(sample_flashcards), "revision": None, "tokenizer": str(tiny_base), "tokenizer_revision": None,
        "max_examples": 40, "output_dir": str(work / "data" / "processed")}), encoding="utf-8")
    (configs / "experiments" / f"{EXPERIMENT}.yaml").write_text(yaml.safe_dump({
        "base_model": str(tiny_base), "base_revision": None, "data_dir": str(work / "data" / "processed"),
        "runs_dir": str(work / "runs"), "learning_rate": 5e-3, "max_steps": 2, "eval_steps": 2,
        "logging_steps": 1, "save_steps": 2, "per_device_batch_size": 2, "effective_batch_size": 2,
        "max_seq_length": 96, "quantization": "none", "precision": "fp32", "lora": {"r": 4, "alpha": 8}}))
    medqa = work / "medqa.jsonl"
    medqa.write_text("".join(json.dumps(row) + "\n" for row in MEDQA_ROWS), encoding="utf-8")
    suffix = uuid.uuid4().hex[:8]
    write_hub_yaml(configs, work, hub_server.user, suffix)
    pipeline = CliPipeline(work, configs, token, suffix, {kind: f"{hub_server.user}/{kind if kind != 'dataset' else 'data'}-{suffix}"
                                                          for kind in ("dataset", "adapter", "space")})
    steps = {
        "prepare": ("training", "prepare", "--config", configs / "data.yaml"),
        "train": ("training", "train", "--all", "--config-dir", configs),
        "evaluate": ("training", "evaluate", "--config-dir", configs, "--set", f"data_dir={work / 'data' / 'processed'}",
                     "--set", f"runs_dir={work / 'runs'}", "--set", f"output_dir={work / 'eval'}", "--set", "limit=3",
                     "--set", "max_new_tokens=4", "--set", f"medqa={medqa}", "--set", "medqa_limit=2",
                     "--set", "bootstrap_resamples=20"),
        "push": ("hub", "push", "--config-dir", configs),
        "deploy-space": ("hub", "deploy-space", "--config-dir", configs),
    }
    with server_log() as log:
        for step, (module, *args) in steps.items():
            result = cli(module, *args, env={"HF_TOKEN": token})
            pipeline.outputs[step] = result.stdout + result.stderr
            assert result.returncode == 0, f"{step} failed:\n{pipeline.outputs[step][-4000:]}"
    pipeline.outputs["hub server log"] = "\n".join(log)
    return pipeline


def faults(hub_server, method: str, rules: list[dict] | None = None) -> dict:
    """The local Hub server's injected faults: GET lists them, POST sets `rules`, DELETE clears them."""
    body = json.dumps({"rules": rules}).encode() if rules is not None else None
    request = urllib.request.Request(f"{hub_server.url}/_local/faults", data=body, method=method, headers={
        "Authorization": f"Bearer {hub_server.write_token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


@contextlib.contextmanager
def server_log():
    """The local Hub server's log lines (INFO: one per request) while the block runs."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("offline.server")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
