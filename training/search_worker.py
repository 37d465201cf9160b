"""One worker of a search (training/search.py): trials one after another, sharing the study with the other
workers and machines, until the study has all its trials. A trial is `train_experiment` with a callback
reporting its validation losses to the study (and stopping it when pruned); a crash fails the trial, not
the worker. A trial whose worker died on this machine is seen at once (the worker's lock is gone with its
process) and queued again, to continue from its run's last checkpoint.
"""
from __future__ import annotations

import contextlib
import fcntl
import gc
import math
import os
import socket
import time
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any

from common.errors import UserError
from training import search_report as report
from training.search import POLL_SECONDS, CHECK_NAME, continue_later, open_study
from training.search_config import SearchConfig, trial_config


def work(search: SearchConfig, config_dir: Path, index: int, share: int, after_trial=None, study=None) -> None:
    """One worker: run the study's trials one after another until all are done (sharing the study with the
    other workers), continuing trials whose worker died."""
    import optuna

    from training.device import Device

    device = Device.detect().share(share)  # each of the workers on one GPU plans for, and is held to, its share
    study = study or open_study(search, config_dir, worker=index)
    base = trial_config(search, {}, f"{search.study}-{CHECK_NAME}", config_dir)
    log = search.folder / "logs" / f"worker-{index}.log"
    with WorkerLock(search.folder / "workers", index) as worker:
        while True:
            continue_interrupted(study, search)
            if search.storage is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)  # trials whose heartbeat stopped (Optuna's own)
            move = report.next_move(study.get_trials(deepcopy=False), search.trials)
            if move == "done":
                return
            if move == "wait":  # the last trials run elsewhere; wait in case one of them has to be continued
                time.sleep(POLL_SECONDS)
                continue
            trial = study.ask()
            if not report.admitted(study.get_trials(deepcopy=False), trial.number, search.trials):
                trial.set_user_attr(report.WITHDRAWN, f"asked after the study's {search.trials} trials")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            with output_to(log) if after_trial else contextlib.nullcontext():  # a worker process's output is its log
                run_trial(study, trial, search, config_dir, worker, base, device)
            if after_trial:
                after_trial()


@contextlib.contextmanager
def output_to(log: Path):
    """The trainer's output (its progress bars, logs, warnings) into the worker's log, so that the search's own
    progress bar stays readable when the worker runs inside the search's process."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        yield


class WorkerLock:
    """An flock held for the worker's life: the kernel drops it when the process dies, however it dies, so
    another worker on this machine knows at once that this one's running trial must be continued."""

    def __init__(self, folder: Path, index: int):
        folder.mkdir(parents=True, exist_ok=True)
        # Unique even when a pid is reused while a killed worker's file is still there.
        self.path = (folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock").resolve()
        self.identity = {"host": host_id(), "lock": str(self.path), "index": index, "pid": os.getpid()}

    def __enter__(self) -> WorkerLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def host_id() -> str:
    """This machine as it runs now: a worker on another host, or from before a reboot, is not checkable here."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"


def worker_alive(worker: dict[str, Any]) -> bool | None:
    """Whether the worker that holds a trial still runs: None when it ran on another machine (the database's
    heartbeat decides there)."""
    if worker.get("host") != host_id():
        return None
    try:
        fd = os.open(worker["lock"], os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def continue_interrupted(study, search: SearchConfig) -> None:
    """Trials still marked running whose worker on this machine died: failed, then queued again with the same
    settings (continue_later), to resume from their run's last checkpoint. Marking one failed succeeds
    in one worker only, so it is queued once."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage  # Optuna's own stale-trial handling works on the storage, as this does
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(report.WORKER)
        if worker is None or worker_alive(worker) is not False:
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue
        continue_later(search)(study, storage.get_trial(trial._trial_id))


# ---------------------------------------------------------------- one trial


def run_trial(study, trial, search: SearchConfig, config_dir: Path, worker: WorkerLock, base, device) -> None:
    """Train the trial's experiment and tell the study how it ended: its final validation loss, pruned, or
    failed with a one-line error (the study goes on; a traceback, for bugs, goes to the worker's log)."""
    from optuna.storages._heartbeat import get_heartbeat_thread  # what Study.optimize uses for the same
    from optuna.trial import TrialState
    from training.train import train_experiment

    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    original = frozen.system_attrs.get("failed_trial", trial.number)  # a retry continues its original's run
    name = f"{search.study}-{original:03d}"
    trial.set_user_attr(report.WORKER, worker.identity)
    trial.set_user_attr(report.RUN, str(search.runs_dir / name))
    start = time.perf_counter()
    try:
        values = {key: parameter.value_of(suggest(trial, key, parameter)) for key, parameter in search.space.items()}
        config = trial_config(search, values, name, config_dir)
        pruning = pruning_callback(trial, base)
        with get_heartbeat_thread(trial._trial_id, study._storage):
            result = train_experiment(config, resume=original != trial.number, callbacks=[pruning], device=device)
    except Exception as exc:  # noqa: BLE001 - a crashing trial is recorded, and the study goes on
        if not isinstance(exc, UserError):
            traceback.print_exc()
        trial.set_user_attr(report.ERROR, one_line(exc))
        trial.set_user_attr(report.WALL, round(time.perf_counter() - start, 1))
        study.tell(trial, state=TrialState.FAIL)
        return
    finally:
        release_memory()
    trial.set_user_attr(report.WALL, round(time.perf_counter() - start, 1))
    trial.set_user_attr(report.CURVE, [[e["step"], e.get("train_seconds"), e["loss"]] for e in result["eval_loss"]])
    trial.set_user_attr(report.STEPS, result["steps"])
    loss = result["final_eval_loss"]
    if pruning.pruned:
        study.tell(trial, state=TrialState.PRUNED)
    elif not math.isfinite(loss):
        trial.set_user_attr(report.ERROR, f"final validation loss is {loss}")
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, loss)


def suggest(trial, key: str, parameter):
    if parameter.choices is not None:
        return trial.suggest_categorical(key, parameter.labels())
    if parameter.is_int:
        return trial.suggest_int(key, parameter.low, parameter.high, step=parameter.step or 1, log=parameter.log)
    return trial.suggest_float(key, parameter.low, parameter.high, step=parameter.step, log=parameter.log)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if isinstance(exc, UserError) else f"{type(exc).__name__}: {line}".rstrip(": ")


def release_memory() -> None:
    """A worker trains trial after trial: the last one's model and optimizer go before the next loads."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def pruning_callback(trial, base):
    """A TrainerCallback reporting each validation loss to the trial, and stopping the training when the
    pruner says so (the run still finishes and saves its adapter, at the step it stopped).

    Steps are counted in training examples seen, in units of the starting experiment's validation interval
    (eval_steps x effective_batch_size examples: the trainer keeps that interval whatever the step size), so
    trials with different step sizes or epochs are compared at the same amount of training."""
    import json

    from transformers import TrainerCallback

    train_examples = json.loads((base.data_dir / "data_report.json").read_text())["splits"]["train"]
    unit = base.eval_steps * base.effective_batch_size

    class ReportAndPrune(TrainerCallback):
        pruned = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            loss = (metrics or {}).get("eval_loss")
            if loss is None or state.global_step == 0:  # the untrained adapter's loss is the base's, for every trial
                return
            step = max(1, round((state.epoch or 0) * train_examples / unit))
            trial.report(loss, step)
            if state.global_step < state.max_steps and trial.should_prune():
                self.pruned = True
                control.should_training_stop = True

    return ReportAndPrune()
