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
import os
import signal
import subprocess
import sys
import time
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
                        help="override a search setting, e.g. --set trials=8 --set space.learning_rate.high=8e-4 (repeatable)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # a worker process started by the search
    parser.add_argument("--gpu-share", type=int, default=1, help=argparse.SUPPRESS)  # workers on this worker's GPU


def run(args: argparse.Namespace) -> int:
    search = load_search(args.config, args.overrides)
    if args.worker is not None:
        from training.search_worker import work

        work(search, args.config_dir, args.worker, args.gpu_share)
        return 0
    check_search(search, args.config_dir)
    study = open_study(search, args.config_dir)
    print(f"[search] study '{search.study}' in {storage_label(search)}: {search.trials} trials, "
          f"{search.workers} at a time here; results in {search.folder}", flush=True)
    with report.Progress(search, args.config_dir) as progress:
        if search.workers == 1 and len(gpu_ids()) <= 1:
            from training.search_worker import work

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
    choice a value the config and the trainer's pre-checks (preflight.check_experiment) accept, planned for the
    share of a GPU that each trial will have."""
    from training.device import Device
    from training.preflight import check_experiment

    folder = search.folder
    check_replaceable(folder)  # never write into a folder this project did not make
    created = [path for path in (search.runs_dir, folder, *folder.parents) if not path.exists()]  # by the checks
    name = f"{search.study}-{CHECK_NAME}"
    device = Device.detect().share(-(-search.workers // max(len(gpu_ids()), 1)))
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
        if search.storage is not None:  # reachable, before anything is written
            attempt(open_storage, search)
        base = attempt(trial_config, search, {}, name, config_dir)
        if base is not None:
            problems += check_experiment(base, device)
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
                problems += [type(p)(f"{where}: {p}", p.exit_code) for p in check_experiment(config, device)]
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
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if search.storage is None:
        return JournalStorage(JournalFileBackend(str(search.folder / JOURNAL)))
    for attempt in range(3):  # machines starting together race to create Optuna's tables: the loser retries
        try:
            # Heartbeats let a worker on any machine continue a trial whose worker died (4 missed check-ins).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(search.storage, heartbeat_interval=search.heartbeat_seconds,
                                  grace_period=4 * search.heartbeat_seconds,
                                  heartbeat_stale_trial_callback=continue_later(search))
        except ImportError as exc:
            raise EnvironmentProblem(f"storage {storage_label(search)}: a database driver is missing ({exc}); "
                                     "pip install 'psycopg[binary]' for PostgreSQL") from None
        except Exception as exc:  # sqlalchemy's errors: a bad URL, no server, refused login
            if attempt == 2:
                reason = str(exc).splitlines()[0].replace(search.storage, storage_label(search))
                raise EnvironmentProblem(f"cannot open storage {storage_label(search)}: {reason}") from None
            time.sleep(1 + attempt)


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
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # so that `finally` stops the workers
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
