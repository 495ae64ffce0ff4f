"""One writer per run dir: a second run into a dir another process writes in fails at once (exit 2) naming that
process; a lock left by a killed run is taken over; a search and its own fits never block each other."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agora.config import validate_recipe
from agora.fit import rundir
from agora.trainer import AgoraTrainer
from conftest import tiny_recipe

HOLDER = """
import json, os, socket, sys, time
from pathlib import Path
import filelock
run = Path(sys.argv[1])
run.mkdir(parents=True)
lock = filelock.FileLock(str(run / ".lock"), timeout=0)
lock.acquire()  # what a run holds while it writes (agora.fit.runlock)
(run / ".lock.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                            "started": "2026-01-01 00:00:00 UTC", "command": "holder"}))
print("locked", flush=True)
time.sleep(600)
"""
"""A process that holds a run dir's lock the way a run does (its file lock, and who it is in ``.lock.json``)."""


def _cli(recipe: dict, tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "AGORA_DATA_DIR": str(data_dir)}
    env.pop("AGORA_RUN_DIR", None)
    return subprocess.run([sys.executable, "-m", "agora.cli", str(path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of ``<tmp>/run`` (it sleeps), killed at the end if still alive."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_run_into_a_locked_dir_fails_at_once_naming_the_holder(holder, tmp_path, data_dir, tiny_bort, one_thread):
    run = tmp_path / "run"
    proc = _cli(tiny_recipe(tiny_bort, data_dir, run), tmp_path, data_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (f"agora-finetune: error: output.dir {run} is in use: process {holder.pid} on host {socket.gethostname()} "
            in proc.stderr)
    assert f"holds its lock ({run}/.lock). Wait for that run to end or stop it, or choose another output.dir" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == [".lock", ".lock.json"]  # nothing of the refused run
    assert json.loads((run / ".lock.json").read_text())["pid"] == holder.pid

    # the holder is killed (no clean exit): its lock dies with it, and the next run takes it over
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    proc = _cli(tiny_recipe(tiny_bort, data_dir, run, trainer={"max_epochs": 1}), tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"[run] {run}: took over the lock left by process {holder.pid} on host" in proc.stdout
    assert (run / "metrics.json").is_file() and not (run / ".lock.json").exists()


def test_the_lock_holds_in_this_process_too_and_is_let_go(tmp_path, data_dir, tiny_bort, one_thread):
    from agora.fit.runlock import RunDirLocked

    run = tmp_path / "run"
    cfg = validate_recipe(tiny_recipe(tiny_bort, data_dir, run, trainer={"max_epochs": 1}))
    with rundir.locked(run):
        assert json.loads((run / ".lock.json").read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirLocked, match=rf"output.dir {run} is in use: process {os.getpid()} "):
            AgoraTrainer(cfg).fit()
    assert sorted(p.name for p in run.parent.iterdir()) == []  # the lock made the dir and took it away again
    AgoraTrainer(cfg).fit()  # let go: the next run takes it
    assert (run / "metrics.json").is_file() and not (run / ".lock.json").exists()


def test_a_search_holds_its_dir_and_its_fits_lock_their_own(tmp_path, data_dir, tiny_bort, one_thread):
    from agora.fit.runlock import RunDirLocked
    from agora.search import run_search

    run = tmp_path / "search"
    recipe = tiny_recipe(tiny_bort, data_dir, run, trainer={"max_epochs": 1},
                         search={"space": {"optim.lr": [1e-3, 2e-3]}, "max_rounds": 1})
    seen = []

    def progress(line):
        if line.startswith("[search] round 0, fit"):  # inside the search, after a fit that locked its own dir
            seen.append(json.loads((run / ".lock.json").read_text())["pid"])
            with pytest.raises(RunDirLocked, match=f"output.dir {run} is in use"):
                with rundir.locked(run):
                    pass

    result = run_search(validate_recipe(recipe), "search.yaml", progress=progress)
    assert seen == [os.getpid()] * 2 and result.best_model_dir is not None
    assert not (run / ".lock.json").exists()
    assert all((fit / "metrics.json").is_file() and not (fit / ".lock.json").exists() for fit in (run / "trials").iterdir())
