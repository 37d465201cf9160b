"""A search shared through a real PostgreSQL server: two machines' searches on one study.

The server is a throwaway cluster in a temporary folder (initdb + pg_ctl, as the `postgres` user when the
tests run as root), started for this module and stopped after it. `.ci/run` installs PostgreSQL; where it
is not installed, or cannot be run, the test is skipped with the reason.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from space_support import free_port
from test_search import REPO_ROOT, STUDY_STATES, search_data, write_search  # noqa: F401 - search_data: a fixture


def postgres_programs() -> Path | None:
    """The folder holding initdb and pg_ctl (Debian keeps them out of PATH, in /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    return next((Path(f) for f in folders if (Path(f) / "initdb").exists()), None)


@pytest.fixture(scope="module")
def postgres_url():
    programs = postgres_programs()
    if programs is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser to start PostgreSQL as the 'postgres' user")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="search-postgres-"))  # under /tmp: reachable by the postgres user
    if as_user:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, port = folder / "data", free_port()

    def pg(*args: str) -> None:
        result = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        log = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
        assert result.returncode == 0, f"{' '.join(args[:2])}: {result.stdout}{result.stderr}{log}"

    pg(str(programs / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync")
    pg(str(programs / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
       "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg(str(programs / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_machines_share_one_study(tmp_path, tiny_base, search_data, postgres_url):
    """Two searches (as two machines would run them: each its own folders) on one PostgreSQL study of 4
    trials: every trial runs exactly once, on one of them, and both report the same finished study."""
    import optuna
    from optuna.trial import TrialState

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    machines = []
    for name in ("a", "b"):
        path, config_dir = write_search(tmp_path / name, tiny_base, search_data, storage=postgres_url,
                                        pruner={"name": "NopPruner"})
        log = open(tmp_path / f"{name}.log", "w")
        machines.append((tmp_path / name, log, subprocess.Popen(
            [sys.executable, "-m", "training", "search", "--config", str(path), "--config-dir", str(config_dir)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)))
    for folder, log, process in machines:
        assert process.wait(timeout=900) == 0, (tmp_path / f"{folder.name}.log").read_text()[-3000:]
        log.close()

    study = optuna.load_study(study_name="tiny", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if "withdrawn" not in t.user_attrs]
    assert sorted(t.number for t in counted) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in counted)
    ran_on = {}
    for t in counted:  # each trial's run exists on exactly the machine that trained it
        owners = [folder.name for folder, _, _ in machines
                  if (folder / "search" / "tiny" / "runs" / f"tiny-{t.number:03d}" / "metrics.json").is_file()]
        assert len(owners) == 1, (t.number, owners)
        assert t.user_attrs["run"].startswith(str(tmp_path / owners[0]))
        ran_on[t.number] = owners[0]
    assert set(ran_on.values()) == {"a", "b"}, f"both machines should have trained: {ran_on}"
    reports = [json.loads((folder / "search" / "tiny" / "study.json").read_text()) for folder, _, _ in machines]
    assert all(r["done"] and r["counts"]["complete"] == 4 for r in reports)
    assert reports[0]["best"] == reports[1]["best"]
    assert "postgresql://postgres@127.0.0.1" in reports[0]["storage"]
    assert {t["state"] for r in machines for t in json.loads((r[0] / "search" / "tiny" / "trials.json").read_text())} \
        <= STUDY_STATES
