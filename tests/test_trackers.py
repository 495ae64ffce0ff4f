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
    _fit(_recipe(tiny_bort, tiny_teacher, data_dir, run, ["tensorboard", "mlflow"], trainer={"log_every_n_steps": 2}))
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


VOLATILE = ("seconds", "teacher_calls", "cache_hits")
"""Wall times and the teacher cache's counts: a resumed fit finds warm what the interrupted one scored."""


def test_resumed_fit_continues_the_same_tracker_runs_without_repeating_a_step(tmp_path, tiny_bort, tiny_teacher,
                                                                             data_dir, monkeypatch):
    from test_resume import Interrupt, _Stop

    run = tmp_path / "run"
    recipe = _recipe(tiny_bort, tiny_teacher, data_dir, run, ["tensorboard", "mlflow"],
                     trainer={"max_epochs": 2, "log_every_n_steps": 1})
    original = agora.fit.run._trainer_kwargs

    def interrupted(*args):  # epoch 1 stops before its 4th batch: last.ckpt is the end of epoch 0 (step 4)
        kwargs = original(*args)
        return {**kwargs, "callbacks": kwargs["callbacks"] + [Interrupt(1, 3)]}

    monkeypatch.setattr(agora.fit.run, "_trainer_kwargs", interrupted)
    with pytest.raises(_Stop):
        _fit(recipe)
    monkeypatch.setattr(agora.fit.run, "_trainer_kwargs", original)
    client, runs = _mlflow_runs(run / "mlruns")
    before = _mlflow(client, runs[0])
    assert max(s for s, _ in before["train/loss"]) == 6  # logged after the checkpoint: the resumed fit logs it again
    ledger = json.loads((run / "trackers" / "run.json").read_text())

    recipe["output"]["resume_from"] = "last"
    _fit(recipe)
    client, runs = _mlflow_runs(run / "mlruns")
    assert [r.info.run_id for r in runs] == [ledger["mlflow"]] and runs[0].info.status == "FINISHED"
    logged, ml, tb = _csv(run), _mlflow(client, runs[0]), _tensorboard(run / "tensorboard")
    for key, values in logged.items():
        if any(word in key for word in VOLATILE):
            values, ml[key], tb[key] = [s for s, _ in values], [s for s, _ in ml[key]], [s for s, _ in tb[key]]
            assert ml[key] == tb[key] == values, key
        else:
            assert _close(ml[key], values) and _close(tb[key], values), (key, ml[key], tb[key], values)
    assert [s for s, _ in ml["train/loss"]] == list(range(8))


def test_search_logs_each_fit_as_its_own_run_under_the_search(tmp_path, tiny_bort, tiny_teacher, data_dir):
    from agora.config.space import describe

    run = tmp_path / "search"
    recipe = _recipe(tiny_bort, tiny_teacher, data_dir, run, ["tensorboard", "mlflow"],
                     data={"max_train_samples": 64, "max_eval_samples": 32},
                     trainer={"max_epochs": 1, "num_sanity_val_steps": 0},
                     search={"space": {"optim.lr": [3e-3, 1e-4]}, "max_rounds": 1, "max_replays": 0})
    recipe["agora"] = {"enabled": False}
    _fit(recipe)
    metrics = json.loads((run / "metrics.json").read_text())
    state = json.loads((run / "search" / "state.json").read_text())
    fits = state["rounds"][0]["fits"]
    client, runs = _mlflow_runs(run / "mlruns")
    parent = [r for r in runs if r.data.tags.get("agora.search") == "true"]
    children = {r.data.tags.get("agora.fit"): r for r in runs if r not in parent}
    assert len(parent) == 1 and parent[0].info.run_name == "search" and parent[0].info.status == "FINISHED"
    assert sorted(children) == sorted(f["trial"] for f in fits.values()) and len(children) == 2
    assert parent[0].data.params["search.space.optim.lr"] == "[0.003, 0.0001]"
    assert parent[0].data.metrics["main_score"] == pytest.approx(metrics["main_score"], rel=1e-9)
    for fit in fits.values():
        child = children[fit["trial"]]
        assert child.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert child.data.tags["agora.round"] == "0" and child.data.tags["agora.replay"] == "0"
        theta = state["thetas"][fit["theta"]]
        assert child.data.tags["agora.theta"] == describe(state["names"], tuple(theta)) == f"lr={theta[0]}"
        assert child.data.params["optim.lr"] == str(theta[0])
        assert child.data.metrics["final/e_sel/accuracy"] == pytest.approx(fit["score"], rel=1e-9)
        tb = _tensorboard(run / "tensorboard" / fit["trial"])  # one folder per fit
        assert tb["final/e_sel/accuracy"][-1][1] == pytest.approx(fit["score"], rel=1e-6)
    assert sorted(p.name for p in (run / "tensorboard").iterdir()) == sorted(children)
    # the returned student's card is the search's: its dev score, tagged as a search
    from huggingface_hub import ModelCard

    card = ModelCard.load(run / "best" / "README.md")
    assert card.data.eval_results[0].metric_value == metrics["final"]["validation/accuracy"]
    assert "hyperparameter-search" in card.data.tags and "Picked by a search: 1 round(s), 2 fits" in card.text


def test_a_missing_tracker_package_fails_before_any_work_naming_the_extra(tmp_path, tiny_bort, data_dir, monkeypatch):
    import importlib.util

    import agora.config.tracking as tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    recipe = tiny_recipe(tiny_bort, data_dir, tmp_path / "run", output={"loggers": ["tensorboard", "mlflow"]})
    with pytest.raises(RecipeError) as err:
        validate_recipe(recipe)
    message = str(err.value)
    assert "output.loggers" in message and "mlflow needs the 'mlflow' package" in message
    assert "pip install 'agora-finetune[mlflow]'" in message and "agora-finetune[tracking]" in message
    assert not (tmp_path / "run").exists()
    recipe["output"]["loggers"] = ["tensorboard"]  # csv is always first, whether named or not
    assert validate_recipe(recipe).output.loggers == ["csv", "tensorboard"]


def test_wandb_runs_offline_in_the_run_dir_and_a_search_fit_joins_the_search_group(tmp_path, tiny_bort, tiny_teacher,
                                                                                  data_dir):
    pytest.importorskip("wandb")
    from agora.config.schema import TrackerLink
    from agora.fit import trackers

    run = tmp_path / "run"
    recipe = _recipe(tiny_bort, tiny_teacher, data_dir, run, ["wandb"], trainer={"max_epochs": 1})
    _fit(recipe)
    ledger = json.loads((run / "trackers" / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(run.glob(f"wandb/offline-run-*-{ledger['wandb']}/run-{ledger['wandb']}.wandb"))
    assert ledger["wandb_steps"]["final/validation/accuracy"] == metrics["epochs"][-1]["step"]
    # a fit of a search: the search's dir and group, offline unless the recipe says online; a fit started again
    # (or resumed) keeps its W&B id
    cfg = validate_recipe(recipe)
    link = TrackerLink(dir=str(tmp_path / "search"), group="search", tags={"agora.round": "1"})
    cfg = cfg.model_copy(update={"trial": {"e_seed": 0, "tracking": link}})
    cfg = validate_recipe(cfg.to_dict())
    (logger,) = trackers.build(cfg, tmp_path / "search" / "trials" / "r1.0-t3", "rte")
    init = logger._wandb_init
    assert (init["mode"], init["group"], init["dir"], init["name"], init["project"]) == (
        "offline", "search", str(tmp_path / "search"), "r1.0-t3", "agora-rte")
    assert "agora.round: 1" in init["tags"]
    logger.home.record(wandb=init["id"])
    (again,) = trackers.build(cfg, tmp_path / "search" / "trials" / "r1.0-t3", "rte")
    assert again._wandb_init["id"] == init["id"] and again._wandb_init["resume"] == "allow"


def test_a_resumed_wandb_run_gets_only_the_steps_it_lacks(tmp_path, tiny_bort, data_dir):
    """W&B's offline files cannot be read back: the steps sent are kept in the ledger, and a resumed fit (a new
    logger on the same run dir) sends only the steps after them."""
    pytest.importorskip("wandb")
    from agora.fit import trackers

    class FakeRun:
        def __init__(self):
            self.rows = []

        def log(self, row):
            self.rows.append(row)

    cfg = validate_recipe(tiny_recipe(tiny_bort, data_dir, tmp_path / "run", output={"loggers": ["wandb"]}))
    sent = []
    for steps in (range(0, 5), range(2, 7)):  # killed after step 4; resumed from a checkpoint at step 1
        (logger,) = trackers.build(cfg, tmp_path / "run", "rte")
        logger._experiment = FakeRun()
        logger.held = logger.read_held()
        for step in steps:
            logger.log_metrics({"train/loss": step / 10}, step)
        sent.append([(row["trainer/global_step"], row["train/loss"]) for row in logger._experiment.rows])
    assert sent == [[(s, s / 10) for s in range(5)], [(5, 0.5), (6, 0.6)]]
    assert json.loads((tmp_path / "run" / "trackers" / "run.json").read_text())["wandb_steps"] == {"train/loss": 6}
