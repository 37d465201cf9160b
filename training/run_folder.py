"""A run folder's life: one trainer at a time, a new run staged beside the finished one, checkpoints
checked before a resume trusts them.

runs/<exp>/ holds a finished run or nothing. While `train` works, runs/.in-progress/ holds
`<exp>.lock` (an flock, with the pid of the process training) and `<exp>/`, the staged run
(config.yaml, plan.json, checkpoints/, tensorboard/, then adapter/, metrics.json, provenance.json), which is
swapped in for runs/<exp>/ only once it is complete. A failure, Ctrl-C or SIGTERM leaves runs/<exp>/
byte-for-byte as it was; the staged run stays, so `--resume` continues it. The `.in-progress` folder
sits one level deeper than any run, so nothing that looks for runs/*/adapter ever sees a staged one.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import yaml

from common.atomic import check_replaceable, mark_owned, swap_in, write_json_atomic
from common.errors import ConfigError
from common.yaml_config import load_yaml
from training.layout import CHECKPOINTS, IN_PROGRESS, TENSORBOARD, RunDir
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers' own pattern (trainer_utils.PREFIX_CHECKPOINT_DIR)
SET_ASIDE_PREFIX = "broken-"  # a checkpoint that does not load, kept for inspection; the Trainer ignores it


def staging_dir(run_dir: Path) -> Path:
    return Path(run_dir).parent / IN_PROGRESS / Path(run_dir).name


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir).parent / IN_PROGRESS / f"{Path(run_dir).name}.lock"


# ---------------------------------------------------------------- the lock


class RunLock:
    """An exclusive flock on runs/.in-progress/<exp>.lock, which holds the owner's pid.

    The kernel drops an flock when its process dies, so the lock of a killed process is taken over
    by the next `train` (and said so); a pid alone could be reused by an unrelated process.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = lock_path(run_dir)
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_pid(fd)
                os.close(fd)
                raise busy(self.run_dir, holder, self.path) from None
            if same_file(fd, self.path):
                break
            os.close(fd)  # its owner removed it between our open and flock: open the new one
        stale = read_pid(fd)
        if stale is not None and stale != os.getpid():
            print(f"[{self.run_dir.name}] taking over the lock of process {stale}, which is no longer running")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: a waiting process then retries on a new file
        os.close(self.fd)
        self.fd = None
        try:
            self.path.parent.rmdir()  # only when no other run is locked or staged
        except OSError:
            pass


def lock_holder(run_dir: Path) -> int | None:
    """The pid of a live process holding run_dir's lock, or None; creates nothing."""
    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):  # no lock; an unusable runs_dir is check_runs_dir's to say
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(fd) or -1
    finally:
        os.close(fd)  # closing drops our probe lock too
    return None


def busy(run_dir: Path, pid: int | None, path: Path) -> ConfigError:
    who = f"process {pid}" if pid and pid > 0 else "another process"
    return ConfigError(f"{run_dir} is in use: {who} is training it (lock {path}); wait for it to finish or "
                       f"stop it (kill {pid if pid and pid > 0 else '<pid>'})")


def read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def check_run_folder(run_dir: Path) -> None:
    """Before anything is written: the run folder and its staged copy are ours to replace, and free."""
    check_replaceable(run_dir)
    check_replaceable(staging_dir(run_dir))
    holder = lock_holder(run_dir)
    if holder is not None:
        raise busy(run_dir, holder, lock_path(run_dir))


# ---------------------------------------------------------------- staging


def start_staged_run(run_dir: Path, config: dict, plan, resume: bool, *, main: bool = True) -> tuple[Path, Path | None]:
    """The staged folder to train in, with config.yaml and plan.json (`plan`: the TrainingPlan), and the
    checkpoint to resume from (None: from the start).

    A resume continues the staged run if it has a checkpoint that loads, else the finished run's
    (copied into a new staged run, so the finished one stays as it is until the new one is done); its config
    and plan must be the ones saved there. Only the main process writes; the others of a DDP run get the same answer.
    """
    staged = staging_dir(run_dir)
    name = Path(run_dir).name
    if resume:
        for source in (RunDir(staged), RunDir(run_dir)):
            checkpoint, broken = newest_loadable_checkpoint(source.checkpoints, name, report=main)
            if checkpoint is None:
                continue
            check_same_config(source.config_file, config)
            plan.check_resumable(source.plan(), str(source.path))
            if source.path != staged:
                if main:
                    fresh_staging(staged)
                    copy_run_state(source.path, staged, skip=broken)
                checkpoint = RunDir(staged).checkpoints / checkpoint.name
            elif main:
                set_aside(broken)
            if main:
                write_json_atomic(RunDir(staged).plan_file, plan.as_dict())
                print(f"[{name}] resuming from {checkpoint}")
            return staged, checkpoint
        if main:
            print(f"[{name}] no checkpoint that loads in {RunDir(staged).checkpoints} or "
                  f"{RunDir(run_dir).checkpoints}; training from the start")
    if main:
        fresh_staging(staged)
        RunDir(staged).config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        write_json_atomic(RunDir(staged).plan_file, plan.as_dict())
    return staged, None


def fresh_staging(staged: Path) -> None:
    """An empty staged run (a stale one, left by a failed or killed run, is ours and goes)."""
    check_replaceable(staged)
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    mark_owned(staged)


def copy_run_state(source: Path, staged: Path, skip: list[Path]) -> None:
    skipped = {p.name for p in skip}
    for name in (CHECKPOINTS, TENSORBOARD):
        if (source / name).is_dir():
            shutil.copytree(source / name, staged / name,
                            ignore=lambda folder, names: [n for n in names if n in skipped])
    shutil.copy2(RunDir(source).config_file, RunDir(staged).config_file)


def check_same_config(saved: Path, config: dict) -> None:
    """A resume continues the same training; only where the runs live may differ (a moved runs/ folder)."""
    if not saved.is_file():
        return
    previous = load_yaml(saved.read_text(encoding="utf-8"), str(saved))
    if not isinstance(previous, dict) or {**previous, "runs_dir": None} != {**config, "runs_dir": None}:
        raise ConfigError(f"--resume: {saved} differs from this configuration; resume with the same "
                          "settings, or train afresh without --resume")


def finish_staged_run(staged: Path, run_dir: Path) -> None:
    """Swap the complete staged run in for runs/<exp>/; the previous run goes only once it is in."""
    check_replaceable(run_dir)
    swap_in(staged, Path(run_dir), staged.with_name(f"{staged.name}.old-{os.getpid()}"))


# ---------------------------------------------------------------- checkpoints that load


def newest_loadable_checkpoint(folder: Path, name: str, *, report: bool = True) -> tuple[Path | None, list[Path]]:
    """The newest checkpoint whose files all read back whole, and the newer ones skipped (each said, with why)."""
    found = sorted((p for p in folder.iterdir() if CHECKPOINT.match(p.name) and p.is_dir()),
                   key=lambda p: int(CHECKPOINT.match(p.name).group(1)), reverse=True) if folder.is_dir() else []
    broken = []
    for checkpoint in found:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint, broken
        if report:
            print(f"[{name}] skipping {checkpoint}: {problem}")
        broken.append(checkpoint)
    return None, broken


def set_aside(broken: list[Path]) -> None:
    """Rename broken checkpoints of the staged run so the resumed Trainer neither loads nor overwrites them."""
    for checkpoint in broken:
        target = checkpoint.with_name(SET_ASIDE_PREFIX + checkpoint.name)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(checkpoint, target)


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` would not load (a missing, truncated or unreadable file), or None. Reads every
    file once, but unpickles nothing: JSON parsed, safetensors headers checked by safetensors, torch
    archives checked against their CRCs."""
    if not (checkpoint / "trainer_state.json").is_file():
        return "no trainer_state.json (the save did not finish)"
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        try:
            problem = file_problem(path)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
        if problem:
            return f"{path.name} is truncated or unreadable ({problem})"
    return None


def file_problem(path: Path) -> str | None:
    suffix = path.suffix
    if suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".safetensors":
        return safetensors_problem(path)
    elif suffix in (".pt", ".pth", ".bin"):
        if not zipfile.is_zipfile(path):
            return "not a torch archive"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        return f"{bad} fails its CRC" if bad else None
    return None


def safetensors_problem(path: Path) -> str | None:
    """safetensors' own header check: sizes and offsets against the file's length (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np"):
            return None
    except SafetensorError as exc:
        return str(exc)
