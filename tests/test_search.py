"""`python -m training search` on the tiny base: real Optuna studies of real (tiny) trainings on the CPU.

The search's own guarantees: every trial an ordinary run folder, the objective its final validation loss, a
crashing trial failed with its one line while the study goes on, pruning on intermediate validation losses,
results a person can read, the best trial as an experiment file, a bad space refused before any trial, and a
search killed mid-way continuing where it stopped (the killed trial from its checkpoint).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from common.atomic import OWNER_MARKER
from training.cli import COMMANDS, main
from training.config import ExperimentConfig, load_experiment
from training.search_config import load_search
from training.search_report import card_section

REPO_ROOT = Path(__file__).resolve().parent.parent
STUDY_STATES = {"complete", "pruned", "failed"}

# Four optimizer steps of 8 sequences, validated every 2: the tiny random base learns at this rate.
TINY_EXPERIMENT = dict(
    base_revision=None, learning_rate=1e-2, per_device_batch_size=4, effective_batch_size=8, max_steps=4,
    eval_steps=2, save_steps=2, logging_steps=2, keep_checkpoints=1, max_seq_length=128, quantization="none",
)


@pytest.fixture(scope="module")
def search_data(tiny_base, tmp_path_factory) -> Path:
    from training.config import DataConfig
    from training.prepare import prepare
    from training.sample import SAMPLE_PATH

    out = tmp_path_factory.mktemp("search-data") / "processed"
    prepare(DataConfig(source=str(SAMPLE_PATH), revision=None, tokenizer=str(tiny_base), tokenizer_revision=None,
                       max_examples=48, output_dir=out))
    return out


def write_search(folder: Path, base: Path, data: Path, max_steps: int = 4, **search) -> tuple[Path, Path]:
    """configs/experiments/tiny.yaml and configs/search.yaml under `folder`; (search.yaml, configs/)."""
    config_dir = folder / "configs"
    (config_dir / "experiments").mkdir(parents=True)
    experiment = {**TINY_EXPERIMENT, "max_steps": max_steps, "base_model": str(base), "data_dir": str(data)}
    (config_dir / "experiments" / "tiny.yaml").write_text(yaml.safe_dump(experiment))
    settings = {
        "study": "tiny", "experiment": "tiny", "trials": 4, "output_dir": str(folder / "search"),
        "best_config_dir": str(config_dir / "experiments"),
        "space": {"learning_rate": {"low": 1e-5, "high": 3e-2, "log": True}, "lora.r": {"choices": [4, 8]}},
        "sampler": {"name": "TPESampler", "seed": 7, "n_startup_trials": 2},
        "pruner": {"name": "MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0},
        **search,
    }
    path = config_dir / "search.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path, config_dir


def search_cli(path: Path, config_dir: Path, *sets: str) -> int:
    argv = ["search", "--config", str(path), "--config-dir", str(config_dir), *[f"--set={s}" for s in sets]]
    return main(argv, commands={"search": COMMANDS["search"]})


def trials_of(folder: Path) -> list[dict]:
    return json.loads((folder / "trials.json").read_text())


@pytest.mark.slow
def test_four_trial_study(tmp_path, tiny_base, search_data):
    """Queued first: a trial that crashes (max_seq_length 9 leaves no answer token to train on), a good one,
    and one at a learning rate too low to learn, which the median pruner stops; the sampler draws the fourth."""
    path, config_dir = write_search(
        tmp_path, tiny_base, search_data,
        space={"learning_rate": {"low": 1e-5, "high": 3e-2, "log": True}, "lora.r": {"choices": [4, 8]},
               "max_seq_length": {"choices": [128, 9]}},
        enqueue=[{"max_seq_length": 9}, {"learning_rate": 2e-2, "lora.r": 8, "max_seq_length": 128},
                 {"learning_rate": 1e-5, "lora.r": 4, "max_seq_length": 128}])
    assert search_cli(path, config_dir) == 0
    folder = tmp_path / "search" / "tiny"
    trials = trials_of(folder)
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert all(t["state"] in STUDY_STATES for t in trials)

    crashed, good, slow = trials[:3]
    assert crashed["state"] == "failed" and crashed["params"]["max_seq_length"] == 9
    assert "no train example keeps an answer token within max_seq_length 9" in crashed["error"]
    assert "\n" not in crashed["error"]
    assert good["state"] == "complete"
    assert slow["state"] == "pruned" and slow["steps"] == 2  # stopped at its first validation after step 0

    for trial in (t for t in trials if t["state"] in ("complete", "pruned")):
        run = Path(trial["run"])
        assert run == folder / "runs" / f"tiny-{trial['number']:03d}"
        metrics = json.loads((run / "metrics.json").read_text())  # an ordinary, finished run folder
        assert (run / "adapter" / "adapter_model.safetensors").is_file()
        assert [p["loss"] for p in trial["curve"]] == [e["loss"] for e in metrics["eval_loss"]]
        if trial["state"] == "complete":
            assert trial["final_eval_loss"] == metrics["final_eval_loss"] and metrics["steps"] == 4
        assert trial["train_seconds"] > 0 and trial["wall_s"] >= trial["train_seconds"]

    summary = json.loads((folder / "study.json").read_text())
    assert summary["done"] and summary["counts"]["done"] == 4
    best = min((t for t in trials if t["state"] == "complete"), key=lambda t: t["final_eval_loss"])
    assert summary["best"]["number"] == best["number"]
    assert set(summary["importances"]) <= {"learning_rate", "lora.r", "max_seq_length"}
    for plot in ("loss_vs_train_seconds.png", "importances.png"):
        assert (folder / plot).read_bytes()[:4] == b"\x89PNG"
    readme = (folder / "README.md").read_text()
    assert f"**Best: trial {best['number']}" in readme and "no train example keeps an answer token" in readme
    assert (folder / OWNER_MARKER).is_file()

    # The best trial as an experiment: only what differs from the defaults, and exactly the trial's settings.
    best_path = config_dir / "experiments" / "tiny-best.yaml"
    written = yaml.safe_load(best_path.read_text())
    assert "runs_dir" not in written and "name" not in written and written["max_steps"] == 4
    config = load_experiment("tiny-best", config_dir=config_dir)
    assert config.learning_rate == best["params"]["learning_rate"] and config.lora.r == best["params"]["lora.r"]
    defaults = ExperimentConfig(name="x")
    assert all(getattr(defaults, key) != getattr(config, key) for key in written if key != "lora")

    section = card_section(folder, plot_link="plots/search.png")
    assert section.startswith("## How these settings were chosen")
    assert "of 4 trials" in section and "(plots/search.png)" in section and f"| {best['number']} |" in section

    # Run again: the study is done, nothing is trained, the results stay.
    before = (folder / "trials.json").read_text()
    assert search_cli(path, config_dir) == 0
    assert (folder / "trials.json").read_text() == before


def test_bad_search_refused_before_any_trial(tmp_path, tiny_base, search_data, capsys):
    path, config_dir = write_search(tmp_path, tiny_base, search_data)
    cases = {
        "space.lora.rank.choices=[4,8]": "space 'lora.rank' is not an experiment setting (did you mean 'lora.r'?)",
        "space.learning_rate.low=0.1": "'space.learning_rate': empty range: low (0.1) must be below high (0.03)",
        "space.lora.r.choices=[]": "choices is empty",
        "space.lora.r.choices=[8,5000]": "space 'lora.r' value 5000:",  # above ExperimentConfig's bound
        "space.learning_rate.high=2.0": "space 'learning_rate' value 2.0:",
        "space.lora.target_modules.choices=[[q_proj],[q_prj]]": "lora target module 'q_prj' is not a layer",
        "space.lora.r.choices=[8,100]": "lora.r 100 is above the width of every adapted layer",  # the trainer's check
        "sampler.name=TPESampel": "sampler 'TPESampel' is not in optuna.samplers (did you mean 'TPESampler'?",
        "pruner.n_startup_trails=3": "pruner MedianPruner(",
    }
    for override, expected in cases.items():
        assert search_cli(path, config_dir, override) == 2, override
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and expected in err, (override, err)
    assert not (tmp_path / "search").exists()  # nothing written by a refused search


def test_unreachable_storage_is_one_line_without_its_password(tmp_path, tiny_base, search_data, capsys):
    from space_support import free_port

    path, config_dir = write_search(tmp_path, tiny_base, search_data)
    url = f"postgresql://searcher:s3cret@127.0.0.1:{free_port()}/optuna"
    assert search_cli(path, config_dir, f"storage={url}") == 5
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "cannot open storage postgresql://searcher:***@" in err
    assert "s3cret" not in err
    assert not (tmp_path / "search").exists()


def test_search_folder_of_someone_else_is_refused(tmp_path, tiny_base, search_data, capsys):
    path, config_dir = write_search(tmp_path, tiny_base, search_data)
    theirs = tmp_path / "search" / "tiny"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    assert search_cli(path, config_dir) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]


def test_changed_space_is_a_new_study(tmp_path, tiny_base, search_data, capsys):
    """A study's trials are comparable only under one space: resuming it with another is refused."""
    from training.search import check_search, open_study

    path, config_dir = write_search(tmp_path, tiny_base, search_data)
    search = load_search(path)
    check_search(search, config_dir)
    open_study(search, config_dir)  # created, no trial yet
    assert search_cli(path, config_dir, "space.lora.r.choices=[4,16]") == 2
    assert "was started with other values of its space" in capsys.readouterr().err
    assert not study_trials(tmp_path / "search" / "tiny")


def test_the_study_has_exactly_its_planned_trials():
    """The slot rule every worker applies: the first `trials` first attempts by trial number are the study's,
    a later one (asked in a race for the last place) is withdrawn, a continued trial takes its original's
    place; the study is done when none is queued or running."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from training.search_report import admitted, next_move

    study = optuna.create_study()
    space = {"x": FloatDistribution(0, 1)}

    def add(state, **system_attrs):
        study.add_trial(create_trial(state=state, params={"x": 0.5}, distributions=space, value=1.0
                                     if state == TrialState.COMPLETE else None, system_attrs=system_attrs))

    add(TrialState.COMPLETE)
    assert next_move(study.get_trials(), 2) == "ask"
    add(TrialState.FAIL)  # interrupted: continued as trial 3
    add(TrialState.RUNNING)  # a third new trial, asked in a race for the last place
    add(TrialState.WAITING, failed_trial=1, retry_history=[1])
    trials = study.get_trials()
    assert [admitted(trials, n, 2) for n in range(4)] == [True, True, False, True]
    assert admitted(trials, 2, 3)  # with a third place, trial 2 would have had it
    assert next_move(trials, 2) == "ask"  # the queued continuation
    assert next_move(trials[:3], 2) == "wait"  # nothing to ask, a trial still running
    assert next_move(trials[:2], 2) == "done"


def study_trials(folder: Path, study: str = "tiny"):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / "journal.log")))
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_killed_search_continues_where_it_stopped(tmp_path, tiny_base, search_data):
    """Two workers share the journal on this machine; the search is killed (SIGKILL, its whole process group)
    once a trial has a checkpoint and is still training; run again, it finishes the study, continuing the
    killed trials from their checkpoints: no trial lost, none trained twice from the start."""
    from optuna.trial import TrialState

    # Eight steps a trial, a checkpoint every two: from its first checkpoint a trial has six steps left to be
    # caught in (a fast machine ran a 4-step study whole between two looks at a checkpoint that lives 2 steps).
    steps = 8
    path, config_dir = write_search(tmp_path, tiny_base, search_data, max_steps=steps, workers=2,
                                    pruner={"name": "NopPruner"})
    folder = tmp_path / "search" / "tiny"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    search = subprocess.Popen([sys.executable, "-m", "training", "search", "--config", str(path), "--config-dir",
                               str(config_dir)], cwd=REPO_ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    staged = folder / "runs" / ".in-progress"
    mid_training = [f"tiny-*/checkpoints/checkpoint-{step}/trainer_state.json" for step in range(2, steps, 2)]
    deadline = time.monotonic() + 600
    try:
        while not any(next(staged.glob(pattern), None) for pattern in mid_training):
            assert search.poll() is None, "the search ended before a trial was caught mid-training:\n" + \
                search.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone: the assertion above says why
            os.killpg(search.pid, signal.SIGKILL)  # the search and its workers, mid-trial, without warning
        search.wait()
    interrupted = {t.number for t in study_trials(folder) if t.state == TrialState.RUNNING}
    assert interrupted, "the kill should have caught a trial running"

    assert search_cli(path, config_dir, "workers=1") == 0
    trials = trials_of(folder)
    slots = sorted(t["number"] for t in trials if t["retry_of"] is None)  # the study's 4 trials (first attempts)
    assert len(slots) == 4 and interrupted <= set(slots)
    for trial in trials:
        if trial["number"] in interrupted:
            assert trial["state"] == "interrupted" and trial["continued_as"] is not None
    finished = {t["retry_of"] if t["retry_of"] is not None else t["number"]: t for t in trials
                if t["state"] in STUDY_STATES}
    assert sorted(finished) == slots and all(t["state"] == "complete" for t in finished.values())
    assert len([t for t in trials if t["state"] in STUDY_STATES]) == 4  # none trained twice
    for number, trial in finished.items():  # each trial's run is the one run of its slot, finished
        assert trial["run"] == str(folder / "runs" / f"tiny-{number:03d}")
        assert json.loads((Path(trial["run"]) / "metrics.json").read_text())["steps"] == steps
    log = (folder / "logs" / "worker-0.log").read_text()
    resumed = [n for n in interrupted if f"resuming from {staged / f'tiny-{n:03d}'}" in log]
    assert resumed, "an interrupted trial with a checkpoint continues from it"
    assert not list(staged.glob("tiny-*"))  # every staged run was finished and swapped in


@pytest.mark.slow
def test_bench_search_runs_on_the_cpu(tmp_path, tiny_base):
    """bench/bench_search.py with tiny settings (the GPU run has no second try): study, exp1, evaluation, and
    the results file with the issue's keys, named after the device torch sees."""
    from training.sample import SAMPLE_PATH

    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "bench/bench_search.py", "--smoke", "--base", str(tiny_base), "--flashcards",
         str(SAMPLE_PATH), "--work", str(tmp_path / "work"), "--out", str(out), "--trials", "2", "--workers", "2"],
        cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [path] = out.glob("*-cpu-search.json")
    record = json.loads(path.read_text())
    assert record["trials"] == 2 and record["complete"] + record["pruned"] + record["failed"] == 2
    assert record["wall_s"] > 0 and path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    for model in ("best", "exp1"):
        assert {"settings", "final_eval_loss", "rougeL"} <= set(record[model])
        assert 0 <= record[model]["rougeL"] <= 1 and record[model]["final_eval_loss"] > 0
    assert record["best"]["settings"]["lora.target_modules"][-1] == "down_proj"
    assert record["paired_rougeL_best_minus_exp1"]["n"] == 8
    assert set(record["targets"]) >= {"study_within_15_min", "best_loss_below_exp1"}
