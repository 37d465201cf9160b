"""Writing files and folders so that a crash leaves the old version or the new one, never half."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from common.errors import ConfigError

# Every folder a command replaces whole carries this file: commands delete or replace only what they
# wrote themselves, never a folder of the user's that happens to sit where an output goes.
OWNER_MARKER = ".medqa-tinyllama-output"
MARKER_TEXT = ("Written by medqa-tinyllama (python -m training / python -m hub). The command that wrote this "
               "folder replaces it whole when run again; a folder without this file is never replaced.\n")


def write_bytes_atomic(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, mode: int = 0o644) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode)


def write_json_atomic(path: str | Path, data: Any, mode: int = 0o644) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", mode)


def replace_dir(dest: str | Path, fill: Callable[[Path], Any]) -> Path:
    """Call `fill(tmp)` on a new folder beside `dest`, mark it as ours, then swap it in for `dest`.

    Readers see the old folder or the new one; if `fill` fails, `dest` is left as it was. A `dest`
    this project did not write is refused before `fill` runs (check_replaceable).
    """
    dest = Path(dest)
    check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        fill(tmp)
        mark_owned(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        swap_in(tmp, dest, tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1)))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def mark_owned(folder: Path) -> None:
    write_text_atomic(Path(folder) / OWNER_MARKER, MARKER_TEXT)


def is_owned(folder: Path) -> bool:
    return (Path(folder) / OWNER_MARKER).is_file()


def check_replaceable(dest: str | Path) -> None:
    """Refuse (exit 2) to replace what this project did not write: a symlink (never followed, so its
    target is never deleted), a file, or a non-empty folder without the marker."""
    dest = Path(dest)
    if dest.is_symlink():
        raise ConfigError(f"{dest} is a symbolic link (to {os.readlink(dest)}); refusing to replace it or its "
                          "target: give the real folder, or a new one")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ConfigError(f"{dest} is a file, not a folder; refusing to replace it: choose a new folder")
    if not is_owned(dest) and any(dest.iterdir()):
        raise ConfigError(f"refusing to replace {dest}: it holds files this project did not write (no "
                          f"{OWNER_MARKER} in it); choose a new or empty folder, or move the files away (an "
                          f"output of an older version of this project: add an empty {OWNER_MARKER} file to it)")


def swap_in(new: Path, dest: Path, old: Path) -> None:
    """Put folder `new` at `dest`; the folder that was at `dest` moves to `old`, deleted once `new` is in.

    Ctrl-C and SIGTERM wait until both renames are done, so a signal never leaves `dest` missing.
    """
    with signals_deferred():
        if dest.exists():
            os.replace(dest, old)
        try:
            os.replace(new, dest)
        except BaseException:
            if old.exists() and not dest.exists():
                os.replace(old, dest)
            raise
    shutil.rmtree(old, ignore_errors=True)  # rmtree removes symlinks inside, never their targets


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT / SIGTERM for the block, then deliver them (signal handlers exist only in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: caught.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in caught:
            os.kill(os.getpid(), sig)
