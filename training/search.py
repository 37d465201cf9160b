"""`python -m training search`: a hyperparameter study (Optuna) over ordinary experiments.

    python -m training search --config configs/search.yaml                 # make search
    python -m training search --config configs/search.yaml --set trials=48 --set workers=4

Each trial is an experiment (the starting one with the fixed and the sampled settings) trained by
`train_experiment` into search/<study>/runs/<study>-NNN/, with the same checks and outputs as `train`,
so any trial can be evaluated and pushed. The objective is the final validation loss; a trial reports
every validation loss to the study and stops early when the pruner says so. `workers` trials run at
once on this machine (one process each, spread over its GPUs); other machines join the same study by
running the same command with the same database `storage`. Kill it and run it again: it continues
where it stopped (trials whose worker died resume from their last checkpoint). search/<study>/ holds
the results (README.md, trials.json, plots); when every trial is done, the best one is written as
configs/experiments/<study>-best.yaml, which `make train` and `make push` take like any experiment.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import math
import os
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from common.atomic import check_replaceable, is_owned, mark_owned
from common.errors import ConfigError, EnvironmentProblem, UserError
from training.config import CONFIG_DIR
from training.search_config import SearchConfig, load_search, trial_config
from training import search_report as report

JOURNAL = "journal.log"  # the embedded storage: Optuna's journal, one file next to the runs
POLL_SECONDS = 2.0
CHECK_NAME = "check"  # the run name (<study>-check) the up-front checks use; trials are <study>-NNN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "search.yaml", help="the search (a SearchConfig YAML)")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="folder holding experiments/ (default: configs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a search setting, e.g. --set trials=8 --set space.lora.r.high=64 (repeatable)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # a worker process started by the search
    parser.add_argument("--gpu-share", type=int, default=1, help=argparse.SUPPRESS)  # workers on this worker's GPU


def run(args: argparse.Namespace) -> int:
    search = load_search(args.config, args.overrides)
    if args.worker is not None:
        work(search, args.config_dir, args.worker, args.gpu_share)
        return 0
    check_search(search, args.config_dir)
    study = open_study(search, args.config_dir)
    print(f"[search] study '{search.study}' in {storage_label(search)}: {search.trials} trials, "
          f"{search.workers} at a time here; results in {search.folder}", flush=True)
    with report.Progress(search, args.config_dir) as progress:
        if search.workers == 1 and len(gpu_ids()) <= 1:
            work(search, args.config_dir, 0, 1, after_trial=lambda: progress.update(study), study=study)
        else:
            supervise(search, args, study, progress)
        progress.update(study)
    done = report.write_report(study, search, args.config_dir)
    if not done:
        raise EnvironmentProblem(f"study '{search.study}' stopped before all {search.trials} trials were done "
                                 f"(see {search.folder / 'logs'}); run the same command again to continue")
    if search.best_config_dir is not None:
        written = report.write_best_config(study, search, args.config_dir)
        if written:
            print(f"[search] best trial written as {written}")
    print(f"[search] results: {search.folder / 'README.md'}")
    return 0


# ---------------------------------------------------------------- checks before any trial


def check_search(search: SearchConfig, config_dir: Path) -> None:
    """Refuse a bad search in one line before any trial runs: the study's folder must be ours, the starting
    experiment valid, Optuna's sampler and pruner constructible, and every end of every range and every
    choice a value the config and the trainer's pre-checks (train.check_experiment) accept."""
    from training.train import check_experiment

    folder = search.folder
    check_replaceable(folder)  # never write into a folder this project did not make
    created = [path for path in (search.runs_dir, folder, *folder.parents) if not path.exists()]  # by the checks
    name = f"{search.study}-{CHECK_NAME}"
    problems: list[UserError] = []

    def attempt(func, *args):
        try:
            return func(*args)
        except UserError as exc:
            problems.append(exc)
        except (TypeError, ValueError) as exc:  # Optuna's own argument checks
            problems.append(ConfigError(str(exc)))

    try:
        attempt(make_sampler, search, 0)
        attempt(make_pruner, search)
        base = attempt(trial_config, search, {}, name, config_dir)
        if base is not None:
            problems += check_experiment(base)
        if not problems:
            candidates = [(f"space '{key}' value {value!r}", {key: value})
                          for key, parameter in search.space.items() for value in parameter.extremes()]
            candidates += [(f"enqueue[{i}]", {k: search.space[k].value_of(v) for k, v in values.items()})
                           for i, values in enumerate(search.enqueue)]
            for where, values in candidates:
                try:
                    config = trial_config(search, values, name, config_dir, where)
                except UserError as exc:
                    problems.append(exc)
                    continue
                problems += [type(p)(f"{where}: {p}", p.exit_code) for p in check_experiment(config)]
    finally:
        if problems:  # leave no trace of a refused search: only the empty folders the checks made go
            for path in created:
                with contextlib.suppress(OSError):
                    path.rmdir()
    if problems:
        first = problems[0]
        message = str(first) if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(map(str, problems))
        raise type(first)(f"search '{search.study}': {message}", first.exit_code)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_owned(folder):
        mark_owned(folder)


def make_sampler(search: SearchConfig, worker: int):
    """The configured sampler; a seed is offset by the worker's index, so workers asking at the same moment
    with the same history do not draw the same settings."""
    import optuna

    arguments = search.sampler.arguments
    if isinstance(arguments.get("seed"), int):
        arguments["seed"] += worker
    return optuna_part(optuna.samplers, search.sampler.name, arguments, "sampler")


def make_pruner(search: SearchConfig):
    import optuna

    return optuna_part(optuna.pruners, search.pruner.name, search.pruner.arguments, "pruner")


def optuna_part(module, name: str, arguments: dict[str, Any], what: str):
    import difflib

    known = [n for n in getattr(module, "__all__", dir(module)) if n[0].isupper() and not n.startswith("Base")]
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{what} '{name}' is not in {module.__name__} ({hint}known: {', '.join(sorted(known))})")
    try:
        return getattr(module, name)(**arguments)
    except (TypeError, ValueError, ImportError) as exc:
        raise ConfigError(f"{what} {name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())}): {exc}") from None


# ---------------------------------------------------------------- the study and its storage


def storage_label(search: SearchConfig) -> str:
    """Where the study lives, for messages and reports (a database password never shown)."""
    if search.storage is None:
        return str(search.folder / JOURNAL)
    from sqlalchemy.engine import make_url

    return make_url(search.storage).render_as_string(hide_password=True)


def open_storage(search: SearchConfig):
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if search.storage is None:
        return JournalStorage(JournalFileBackend(str(search.folder / JOURNAL)))
    try:
        # Heartbeats let a worker on any machine continue a trial whose worker died (4 missed check-ins).
        return RDBStorage(search.storage, heartbeat_interval=search.heartbeat_seconds,
                          grace_period=4 * search.heartbeat_seconds,
                          heartbeat_stale_trial_callback=continue_later(search))
    except ImportError as exc:
        raise EnvironmentProblem(f"storage {storage_label(search)}: a database driver is missing ({exc}); "
                                 "pip install psycopg2-binary for PostgreSQL") from None
    except Exception as exc:  # sqlalchemy's errors: a bad URL, no server, refused login
        reason = str(exc).splitlines()[0].replace(search.storage, storage_label(search))
        raise EnvironmentProblem(f"cannot open storage {storage_label(search)}: {reason}") from None


def continue_later(search: SearchConfig):
    """What becomes of a trial whose worker died: queued again with the same settings, to continue its run,
    at most max_retries times. Optuna's RetryHeartbeatStaleTrialCallback does the same but also copies the
    trial's user attributes, among them the dead worker's identity, which would make the queued trial look
    interrupted again the moment it starts; the attribute names are Optuna's, so its helpers still read them."""
    import optuna

    def queue_again(study, trial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > search.max_retries:
            return
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            system_attrs={"failed_trial": history[0], "retry_history": history}))

    return queue_again


def definition(search: SearchConfig, config_dir: Path) -> dict[str, Any]:
    """What makes two runs of the search one study: the trials' starting config and the space."""
    from training.config import dump

    base = dump(trial_config(search, {}, f"{search.study}-{CHECK_NAME}", config_dir))
    for key in ("name", "runs_dir"):  # differ between machines sharing a study
        base.pop(key)
    return {"experiment": base, "space": {k: p.model_dump(mode="json") for k, p in search.space.items()}}


def open_study(search: SearchConfig, config_dir: Path, worker: int = 0):
    """Create the study (with its queued trials), or load it (a resumed search, another worker or machine)
    after checking that it was created with the same starting config and space. Creating is atomic in
    every storage, so the queue is filled once however many processes start together."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(search)
    parts = dict(study_name=search.study, storage=storage, sampler=make_sampler(search, worker),
                 pruner=make_pruner(search))
    wanted = definition(search, config_dir)
    try:
        study = optuna.create_study(direction="minimize", **parts)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**parts)
        check_same_study(study.user_attrs.get("definition"), wanted, search)
        return study
    study.set_user_attr("definition", wanted)
    for values in search.enqueue:
        study.enqueue_trial(values)
    return study


def check_same_study(saved: dict[str, Any] | None, wanted: dict[str, Any], search: SearchConfig) -> None:
    if saved is None or saved == wanted:  # None: its creator is still writing it
        return
    changed = sorted(k for k in set(saved["experiment"]) | set(wanted["experiment"])
                     if saved["experiment"].get(k) != wanted["experiment"].get(k))
    what = "its space" if saved["space"] != wanted["space"] else f"its settings ({', '.join(changed)})"
    raise ConfigError(f"study '{search.study}' in {storage_label(search)} was started with other values of "
                      f"{what}; keep them, or give the changed search a new study name")


# ---------------------------------------------------------------- workers


def gpu_ids() -> list[str]:
    """The GPUs this machine's workers are spread over (CUDA_VISIBLE_DEVICES respected)."""
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def supervise(search: SearchConfig, args: argparse.Namespace, study, progress) -> None:
    """Start `workers` worker processes (round robin over the GPUs), show progress until they end."""
    gpus = gpu_ids()
    logs = search.folder / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    try:
        for index in range(search.workers):
            env = dict(os.environ)
            share = 1
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
                share = len(range(index % len(gpus), search.workers, len(gpus)))
            command = [sys.executable, "-m", "training", "search", "--config", str(args.config), "--config-dir",
                       str(args.config_dir), *[f"--set={item}" for item in args.overrides], "--worker", str(index),
                       "--gpu-share", str(share)]
            with open(logs / f"worker-{index}.log", "ab") as log:
                procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
        while any(p.poll() is None for p in procs):
            progress.update(study)
            time.sleep(POLL_SECONDS)
    finally:
        for p in procs:  # Ctrl-C or a kill of this process: the workers stop too (their trials resume later)
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    failed = [f"worker {i} exited with {p.returncode} (logs/worker-{i}.log)" for i, p in enumerate(procs) if p.returncode]
    if failed:
        print(f"[search] {'; '.join(failed)}", file=sys.stderr)


def work(search: SearchConfig, config_dir: Path, index: int, share: int, after_trial=None, study=None) -> None:
    """One worker: run the study's trials one after another until all are done (sharing the study with the
    other workers), continuing trials whose worker died."""
    import optuna

    claim_gpu_share(share)
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
                run_trial(study, trial, search, config_dir, worker, base)
            if after_trial:
                after_trial()


@contextlib.contextmanager
def output_to(log: Path):
    """The trainer's output (its progress bars, logs, warnings) into the worker's log, so that the search's own
    progress bar stays readable when the worker runs inside the search's process."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        yield


def claim_gpu_share(share: int) -> None:
    """A worker sharing its GPU with `share - 1` others caps its own memory at its share."""
    import torch

    if share > 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(1 / share)


class WorkerLock:
    """An flock held for the worker's life: the kernel drops it when the process dies, however it dies, so
    another worker on this machine knows at once that this one's running trial must be continued."""

    def __init__(self, folder: Path, index: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = (folder / f"{socket.gethostname()}-{os.getpid()}.lock").resolve()
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


def run_trial(study, trial, search: SearchConfig, config_dir: Path, worker: WorkerLock, base) -> None:
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
    pruning = None
    try:
        values = {key: parameter.value_of(suggest(trial, key, parameter)) for key, parameter in search.space.items()}
        config = trial_config(search, values, name, config_dir)
        pruning = pruning_callback(trial, base)
        with get_heartbeat_thread(trial._trial_id, study._storage):
            # CONTRACT(training-plan): pass device=Device.detect().share(share) here once train_experiment takes it,
            # so each of the workers sharing a GPU plans its step size for its share (claim_gpu_share caps memory).
            result = train_experiment(config, resume=original != trial.number, callbacks=[pruning])
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
