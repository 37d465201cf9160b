"""Never lose a user's data (issue 14): commands replace only what they wrote, a failed or stopped
re-train leaves the last good run intact, and bad input ends in one line, not a traceback.

Every command case checks the error contract (exactly one `error:` line naming what and where, the
documented exit code, no traceback) and that every file that existed before, the user's and the
finished run's, is byte-identical afterwards (sha256) with no file added. The cases run the CLI entry
points in this process over one tiny trained run (copied per case); the signal cases run
`python -m training` for real.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reliability_support import REPO_ROOT, check_one_line_error, digests, interactive_signals, run_in_process
from common.atomic import OWNER_MARKER
from common.errors import EXIT_DATA, EXIT_ENV, EXIT_USAGE
from training.run_folder import RunLock, lock_path, staging_dir

EXPERIMENT = "alpha"
GOOD = {"question": "What is the antidote for heparin overdose?", "answer": "Protamine sulfate."}
RUN_SETTINGS = {  # 4 steps, a checkpoint every 2: a finished run with two checkpoints in seconds
    "learning_rate": 5e-3, "max_steps": 4, "eval_steps": 2, "logging_steps": 1, "save_steps": 2,
    "per_device_batch_size": 2, "effective_batch_size": 2, "max_seq_length": 96, "quantization": "none",
    "precision": "fp32", "lora": {"r": 4, "alpha": 8}}


@dataclass
class World:
    """A prepared dataset and one finished run of `alpha` (read-only: cases copy the run)."""

    root: Path
    base: Path
    data: Path
    runs: Path


@pytest.fixture(scope="module")
def world(tiny_base, sample_flashcards, tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("safety-world")
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({
        "source": str(sample_flashcards), "revision": None, "tokenizer": str(tiny_base), "tokenizer_revision": None,
        "max_examples": 40, "output_dir": str(root / "data")}), encoding="utf-8")
    code, out, err = run_in_process("training", "prepare", "--config", str(data_yaml))
    assert code == 0, err
    world = World(root, tiny_base, root / "data", root / "runs")
    code, out, err = run_in_process("training", "train", "--experiment", str(experiment_file(world, root)))
    assert code == 0, err
    assert sorted(p.name for p in (world.runs / EXPERIMENT / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2",
                                                                                           "checkpoint-4"]
    return world


def experiment_file(world: World, where: Path, runs: Path | None = None, **changes) -> Path:
    path = where / "experiments" / f"{EXPERIMENT}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"base_model": str(world.base), "base_revision": None, "data_dir": str(world.data),
                "runs_dir": str(runs or world.runs), **RUN_SETTINGS, **changes}
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def copied_runs(world: World, tmp: Path) -> Path:
    runs = tmp / "runs"
    shutil.copytree(world.runs, runs, symlinks=True)
    return runs


def train_argv(world: World, tmp: Path, *sets: str, resume: bool = False) -> list[str]:
    """`train alpha` over a copy of the finished run, with --set overrides."""
    runs = copied_runs(world, tmp) if not (tmp / "runs").exists() else tmp / "runs"
    argv = ["training", "train", "--experiment", str(experiment_file(world, tmp / "configs", runs))]
    for item in sets:
        argv += ["--set", item]
    return argv + (["--resume"] if resume else [])


def user_folder(folder: Path) -> Path:
    """A folder of the user's: their source file and notes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cards.jsonl").write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    (folder / "notes.txt").write_text("my notes, not backed up\n", encoding="utf-8")
    return folder


def prepare_argv(world: World, tmp: Path, output: Path, source: Path | None = None, **settings) -> list[str]:
    config = tmp / "inputs" / "data.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({
        "source": str(source or user_folder(tmp / "inputs") / "cards.jsonl"), "revision": None,
        "tokenizer": str(world.base), "tokenizer_revision": None, **settings}), encoding="utf-8")
    return ["training", "prepare", "--config", str(config), "--set", f"output_dir={output}"]


def hub_config(world: World, tmp: Path, runs: Path | None = None) -> Path:
    folder = tmp / "hub-configs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hub.yaml").write_text(yaml.safe_dump({
        "namespace": "tester", "data_dir": str(world.data), "runs_dir": str(runs or world.runs),
        "eval_dir": str(tmp / "no-eval")}), encoding="utf-8")
    return folder


def dry_run_argv(world: World, tmp: Path, out: Path | str, runs: Path | None = None) -> list[str]:
    return ["hub", "push", "--config-dir", str(hub_config(world, tmp, runs)), "--dry-run", str(out)]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[World, Path], list[str]]  # writes the inputs under tmp; returns argv
    exit_code: int
    fragment: str | tuple[str, ...]  # each must appear in the error line


def run_case(case: Case, world: World, tmp: Path, monkeypatch) -> str:
    monkeypatch.chdir(tmp)
    argv = case.build(world, tmp)
    before, listed = digests(tmp, world.root), entries(tmp)
    code, _, stderr = run_in_process(*argv)
    fragments = (case.fragment,) if isinstance(case.fragment, str) else case.fragment
    line = check_one_line_error(code, stderr, case.exit_code, fragments[0])
    assert all(fragment in line for fragment in fragments), line
    assert digests(tmp, world.root) == before, "a file that existed was changed or removed, or one was added"
    assert entries(tmp) == listed, "a folder or link was added or removed (a temp or .old folder left behind?)"
    return line


def entries(folder: Path) -> list[str]:
    """Every file, folder and link under `folder` (symlinks not followed)."""
    return sorted(str(p) for p in folder.rglob("*"))


# ---- ownership: only folders this project wrote are replaced ---------------------------------------

def prepare_into_user_folder(world, tmp):
    folder = user_folder(tmp / "mine")
    return prepare_argv(world, tmp, folder, source=folder / "cards.jsonl")


def prepare_into_symlink(target_marked: bool):
    def build(world, tmp):
        target = user_folder(tmp / "elsewhere")
        if target_marked:
            (target / OWNER_MARKER).write_text("an earlier output\n")
        (tmp / "out").symlink_to(target, target_is_directory=True)
        return prepare_argv(world, tmp, tmp / "out")
    return build


def prepare_onto_file(world, tmp):
    (tmp / "out").write_text("a file of the user's\n")
    return prepare_argv(world, tmp, tmp / "out")


def dry_run_into_user_folder(world, tmp):
    return dry_run_argv(world, tmp, user_folder(tmp / "dry"))


def dry_run_dot(world, tmp):
    """`--dry-run .` from a checkout: the checkout, .git and uncommitted work must survive."""
    checkout = tmp / "checkout"
    (checkout / ".git").mkdir(parents=True)
    (checkout / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (checkout / "work.py").write_text("print('uncommitted work')\n")
    os.chdir(checkout)
    return dry_run_argv(world, tmp, ".")


def dry_run_into_symlink(world, tmp):
    (tmp / "dry").symlink_to(user_folder(tmp / "elsewhere"), target_is_directory=True)
    return dry_run_argv(world, tmp, tmp / "dry")


def train_over_user_folder(world, tmp):
    runs = copied_runs(world, tmp)
    user_folder(runs / "beta")
    return ["training", "train", "--experiment", str(experiment_file(world, tmp / "configs", runs, name="beta"))]


def train_into_symlinked_run(world, tmp):
    runs = tmp / "runs"
    runs.mkdir()
    (runs / EXPERIMENT).symlink_to(user_folder(tmp / "elsewhere"), target_is_directory=True)
    return train_argv(world, tmp)


def train_with_user_files_in_staging(world, tmp):
    runs = copied_runs(world, tmp)
    user_folder(staging_dir(runs / EXPERIMENT))
    return train_argv(world, tmp)


def tiny_base_over_user_folder(world, tmp):
    return ["training", "build-tiny-base", "--output", str(user_folder(tmp / "base"))]


OWNERSHIP_CASES = [
    Case("prepare-output-holds-the-source-and-notes", prepare_into_user_folder, EXIT_USAGE,
         ("refusing to replace", "mine", OWNER_MARKER)),
    Case("prepare-output-is-a-symlink", prepare_into_symlink(False), EXIT_USAGE, ("is a symbolic link", "elsewhere")),
    Case("prepare-output-is-a-symlink-to-an-earlier-output", prepare_into_symlink(True), EXIT_USAGE,
         "is a symbolic link"),
    Case("prepare-output-is-a-file", prepare_onto_file, EXIT_USAGE, "is a file, not a folder"),
    Case("dry-run-into-a-folder-with-files", dry_run_into_user_folder, EXIT_USAGE, ("refusing to replace", "dry")),
    Case("dry-run-dot-in-a-checkout", dry_run_dot, EXIT_USAGE, ("refusing to replace", "checkout")),
    Case("dry-run-into-a-symlink", dry_run_into_symlink, EXIT_USAGE, "is a symbolic link"),
    Case("train-over-a-folder-of-the-users", train_over_user_folder, EXIT_USAGE, ("refusing to replace", "beta")),
    Case("train-run-folder-is-a-symlink", train_into_symlinked_run, EXIT_USAGE, "is a symbolic link"),
    Case("train-staging-holds-user-files", train_with_user_files_in_staging, EXIT_USAGE,
         ("refusing to replace", ".in-progress")),
    Case("build-tiny-base-over-a-user-folder", tiny_base_over_user_folder, EXIT_USAGE, "refusing to replace"),
]


# ---- what the trainer would reject, refused before anything is written ------------------------------

def retrain(*sets: str):
    return lambda world, tmp: train_argv(world, tmp, *sets)


PRECHECK_CASES = [
    Case("seed-negative", retrain("seed=-1"), EXIT_USAGE, "'seed': Input should be greater than or equal to 0"),
    Case("seed-above-numpy-range", retrain("seed=4294967296"), EXIT_USAGE, "'seed': Input should be less than"),
    Case("unknown-lr-scheduler", retrain("lr_scheduler=bogus"), EXIT_USAGE,
         ("lr_scheduler 'bogus' is not a transformers scheduler", "cosine_with_restarts")),
    Case("lr-scheduler-close-to-a-name", retrain("lr_scheduler=cosin"), EXIT_USAGE, "did you mean 'cosine'?"),
    Case("lr-scheduler-needing-min-lr", retrain("lr_scheduler=cosine_with_min_lr"), EXIT_USAGE, "needs a min_lr"),
    Case("lora-target-module-missing-from-base", retrain("lora.target_modules=[q_proj, q_projj]"), EXIT_USAGE,
         ("lora target module 'q_projj' is not a layer of the base model", "did you mean 'q_proj'?")),
    Case("lora-target-module-not-a-layer", retrain("lora.target_modules=[mlp]"), EXIT_USAGE,
         "which LoRA cannot adapt"),
    Case("modules-to-save-missing-from-base", retrain("lora.modules_to_save=[lm_heads]"), EXIT_USAGE,
         "modules_to_save 'lm_heads' is not a layer"),
    Case("epochs-infinite", retrain("epochs=.inf"), EXIT_USAGE, "'epochs': Input should be a finite number"),
    Case("learning-rate-nan", retrain("learning_rate=.nan"), EXIT_USAGE, "'learning_rate': Input should be a finite"),
    Case("lora-dropout-nan", retrain("lora.dropout=.nan"), EXIT_USAGE, "'lora.dropout'"),
    Case("lora-r-huge", retrain("lora.r=100000000"), EXIT_USAGE, "'lora.r': Input should be less than or equal to"),
    Case("lora-r-above-every-layer-width", retrain("lora.r=1024"), EXIT_USAGE, "lora.r 1024 is above the width"),
    Case("max-seq-length-huge", retrain("max_seq_length=1000000000"), EXIT_USAGE, "'max_seq_length'"),
    Case("max-steps-below-minus-one", retrain("max_steps=-5"), EXIT_USAGE, "'max_steps'"),
    Case("config-problems-reported-together", retrain("seed=-1", "epochs=.inf", "lora.r=0"), EXIT_USAGE,
         ("'seed'", "'epochs'", "'lora.r'")),
    Case("trainer-problems-reported-together", retrain("lr_scheduler=bogus", "lora.target_modules=[nope]"),
         EXIT_USAGE, ("2 problems", "lr_scheduler 'bogus'", "'nope'")),
]


# ---- a lock per run folder ---------------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from training.run_folder import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def lock_holder():
    """Start a real second process holding a run folder's lock; yields a function (run_dir -> process)."""
    started = []

    def hold(run_dir: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], cwd=REPO_ROOT, text=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE)
        started.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait(timeout=30)


def test_second_train_of_a_running_experiment_is_refused(world, tmp_path, monkeypatch, lock_holder):
    argv = train_argv(world, tmp_path)
    holder = lock_holder(tmp_path / "runs" / EXPERIMENT)
    case = Case("second-train-while-one-runs", lambda w, t: argv, EXIT_USAGE,
                (f"is in use: process {holder.pid} is training it", str(lock_path(tmp_path / "runs" / EXPERIMENT))))
    run_case(case, world, tmp_path, monkeypatch)


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "runs" / EXPERIMENT
    lock_path(run_dir).parent.mkdir(parents=True)
    lock_path(run_dir).write_text(dead.stdout)  # what a SIGKILLed trainer leaves: its pid, no flock
    with RunLock(run_dir):
        assert lock_path(run_dir).read_text() == f"{os.getpid()}\n"
    assert f"taking over the lock of process {dead.stdout.strip()}" in capsys.readouterr().out
    assert not lock_path(run_dir).parent.exists()  # released: the lock file and the empty folder are gone


# ---- input limits: YAML alias bombs, JSON depth and number size, errors naming file and line -----------

BOMB = "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BOMB  # 9**9 values, 600 bytes


def write_input(name: str, content: str):
    def build(world, tmp):
        path = tmp / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return path
    return build


def prepare_config_text(text: str):
    def build(world, tmp):
        return ["training", "prepare", "--config", str(write_input("data.yaml", text)(world, tmp))]
    return build


def experiment_text(text: str):
    def build(world, tmp):
        return ["training", "train", "--experiment", str(write_input("trial.yaml", text)(world, tmp))]
    return build


def bomb_in_set(world, tmp):
    levels = ["&a [" + ", ".join(["q_proj"] * 9) + "]"]
    levels += [f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]" for prev, name in zip("abcdefgh", "bcdefghi")]
    return train_argv(world, tmp, "lora.target_modules=[" + ", ".join(levels) + "]")


def prepare_source(name: str, content: str, **settings):
    def build(world, tmp):
        return prepare_argv(world, tmp, tmp / "out", source=write_input(name, content)(world, tmp), **settings)
    return build


def run_config(text: str, dry_run: bool = True):
    """`hub push` (--dry-run, or for real) over a copy of the finished run whose config.yaml was edited by hand."""
    def build(world, tmp):
        runs = copied_runs(world, tmp)
        (runs / EXPERIMENT / "config.yaml").write_text(text, encoding="utf-8")
        if not dry_run:
            return ["hub", "push", "--config-dir", str(hub_config(world, tmp, runs))]
        return dry_run_argv(world, tmp, tmp / "dry", runs)
    return build


NESTED = "[" * 5000 + "]" * 5000
BIG_NUMBER = "7" * 5000

INPUT_LIMIT_CASES = [
    Case("yaml-alias-bomb-data-config", prepare_config_text(BOMB), EXIT_USAGE,
         ("data.yaml: line", "aliases expand to more than 100,000 values")),
    Case("yaml-alias-bomb-experiment", experiment_text(BOMB), EXIT_USAGE, ("trial.yaml", "alias bomb")),
    Case("yaml-recursive-alias", prepare_config_text("source: &s [*s]\n"), EXIT_USAGE,
         ("data.yaml: line 1", "recursive alias")),
    Case("yaml-nested-too-deeply", prepare_config_text("source: " + NESTED + "\n"), EXIT_USAGE,
         ("data.yaml", "nested too deeply")),
    Case("yaml-alias-bomb-in-set", bomb_in_set, EXIT_USAGE, ("--set lora.target_modules: line 1", "alias bomb")),
    Case("run-config-alias-bomb-during-push", run_config(BOMB), EXIT_USAGE, ("config.yaml: line", "alias bomb")),
    Case("run-config-broken-by-hand-during-push", run_config("learning_rate: [0.1\nseed: 3\n", dry_run=False),
         EXIT_USAGE,
         (f"{EXPERIMENT}/config.yaml", "invalid YAML")),
    Case("run-config-not-a-mapping-during-push", run_config("- learning_rate\n"), EXIT_USAGE,
         "expected a mapping of settings"),
    Case("run-config-bad-value-during-push", run_config(f"name: {EXPERIMENT}\nlora:\n  r: -3\n"), EXIT_USAGE,
         ("config.yaml", "'lora.r'")),
    Case("json-nested-deeply", prepare_source("cards.json", '[{"question": "q?",\n"answer": ' + NESTED + "}]"),
         EXIT_DATA, ("cards.json: line 2: JSON nested deeper than 32 levels",)),
    Case("jsonl-line-nested-deeply", prepare_source("cards.jsonl", json.dumps(GOOD) + "\n" + NESTED + "\n"),
         EXIT_DATA, "cards.jsonl: line 2: JSON nested deeper"),
    Case("jsonl-5000-digit-number", prepare_source("cards.jsonl", json.dumps(GOOD) + '\n{"question": "q?", '
                                                   f'"answer": {BIG_NUMBER}}}\n'), EXIT_DATA,
         "cards.jsonl: line 2: a number of 5,000 characters"),
    Case("json-5000-digit-number", prepare_source("cards.json", f'[\n{json.dumps(GOOD)},\n{{"question": "q?", '
                                                  f'"answer": {BIG_NUMBER}}}]'), EXIT_DATA,
         "cards.json: line 3: a number of 5,000 characters"),
    Case("json-5000-digit-fraction", prepare_source("cards.json", f'[{{"question": "q?", "answer": 1.{BIG_NUMBER}}}]'),
         EXIT_DATA, "cards.json: line 1: a number of 5,002 characters"),
    Case("csv-with-empty-cells", prepare_source("cards.csv", f"question,answer\n{GOOD['question']},\n,\n"), EXIT_DATA,
         ("cards.csv: no rows left", "empty_answer 1", "first empty_answer at", "cards.csv: line 2",
          "first empty_question at", "cards.csv: line 3")),
    Case("only-answer-too-long", prepare_source("cards.jsonl", json.dumps({**GOOD, "answer": "x" * 3000}) + "\n"),
         EXIT_DATA, ("too_long 1", "first too_long at", "cards.jsonl: line 1")),
    Case("too-few-distinct-questions-names-the-file", prepare_source("cards.jsonl", json.dumps(GOOD) + "\n"),
         EXIT_DATA, ("cards.jsonl: ", "too few to split")),
]


# ---- full disks while pushing ------------------------------------------------------------------------

PUSH_DISK_CASES = {  # a 64 KiB tmpfs as TMPDIR, or under the dry-run folder (skipped where mounting is not allowed)
    "full-tmpdir-during-push": ("MiB free in", "(TMPDIR)"),
    "full-disk-under-the-dry-run-folder": ("No space left on device", "disk"),
}

COMMAND_CASES = OWNERSHIP_CASES + PRECHECK_CASES + INPUT_LIMIT_CASES


@pytest.mark.parametrize("case", COMMAND_CASES, ids=lambda case: case.id)
def test_bad_input_or_fault_is_one_line_and_changes_no_file(case, world, tmp_path, monkeypatch):
    started = time.perf_counter()
    run_case(case, world, tmp_path, monkeypatch)
    assert time.perf_counter() - started < 60, "a bad input must be refused quickly"


@pytest.mark.parametrize("name", PUSH_DISK_CASES)
def test_full_disk_while_pushing_is_one_line_and_changes_no_file(name, world, tmp_path, monkeypatch):
    import tempfile

    from test_faults import tmpfs

    with tmpfs(tmp_path / "disk", "size=64k") as disk:
        if name == "full-tmpdir-during-push":
            monkeypatch.setenv("TMPDIR", str(disk))
            monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches TMPDIR: make it read it again
            argv = ["hub", "push", "--config-dir", str(hub_config(world, tmp_path))]
        else:
            argv = dry_run_argv(world, tmp_path, disk / "dry")
        run_case(Case(name, lambda w, t: argv, EXIT_ENV, PUSH_DISK_CASES[name]), world, tmp_path, monkeypatch)


def test_dry_run_replaces_only_its_own_earlier_output_and_a_failed_one_keeps_it(world, tmp_path, monkeypatch):
    """A second `--dry-run` into the same folder: failing half-way (a full disk after the first release), it
    leaves the earlier dry run byte-identical and nothing beside it; succeeding, it replaces it as a whole. The
    earlier dry run's files are hard links into runs/ and data/: removing it leaves those files as they were."""
    import errno

    import hub.publish

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "dry"
    code, _, err = run_in_process(*dry_run_argv(world, tmp_path, out))
    assert code == 0, err
    sources, earlier, listed = digests(world.root), digests(out), entries(tmp_path)
    assert any(p.stat().st_nlink > 1 for p in out.rglob("*.safetensors"))  # the adapters: links into runs/

    write_files, written = hub.publish.write_files, []

    def fills_the_disk(files, dest):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        written.append(dest)
        write_files(files, dest)

    monkeypatch.setattr(hub.publish, "write_files", fills_the_disk)
    code, _, err = run_in_process(*dry_run_argv(world, tmp_path, out))
    check_one_line_error(code, err, EXIT_ENV, "No space left on device")
    assert written and digests(out) == earlier and entries(tmp_path) == listed

    monkeypatch.setattr(hub.publish, "write_files", write_files)
    code, _, err = run_in_process(*dry_run_argv(world, tmp_path, out))
    assert code == 0, err
    assert digests(world.root) == sources and entries(tmp_path) == listed
    assert (out / OWNER_MARKER).is_file()


# ---- a re-train that fails or is stopped leaves the finished run as it was ----------------------------

SIGNAL_AT_STEP = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    import training.train as train
    from training.cli import main

    class SignalAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # as `kill` or Ctrl-C would, mid-run

    build = train.build_trainer
    train.build_trainer = lambda *a, callbacks=(), **k: build(*a, callbacks=[*callbacks, SignalAtStep()], **k)
    sys.exit(main(sys.argv[3:]))
""")


def stopped_retrain(world: World, tmp: Path, signal_name: str, *sets: str) -> subprocess.CompletedProcess:
    argv = train_argv(world, tmp, *sets)[1:]  # without the package: the script runs training's CLI
    return subprocess.run([sys.executable, "-c", SIGNAL_AT_STEP, signal_name, "3", *argv], cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=300,
                          preexec_fn=interactive_signals)


@pytest.mark.slow
def test_sigterm_mid_retrain_keeps_the_finished_run_and_resume_continues(world, tmp_path):
    runs = copied_runs(world, tmp_path)
    before = digests(runs / EXPERIMENT)
    stopped = stopped_retrain(world, tmp_path, "SIGTERM", "learning_rate=1e-2")
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr[-2000:]
    assert digests(runs / EXPERIMENT) == before  # checkpoints/, tensorboard/, config.yaml, adapter/: as they were
    staged = staging_dir(runs / EXPERIMENT)
    assert (staged / "checkpoints" / "checkpoint-2").is_dir()

    code, out, err = run_in_process(*train_argv(world, tmp_path, "learning_rate=1e-2", resume=True))
    assert code == 0, err
    assert f"resuming from {staged / 'checkpoints' / 'checkpoint-2'}" in out
    assert yaml.safe_load((runs / EXPERIMENT / "config.yaml").read_text())["learning_rate"] == 1e-2
    assert sorted(p.name for p in runs.iterdir()) == [EXPERIMENT, "best.json"]  # staging and lock gone


@pytest.mark.slow
def test_ctrl_c_mid_retrain_is_one_line_and_keeps_the_finished_run(world, tmp_path):
    runs = copied_runs(world, tmp_path)
    before = digests(runs / EXPERIMENT)
    stopped = stopped_retrain(world, tmp_path, "SIGINT", "seed=7")
    check_one_line_error(stopped.returncode, stopped.stderr, 130, "interrupted")
    assert digests(runs / EXPERIMENT) == before
    assert not lock_path(runs / EXPERIMENT).exists()  # released on the way out


@pytest.mark.slow
def test_failure_mid_retrain_keeps_the_finished_run(world, tmp_path):
    from transformers import TrainerCallback

    from training.config import load_experiment
    from training.train import train_experiment

    class OutOfMemory(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("CUDA out of memory (simulated)")

    runs = copied_runs(world, tmp_path)
    before = digests(runs / EXPERIMENT)
    config = load_experiment(str(experiment_file(world, tmp_path / "configs", runs)), ["seed=3"])
    with pytest.raises(RuntimeError, match="out of memory"):
        train_experiment(config, callbacks=[OutOfMemory()])
    assert digests(runs / EXPERIMENT) == before


# ---- resume: the newest checkpoint that loads -----------------------------------------------------------

def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN_CHECKPOINT_FILES = ["adapter_model.safetensors", "trainer_state.json", "optimizer.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("broken", BROKEN_CHECKPOINT_FILES)
def test_resume_skips_a_truncated_checkpoint_and_says_why(broken, world, tmp_path):
    runs = copied_runs(world, tmp_path)
    truncate(runs / EXPERIMENT / "checkpoints" / "checkpoint-4" / broken)
    code, out, err = run_in_process(*train_argv(world, tmp_path, resume=True))
    assert code == 0 and "Traceback" not in err, err
    assert f"skipping {runs / EXPERIMENT / 'checkpoints' / 'checkpoint-4'}: {broken} is truncated or unreadable" in out
    assert f"resuming from {staging_dir(runs / EXPERIMENT) / 'checkpoints' / 'checkpoint-2'}" in out
    metrics = json.loads((runs / EXPERIMENT / "metrics.json").read_text())
    assert metrics["steps"] == 4 and [e["step"] for e in metrics["eval_loss"]] == [0, 2, 4]


@pytest.mark.slow
def test_resume_with_every_checkpoint_broken_trains_from_the_start(world, tmp_path):
    runs = copied_runs(world, tmp_path)
    for checkpoint in (runs / EXPERIMENT / "checkpoints").glob("checkpoint-*"):
        truncate(checkpoint / "adapter_model.safetensors")
    code, out, err = run_in_process(*train_argv(world, tmp_path, resume=True))
    assert code == 0, err
    assert out.count("skipping ") == 2 and "no checkpoint that loads" in out and "training from the start" in out


# ---- the split key: near-duplicates share a split ---------------------------------------------------------

def test_near_duplicate_questions_share_a_split(world, tmp_path):
    from datasets import load_from_disk

    from training.clean import question_id

    variants = ["What is the antidote for heparin overdose?", "what is the antidote for heparin overdose",
                "ＷＨＡＴ ｉｓ the antidote  for heparin overdose ？", "What is the antidote for Heparin overdose?!"]
    assert len({question_id(v) for v in variants}) == 1
    rows = [{"question": v, "answer": f"Protamine sulfate, variant {n}."} for n, v in enumerate(variants)]
    rows += [{"question": f"Which drug is used for condition number {n}?", "answer": f"Drug number {n}."}
             for n in range(30)]
    source = tmp_path / "cards.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code, _, err = run_in_process(*prepare_argv(world, tmp_path, tmp_path / "out", source=source))
    assert code == 0, err
    splits = load_from_disk(str(tmp_path / "out"))
    holding = [name for name, split in splits.items() if any("antidote" in q for q in split["question"])]
    assert len(holding) == 1 and sum("antidote" in q for q in splits[holding[0]]["question"]) == 4
    assert (tmp_path / "out" / OWNER_MARKER).is_file()  # the output says it is ours, so a re-run may replace it
