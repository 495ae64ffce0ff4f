"""Agora's search on Ray: the fits of one round run at once, as the trials of a Ray Tune experiment.

``search.runner: ray``, set up by ``search.ray`` (:class:`agora.config.RayConfig`). The rounds
(:mod:`agora.search.rounds`) do not change: they hand the runner a round's fits not yet done and
record each one as it finishes. Only where the fits run changes.

- Ray. ``address: null`` starts a local Ray with this machine's resources, listening on loopback
  only. ``auto``, ``host:port`` or ``ray://host:port`` joins a cluster. A Ray this process already
  started (``ray.init``) is used as it is. The dashboard's URL is printed when Ray serves one.
- A round is one ``ray.tune.Tuner`` experiment over the round's trial names. Each trial is one fit,
  run by :meth:`agora.fit.run.LocalRunner.run_one` (``recipe.yaml``, ``fit.log``, the fit, then its
  checkpoints deleted), with ``cpus_per_trial`` CPUs (as many torch threads) and ``gpus_per_trial``
  GPUs. At most ``max_concurrent_trials`` run at once. Rounds stay sequential: D grows between them.
- The driver stays the one writer of the search's state. A Tune callback, run by Tune's controller,
  puts each finished trial into a Ray queue. The driver takes it from there and records the fit
  (``done(trial, failure)``) at once, so the state is saved after every finished fit, as with the
  local runner. With Ray Client (``ray://``) Tune's controller runs on the cluster; the queue still
  reaches the driver.
- Faults. An exception in a fit is caught in its trial: the fit is recorded as failed with the
  exception, and its ``fit.log`` holds the traceback. A NaN or infinite training loss stops its
  fit (:mod:`agora.fit.finite`), recorded as failed the same way. A lost worker (killed, or its node
  gone) is restarted up to ``max_failures`` times (Tune's ``FailureConfig``), then recorded as failed.
  Failed fits are pruned, as with the local runner.
- Run dirs. With ``storage_path: null`` each fit writes straight into ``<output.dir>/trials/<name>``:
  one machine, or an ``output.dir`` every node mounts. With ``storage_path`` set, a fit runs in a
  temporary dir on its node and is copied to ``<storage_path>/<run name>/trials/<name>`` (a path
  every node sees, or a URI pyarrow opens: ``s3://``, ``gs://``). The driver then gathers it into
  ``<output.dir>/trials/<name>`` and rewrites the paths in its ``metrics.json``. D's additions travel
  with the trial. Tune's own files go to ``<output.dir>/search/ray``, or
  ``<storage_path>/<run name>/ray``.
- Resume. Nothing of Tune's is restored. A rerun of the search hands the runner the fits not yet
  recorded, and each starts from scratch: its old run dir is deleted first.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agora.config import RAY_EXTRA, RayConfig
from agora.errors import RecipeError
from agora.files import write_json
from agora.fit.run import Extend, LocalRunner, fit_failure
from agora.search.trial import Trial

FORWARDED_ENV = ("AGORA_DATA_DIR", "AGORA_CACHE_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
"""The driver's settings a fit reads from the environment, set in each trial's process."""
_STOPS: dict[str, threading.Event] = {}
"""Stop flags of running experiments, by key (the Tune stopper holds only the key: it is pickled)."""


def import_ray(address: str | None):
    """``ray`` and ``ray.tune``, or a :class:`RecipeError` naming the extra. A local Ray (``address``
    null or on loopback) listens on loopback only: set before Ray is first imported."""
    if address is None or address.split("://")[-1].split(":")[0] in ("127.0.0.1", "localhost"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's single-machine mode: loopback
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic reporter: silent at verbose=0
    try:
        import ray
        from ray import tune
    except ImportError as err:
        raise RecipeError(f"search.runner: ray needs Ray Tune, which cannot be imported ({err}): {RAY_EXTRA}") from None
    return ray, tune


class RayRunner:
    """Runs a round's fits as the trials of one Ray Tune experiment (a :class:`agora.search.trial.TrialRunner`).

    Args:
        settings: ``search.ray``.
        run_dir: the search's run dir (names the storage folder; Tune's files go under it).
        extend: the method's additions to each fit (Agora: :func:`agora.method.extension.agora_extension`).
        progress: where the runner's own lines go (Ray's resources, the dashboard).
    """

    def __init__(self, settings: RayConfig, run_dir: Path, extend: Extend | None = None,
                 progress: Callable[[str], None] = print):
        self.settings, self.extend, self.progress = settings, extend, progress
        self.run_dir = Path(run_dir).resolve()
        self.ray, self.tune = import_ray(settings.address)
        self.started = False  # whether this runner started Ray (and shuts it down)
        self.connected = False
        storage = settings.storage_path
        self.upload = None if storage is None else f"{_absolute(storage)}/{self.run_dir.name}"
        self.tune_dir = self.upload + "/ray" if self.upload else str(self.run_dir / "search" / "ray")

    # ------------------------------------------------------------------ Ray

    def connect(self) -> None:
        """Start or join Ray (once), print its resources and the dashboard's URL; a fit that can never
        be placed on a local Ray is an error before any fit."""
        if self.connected:
            return
        ray, s = self.ray, self.settings
        url = None
        if not ray.is_initialized():
            context = ray.init(address=s.address, log_to_driver=False)
            self.started, url = True, getattr(context, "dashboard_url", None)
        self.connected = True
        cpus, gpus = ray.cluster_resources().get("CPU", 0), ray.cluster_resources().get("GPU", 0)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        fit = min([int(cpus // s.cpus_per_trial)] + ([int(gpus // s.gpus_per_trial)] if s.gpus_per_trial else []))
        at_once = min(fit, s.max_concurrent_trials or fit)
        self.progress(f"[ray] {cpus:g} CPU(s), {gpus:g} GPU(s) on {nodes} node(s); each fit takes {s.cpus_per_trial:g} "
                      f"CPU(s) and {s.gpus_per_trial:g} GPU(s): {at_once} fit(s) at once"
                      + (f"; dashboard: {_http(url)}" if url else ""))
        if fit == 0:
            why = (f"search.ray: a fit asks for {s.cpus_per_trial:g} CPU(s) and {s.gpus_per_trial:g} GPU(s), but Ray "
                   f"has {cpus:g} CPU(s) and {gpus:g} GPU(s)")
            if s.address is None:
                raise RecipeError(why + ": lower search.ray.cpus_per_trial / gpus_per_trial")
            self.progress(f"[ray] warning: {why}; the fits wait until the cluster grows")

    def close(self) -> None:
        """Shut Ray down if this runner started it."""
        if self.started:
            self.ray.shutdown()
            self.started = self.connected = False

    # ------------------------------------------------------------------ a round

    def run(self, trials: Iterable[Trial], done: Callable[[Trial, str | None], None]) -> None:
        """Run the trials as one Tune experiment; ``done(trial, failure)`` in this thread as each finishes."""
        from ray.util.queue import Empty, Queue

        pending = {t.name: t for t in trials}
        if not pending:
            return
        self.connect()
        tune, s = self.tune, self.settings
        jobs = {name: self.job(trial) for name, trial in pending.items()}
        inbox = Queue(actor_options={"num_cpus": 0})
        key = f"{id(self)}-{time.time_ns()}"
        _STOPS[key] = threading.Event()
        callback, stopper = _tune_classes(tune)
        trainable = tune.with_resources(
            tune.with_parameters(fit_trial, jobs=jobs, extend=self.extend, threads=max(1, int(s.cpus_per_trial))),
            {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
        first = next(iter(pending)).split("-")[0]
        tuner = tune.Tuner(
            trainable, param_space={"trial": tune.grid_search(list(pending))},
            tune_config=tune.TuneConfig(max_concurrent_trials=s.max_concurrent_trials, reuse_actors=True,
                                        trial_dirname_creator=_dirname),
            run_config=tune.RunConfig(name=f"{first}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=self.tune_dir,
                                      verbose=0, stop=stopper(key), callbacks=[callback(inbox)],
                                      failure_config=tune.FailureConfig(max_failures=s.max_failures)))
        outcome: dict[str, Any] = {}
        thread = threading.Thread(target=_fit, args=(tuner, outcome), name="agora-ray-tune", daemon=True)
        thread.start()
        try:
            while pending and (thread.is_alive() or not inbox.empty()):
                try:
                    message = inbox.get(timeout=1.0)
                except Empty:
                    continue
                trial = pending.pop(message["trial"], None)
                if trial is not None:  # None: a second word on a trial already recorded
                    self.finish(trial, message, done)
            thread.join()
        except BaseException:
            _STOPS[key].set()  # stop the experiment's trials before handing the error on
            thread.join(timeout=300)
            raise
        finally:
            _STOPS.pop(key, None)
            inbox.shutdown(force=True)
        if "error" in outcome:
            raise outcome["error"]
        for trial in pending.values():  # Tune ended without a word on them
            done(trial, "the trial ended without a result (see Ray's logs)")

    def job(self, trial: Trial) -> dict[str, Any]:
        """What a trial's process needs: the trial (its paths absolute), where its run dir goes, the
        driver's working dir and settings, and D's additions when the run dir is uploaded."""
        run_dir = trial.run_dir.resolve()
        cfg = trial.cfg.model_copy(update={"output": trial.cfg.output.model_copy(update={"dir": str(run_dir)})})
        extra = cfg.trial.extra_rows if cfg.trial is not None else None
        return {"trial": Trial(trial.name, trial.theta, cfg, run_dir), "cwd": os.getcwd(),
                "env": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ},
                "upload": f"{self.upload}/trials/{trial.name}" if self.upload else None,
                "extra_rows": Path(extra).read_text(encoding="utf-8") if self.upload and extra else None}

    def finish(self, trial: Trial, message: dict, done: Callable[[Trial, str | None], None]) -> None:
        """Gather a finished trial's run dir (when uploaded) and record it."""
        failure = message.get("failure") or None
        if message.get("uploaded"):
            gather(message["uploaded"], message["worker_dir"], trial.run_dir.resolve())
        if failure is None and not (trial.run_dir / "metrics.json").is_file():
            failure = (f"no metrics.json in {trial.run_dir} on this machine (the fit ran on {message.get('node')}): with "
                       "several machines, set search.ray.storage_path to a path every node sees or a cloud URI")
        trial.seconds = message.get("seconds")
        done(trial, failure)


# ---------------------------------------------------------------------- in the trial's process

def fit_trial(config: dict, jobs: dict[str, dict], extend: Extend | None = None, threads: int = 1) -> None:
    """One trial: the fit of ``jobs[config["trial"]]``, then a report to Tune (``failure``: why it
    failed or ""; ``seconds``; ``uploaded``: where its run dir went, or "")."""
    from ray import tune

    start = time.perf_counter()
    job = jobs[config["trial"]]
    os.environ.update(job["env"])
    os.environ["OMP_NUM_THREADS"] = str(threads)  # and the fit's own processes (DDP)
    if os.path.isdir(job["cwd"]):  # relative paths of the recipe mean what they mean on the driver
        os.chdir(job["cwd"])
    import torch

    torch.set_num_threads(threads)
    trial: Trial = job["trial"]
    local = trial.run_dir
    if job["upload"]:  # run in a temporary dir of this node, then copy it to the storage
        local = Path(tempfile.mkdtemp(prefix="agora-trial-")) / trial.name
        update: dict[str, Any] = {"output": trial.cfg.output.model_copy(update={"dir": str(local)})}
        if job["extra_rows"] is not None:
            extra = local.parent / "added.jsonl"
            extra.write_text(job["extra_rows"], encoding="utf-8")
            update["trial"] = trial.cfg.trial.model_copy(update={"extra_rows": str(extra)})
        trial = Trial(trial.name, trial.theta, trial.cfg.model_copy(update=update), local)
    failure = ""
    try:
        LocalRunner(extend=extend).run_one(trial)
    except Exception as err:  # the fit's own failure: recorded, not retried
        failure = fit_failure(err, job["trial"].run_dir, log_dir=local)
    uploaded = ""
    if job["upload"]:
        uploaded = upload(local, job["upload"])
        shutil.rmtree(local.parent, ignore_errors=True)
    tune.report({"failure": failure, "seconds": round(time.perf_counter() - start, 3), "uploaded": uploaded,
                 "worker_dir": str(local), "node": socket.gethostname()})


# ---------------------------------------------------------------------- storage

def _absolute(storage: str) -> str:
    return storage.rstrip("/") if "://" in storage else str(Path(storage).expanduser().resolve())


def upload(local: Path, dest: str) -> str:
    """Copy the run dir ``local`` to ``dest`` (a path or a URI), replacing what was there."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(dest)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return dest


def gather(source: str, worker_dir: str, run_dir: Path) -> None:
    """Copy an uploaded run dir into ``run_dir``; the paths in its ``metrics.json`` then name ``run_dir``."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(source)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    pafs.copy_files(path, str(run_dir), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        write_json(metrics, _moved(json.loads(metrics.read_text(encoding="utf-8")), worker_dir, str(run_dir)))


def _moved(value, old: str, new: str):
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + "/") else value
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    return value


# ---------------------------------------------------------------------- Tune's side

def _fit(tuner, outcome: dict) -> None:
    try:
        outcome["grid"] = tuner.fit()
    except BaseException as err:  # handed to the driver's thread
        outcome["error"] = err


def _dirname(trial) -> str:
    return f"{trial.config['trial']}-{trial.trial_id}"


def _http(url: str) -> str:
    return url if "://" in url else f"http://{url}"


def _tune_classes(tune):
    """The Tune callback that tells the driver about finished trials, and the stopper the driver sets
    when it stops (both defined here: Ray is imported only once a search asks for it)."""

    class Inbox(tune.Callback):
        def __init__(self, queue):
            self.queue = queue

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            word = {k: result.get(k) for k in ("failure", "seconds", "uploaded", "worker_dir", "node")}
            if result.get("seconds") is None:
                word["failure"] = "the trial stopped before its fit finished"
            self.queue.put({"trial": trial.config["trial"], **word})

        def on_trial_error(self, iteration, trials, trial, **info):
            text = str(trial.get_error() or "").strip().splitlines()
            why = (text[-1] if text else "see Ray's logs").split(" Some common causes")[0][:300]
            self.queue.put({"trial": trial.config["trial"], "seconds": None, "failure":
                            f"its worker was lost {trial.run_metadata.num_failures} time(s), retries spent: {why}"})

    class Stop(tune.Stopper):
        def __init__(self, key: str):
            self.key = key

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            # looked up where Tune runs, not pickled with the class
            from agora.search.ray_runner import _STOPS

            flag = _STOPS.get(self.key)
            return flag is not None and flag.is_set()

    return Inbox, Stop
