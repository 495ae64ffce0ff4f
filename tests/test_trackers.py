"""Experiment trackers (``output.loggers``): the real TensorBoard and MLflow loggers (MLflow on a file store in
the run dir) hold what ``logs/metrics.csv`` and ``metrics.json`` hold, read back from the event files and the
store; a resumed fit continues the same tracker runs and writes no step twice; a search logs each fit as its
own run under the search; W&B runs offline; a missing package is an error naming the extra."""

import csv
import json
from pathlib import Path

import pytest
from conftest import tiny_recipe

import agora.fit.run
from agora.config import validate_recipe
from agora.errors import RecipeError
from agora.trainer import AgoraTrainer

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

AGORA = {"enabled": True, "expand_every_n_epochs": 1, "variants_per_mistake": 3, "alpha": 0.5, "gamma": 1.0, "rho": 0.3}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


def _recipe(tiny_bort, tiny_teacher, data_dir, out: Path, loggers, **sections) -> dict:
    teacher = {"path": str(tiny_teacher), "cache_dir": str(out.parent / f"{out.name}-cache")}
    return tiny_recipe(tiny_bort, data_dir, out, agora=AGORA, teacher=teacher,
                       output={"predict": False, "loggers": loggers}, **sections)


def _fit(recipe: dict):
    return AgoraTrainer(validate_recipe(recipe)).fit()


def _csv(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv as key -> [(step, value)] in the order written."""
    out: dict[str, list] = {}
    with open(run / "logs" / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "step" and value != "":
                    out.setdefault(key, []).append((int(row["step"]), float(value)))
    return out


def _tensorboard(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _mlflow_runs(store: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.as_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(experiments)


def _mlflow(client, run) -> dict[str, list[tuple[int, float]]]:
    return {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in run.data.metrics}


def _close(got: list, expected: list) -> bool:
    """Same steps, same values to float32's precision (TensorBoard keeps float32)."""
    return [s for s, _ in got] == [s for s, _ in expected] and all(
        abs(a - b) <= 1e-6 * max(1.0, abs(b)) for (_, a), (_, b) in zip(got, expected))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_bort, tiny_teacher, data_dir) -> Path:
    run = tmp_path_factory.mktemp("tracked") / "run"
    _fit(_recipe(tiny_bort, tiny_teacher, data_dir, run, ["tensorboard", "mlflow"], trainer={"max_epochs": 3}))
    return run


def test_trackers_hold_every_metric_of_metrics_csv_and_the_final_scores(tracked):
    run = tracked
    logged, metrics = _csv(run), json.loads((run / "metrics.json").read_text())
    tb = _tensorboard(run / "tensorboard")
    client, runs = _mlflow_runs(run / "mlruns")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    ml = _mlflow(client, runs[0])
    assert any(k.startswith("agora/") for k in logged) and "train/loss" in logged and "val/e_sel/accuracy" in logged
    for key, values in logged.items():
        assert _close(tb[key], values), (key, tb[key], values)
        assert _close(ml[key], values), (key, ml[key], values)
    # per epoch: the selection split's and dev's scores, and Agora's statistics, as metrics.json has them
    epochs = metrics["epochs"]
    for key in ("val/validation/accuracy", "val/e_sel/accuracy"):
        assert [v for _, v in ml[key]][: len(epochs)] == pytest.approx([e[key] for e in epochs], rel=1e-6)
    agora_epochs = [e for e in metrics["agora"]["epochs"] if "kept" in e]
    assert [v for _, v in tb["agora/kept"]] == [e["kept"] for e in agora_epochs] and agora_epochs
    # the end: metrics.json's final scores and main score
    for key, value in metrics["final"].items():
        assert ml[f"final/{key}"][-1][1] == pytest.approx(value, rel=1e-9)
        assert tb[f"final/{key}"][-1][1] == pytest.approx(value, rel=1e-6)
    assert ml["main_score"][-1][1] == pytest.approx(metrics["main_score"], rel=1e-9)


def test_mlflow_params_are_the_flattened_recipe_and_the_resolved_precision(tracked):
    import yaml

    _, runs = _mlflow_runs(tracked / "mlruns")
    params = runs[0].data.params
    recipe = yaml.safe_load((tracked / "config.yaml").read_text())
    assert params["optim.lr"] == str(recipe["optim"]["lr"]) and params["agora.gamma"] == "1.0"
    assert params["data.max_train_samples"] == "128" and params["model.name"] == recipe["model"]["name"]
    assert params["precision"] == params["trainer.precision"] == "32-true"
    assert params["output.loggers"] == '["csv", "tensorboard", "mlflow"]'
    assert runs[0].data.tags["agora.task"] == "rte" and runs[0].info.run_name == "run"
    assert (tracked / "tensorboard" / "hparams.yaml").is_file()
