"""Agora's search on Ray Tune (``search.runner: ray``) against the local runner: the same search, its fits
run as concurrent trials. One local Ray (2 CPUs, loopback only) serves the whole module.

The search is test_search_e2e's: tiny student, tiny teacher, the tiny RTE rows of
tests/fixtures/tiny, 4 θs, 2 rounds.
Tolerance of the comparison: none. Both runners run each fit with 1 torch thread, the same seed,
the same data and the same CPU kernels (fp32), only in another process; such fits are bit-identical
(checked: every E_sel and dev score, and every mistake index, equal). Scores are accuracies, k/n over
a few dozen rows, so a difference would be a whole row (>= 1/32), never float noise; any inequality
is a real divergence.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a Ray of this machine: loopback only
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'agora-finetune[ray]')")

from test_search_e2e import _fits, _recipe, _state

RAY = {"runner": "ray", "ray": {"cpus_per_trial": 1, "max_concurrent_trials": 2}}
DASHBOARD = "http://127.0.0.1:8265"
"""The dashboard URL a driver is told (Ray's ``RAY_OVERRIDE_DASHBOARD_URL``, as for a dashboard behind a proxy):
the module's Ray serves none (``include_dashboard=False``)."""


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray with 2 CPUs, started once for the module; the searches below use it as it is."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _search(recipe, lines=None, runner=None):
    from agora.config import validate_recipe
    from agora.search import run_search

    return run_search(validate_recipe(recipe), "ray.yaml", runner=runner,
                      progress=(lines.append if lines is not None else lambda line: None))


def _teacher_passes(run: Path) -> int:
    """Teacher forward passes of the whole search: D's growth (the driver) plus every fit's."""
    fits = [json.loads(p.read_text())["agora"]["teacher_forward_calls"] for p in (run / "trials").glob("*/metrics.json")]
    return _state(run)["teacher_forward_calls"] + sum(fits)


def _distinct_cached(cache: Path) -> int:
    import pyarrow as pa

    keys = set()
    for part in cache.glob("*/part-*.arrow"):
        keys.update(pa.ipc.open_file(pa.memory_map(str(part))).read_all().column("key").to_pylist())
    return len(keys)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, local_bort, local_teacher, tiny_data):
    """The search on the local runner (fits one after the other, in this process)."""
    tmp = tmp_path_factory.mktemp("local")
    recipe = _recipe(local_bort, local_teacher, tiny_data, tmp / "run")
    _search(recipe)
    return recipe, tmp / "run"


@pytest.fixture(scope="module")
def ray_searched(ray_address, tmp_path_factory, local_bort, local_teacher, tiny_data):
    tmp = tmp_path_factory.mktemp("ray")
    recipe = _recipe(local_bort, local_teacher, tiny_data, tmp / "run")
    recipe["search"] = {**recipe["search"], **RAY}
    lines: list[str] = []
    start = time.perf_counter()
    _search(recipe, lines)
    return recipe, tmp / "run", lines, time.perf_counter() - start


def test_ray_search_equals_the_local_search(local_reference, ray_searched):
    (_, local), (recipe, run, _, _) = local_reference, ray_searched
    ours, theirs = _state(run), _state(local)
    # the same fits (names, seeds), the same scores and mistakes, bit for bit (see the module's note); the
    # state lists a round's fits in the order they finished
    assert sorted(_fits(ours)) == sorted(_fits(theirs))
    assert [(r["best"], r["removed"], r["decision"], r["remaining"]) for r in ours["rounds"]] == \
           [(r["best"], r["removed"], r["decision"], r["remaining"]) for r in theirs["rounds"]]
    assert ours["best"] == {**theirs["best"], "model_dir": ours["best"]["model_dir"]}
    assert (ours["fits"], ours["d_rows"], ours["teacher_forward_calls"], ours["stopped"]) == \
           (theirs["fits"], theirs["d_rows"], theirs["teacher_forward_calls"], theirs["stopped"])
    assert (run / "search" / "added.jsonl").read_text() == (local / "search" / "added.jsonl").read_text()
    # the returned student, its report and plots, as the local runner leaves them
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["main_score"] == json.loads((local / "metrics.json").read_text())["main_score"]
    assert [p.parent.name for p in (run / "trials").glob("*/best")] == [ours["best"]["trial"]]
    assert (run / "best" / "config.json").is_file() and (run / "plots" / "scores.png").is_file()
    report = (run / "report.md").read_text()
    assert "## Round 1" in report and "pruned: worst score" in report
    # fits ran two at once, yet the teacher scored each distinct input once, as on the local runner
    teacher_cache = Path(recipe["teacher"]["cache_dir"])
    assert _teacher_passes(run) == _teacher_passes(local) == _distinct_cached(teacher_cache)
    # Tune's experiments live in the search's run dir, one per round
    assert len(list((run / "search" / "ray").iterdir())) == 2


def test_ray_progress_one_line_per_finished_trial(ray_searched):
    _, run, lines, _ = ray_searched
    assert lines[1] == "[ray] 2 CPU(s), 0 GPU(s) on 1 node(s); each fit takes 1 CPU(s) and 0 GPU(s): 2 fit(s) at once"
    fits = [line for line in lines if line.startswith("[search] round ")]
    state = _state(run)
    assert len(fits) == state["fits"] == sum(len(r["thetas"]) for r in state["rounds"])  # one per finished fit
    # θ, its E_sel score, its wall time, the fits left in its round
    assert re.fullmatch(r"\[search\] round 0, fit 1/4 \(#1\): lr=\S+, seed=\d -> E_sel \d+\.\d\d, dev \d+\.\d\d"
                        r" \(best so far\); \d+\.\d s, 3 left in the round", fits[0]), fits[0]
    assert [f.rsplit(", ", 1)[1] for f in fits] == [f"{n} left in the round" for r in state["rounds"]
                                                    for n in reversed(range(len(r["thetas"])))]


def test_a_trial_that_raises_is_recorded_as_failed_and_the_search_goes_on(ray_address, tmp_path, local_bort,
                                                                         local_teacher, tiny_data):
    recipe = _recipe(local_bort, local_teacher, tiny_data, tmp_path / "run", agora=False)
    recipe["output"]["predict"] = False
    missing = tmp_path / "config-only-model"  # its config passes the checks made before the search; its fit fails
    missing.mkdir()
    shutil.copy(Path(local_bort) / "config.json", missing / "config.json")
    missing = str(missing)
    recipe["search"] = {**recipe["search"], **RAY, "space": {}, "max_rounds": 1, "trials": [
        {"optim.lr": 3e-3, "model.name": str(local_bort)}, {"optim.lr": 3e-3, "model.name": missing}]}
    lines: list[str] = []
    result = _search(recipe, lines)
    state = _state(tmp_path / "run")
    fits = state["rounds"][0]["fits"]
    assert state["fits"] == 2 and fits["1"]["score"] is None
    assert fits["1"]["failed"].startswith("ModelError: cannot load model ") and missing in fits["1"]["failed"]
    assert "fit.log" in fits["1"]["failed"] and "Traceback" in (tmp_path / "run/trials/r0.0-t1/fit.log").read_text()
    assert state["rounds"][0]["removed"]["1"] == "failed fit" and fits["0"]["score"] is not None
    assert state["best"]["theta"] == 0 and result.selection_score == state["best"]["score"]
    assert any("FAILED (ModelError: cannot load model" in line for line in lines)
    assert "pruned: ModelError: cannot load model" in (tmp_path / "run" / "report.md").read_text()


def test_a_lost_worker_is_retried_then_recorded_as_failed(ray_address, tmp_path, local_bort, local_teacher, tiny_data):
    """θ 0's fit kills its own process (SIGKILL, as the OOM killer or a lost node would) every time it
    starts. With max_failures 1, Ray Tune starts it twice, then it is recorded as failed with the
    reason and pruned; θ 1 finishes and the search goes on. Each fit takes both CPUs, so it runs
    alone, on 2 torch threads."""
    from agora.method.extension import agora_extension
    from agora.search.ray_runner import RayRunner

    def killed(cfg, card, run_dir, marks=tmp_path / "marks"):  # nested: Ray pickles it by value
        marks.mkdir(exist_ok=True)
        tries = len(list(marks.glob(f"{cfg.optim.lr}-*")))
        import torch

        (marks / f"{cfg.optim.lr}-{tries}").write_text(f"{torch.get_num_threads()} {os.environ['OMP_NUM_THREADS']}")
        if cfg.optim.lr == 3e-3:
            os.kill(os.getpid(), signal.SIGKILL)
        return agora_extension(cfg, card, run_dir)

    recipe = _recipe(local_bort, local_teacher, tiny_data, tmp_path / "run", agora=False)
    recipe["output"]["predict"] = False
    recipe["search"] = {**recipe["search"], **RAY, "ray": {**RAY["ray"], "cpus_per_trial": 2, "max_failures": 1},
                        "space": {},
                        "max_rounds": 1, "trials": [{"optim.lr": 3e-3}, {"optim.lr": 1e-4}]}
    from agora.config import validate_recipe

    cfg = validate_recipe(recipe)
    lines: list[str] = []
    runner = RayRunner(cfg.search.ray, tmp_path / "run", extend=killed, progress=lines.append)
    _search(recipe, runner=runner)
    fits = _state(tmp_path / "run")["rounds"][0]["fits"]
    assert lines == ["[ray] 2 CPU(s), 0 GPU(s) on 1 node(s); each fit takes 2 CPU(s) and 0 GPU(s): 1 fit(s) at once"]
    marks = {p.name: p.read_text() for p in (tmp_path / "marks").iterdir()}
    assert marks == {"0.0001-0": "2 2", "0.003-0": "2 2", "0.003-1": "2 2"}  # torch threads, OMP_NUM_THREADS
    assert fits["1"]["score"] is not None and fits["0"]["score"] is None
    assert fits["0"]["failed"].startswith("its worker was lost 2 time(s), retries spent: The actor is dead")
    assert _state(tmp_path / "run")["rounds"][0]["removed"] == {"0": "failed fit"}


def test_driver_killed_mid_search_resumes(ray_address, local_reference, tmp_path, local_bort, local_teacher, tiny_data):
    """The driver (the CLI, joining this module's Ray as a cluster) is killed once round 0 is done and
    round 1 has started; the rerun records the fits not yet finished, and only those, and ends as the
    local search. The fits go through a storage path, as on machines that share no disk: each runs in a
    temporary dir, is copied to the storage and gathered by the driver (D's additions travel with it)."""
    _, reference = local_reference
    recipe = _recipe(local_bort, local_teacher, tiny_data, tmp_path / "run")
    recipe["search"] = {**recipe["search"], **RAY,
                        "ray": {**RAY["ray"], "address": ray_address, "storage_path": str(tmp_path / "storage")}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(recipe))
    state_file = tmp_path / "run" / "search" / "state.json"
    driver = subprocess.Popen([sys.executable, "-m", "agora.cli", str(path)], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env={**os.environ, "AGORA_DATA_DIR": str(tiny_data),
                                                             "RAY_OVERRIDE_DASHBOARD_URL": DASHBOARD, "PYTHONUNBUFFERED": "1"})
    # Wait for a state, not for a time: the driver prints a fit's progress line after saving it in the state,
    # so the line of round 1's first fit means round 0 is closed and saved and round 1 is under way (it has
    # at least 2 more fits, 2 at a time: its last one needs a whole fit's time after this line). No deadline:
    # a loaded machine only makes it later; a driver that ends early ends the loop (end of its output).
    printed = []
    for line in iter(driver.stdout.readline, b""):
        printed.append(line.decode())
        if line.startswith(b"[search] round 1, fit 1/"):
            break
    assert driver.poll() is None, "".join(printed)[-3000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # the driver joined the cluster and printed its resources and the dashboard's URL as Ray reports it
    assert f"[ray] 2 CPU(s), 0 GPU(s) on 1 node(s); each fit takes 1 CPU(s) and 0 GPU(s): 2 fit(s) at once; " \
           f"dashboard: {DASHBOARD}\n" in "".join(printed) + driver.stdout.read().decode()
    killed = _state(state_file.parent.parent)
    assert len(_state(reference)["rounds"][1]["thetas"]) >= 3, "round 1 needs 3 fits for the kill to fall inside it"
    total = _state(reference)["fits"]
    assert killed["rounds"][0]["done"] and not killed["rounds"][1]["done"] and 5 <= killed["fits"] < total
    finished = {f["trial"]: (tmp_path / "run" / "trials" / f["trial"] / "fit.log").stat().st_mtime_ns
                for r in killed["rounds"] for f in r["fits"].values()}
    while ray.available_resources().get("CPU", 0) < 2:  # the dead driver's trials are gone
        time.sleep(0.2)

    lines: list[str] = []
    result = _search({**recipe, "output": {**recipe["output"], "resume_from": "last"}}, lines)
    resumed = _state(tmp_path / "run")
    assert "[search] resuming" in lines[1] and sum(line.startswith("[search] round ") for line in lines) == total - killed["fits"]
    assert sorted(_fits(resumed)) == sorted(_fits(_state(reference))) and resumed["best"]["trial"] == _state(reference)["best"]["trial"]
    assert all((tmp_path / "run" / "trials" / t / "fit.log").stat().st_mtime_ns == m for t, m in finished.items())
    assert result.main_score == _state(reference)["best"]["dev_score"]
    # run dirs landed in the storage, and were gathered into output.dir with their paths rewritten
    stored = sorted(p.name for p in (tmp_path / "storage" / "run" / "trials").iterdir())
    assert stored == sorted(p.name for p in (tmp_path / "run" / "trials").iterdir()) and len(stored) == total
    best = tmp_path / "run" / "trials" / resumed["best"]["trial"]
    assert json.loads((best / "metrics.json").read_text())["best_model_dir"] == str(best / "best")
    assert (tmp_path / "run" / "best" / "config.json").is_file() and (tmp_path / "storage" / "run" / "ray").is_dir()
    round1 = tmp_path / "run" / "trials" / f"r1.0-t{resumed['rounds'][1]['thetas'][0]}" / "metrics.json"
    round1 = json.loads(round1.read_text())["agora"]["teacher"]
    assert round1["train_rows_scored"] == 64 - 12 + resumed["d_rows"]  # D's additions reached the fit
