"""Golden runs: the real CLI on tiny assets, compared with values recorded before a refactoring.

Two runs: one fit with Agora on (EDA variants of E_gen's mistakes, teacher labels, distillation,
reweighting) and a 2-round search over 4 θs with Agora on. What is compared: the logged training
loss of every epoch, every E_sel and dev score, the generated-row counts, the search's pruning
and D's growth, and the final metrics. fp32, one thread: the numbers are the same on every run of
the same code on the same kind of machine.

On real RTE rows with the RoBERTa tokenizer (``agora_fit``, ``search``: they need
``AGORA_DATA_DIR``), and on the tiny task files of ``tests/fixtures/tiny`` with the tiny tokenizer,
which run on every machine: ``tiny_agora_fit`` here, on single sentences in SST-2's layout, and
``tiny_search``, the search test_search_e2e.py runs anyway (RTE's layout), compared there.

Recorded in ``tests/golden/*.json``; to record them again after an intended change of behaviour:
``AGORA_UPDATE_GOLDEN=1 pytest tests/test_golden.py tests/test_search_e2e.py`` (and say why in the
commit).
"""

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli, save_tiny_teacher, tiny_recipe

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("AGORA_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


def _recipe(tiny_bort, tiny_teacher, data_dir, out, **sections):
    return tiny_recipe(
        tiny_bort, data_dir, out,
        data={"max_train_samples": 96, "max_eval_samples": 48, "max_predict_samples": 16},
        agora={"enabled": True, "expand_every_n_epochs": 1, "expand_from": "mistakes", "variants_per_source": 3,
               "generator": "eda", "alpha": 0.5, "temperature": 2.0, "gamma": 1.0, "rho": 0.3},
        teacher={"path": str(tiny_teacher), "cache_dir": str(out.parent / "teacher-cache")},
        **sections,
    )


def _fit_summary(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    agora = metrics["agora"]
    return {
        "epochs": [{k: v for k, v in e.items() if k == "train_loss" or k.startswith("val/") or k == "step"}
                   for e in metrics["epochs"]],
        "final": metrics["final"],
        "main_score": metrics["main_score"],
        "agora": [{k: e.get(k) for k in ("epoch", "mistakes", "e_gen_rows", "sources", "variants", "kept",
                                         "generated_total", "rows_trained")} for e in agora["epochs"]],
        "generated": agora["generated"],
        "teacher_forward_calls": agora["teacher_forward_calls"],
    }


def _search_summary(run: Path) -> dict:
    state = json.loads((run / "search" / "state.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    rounds = []
    for rnd in state["rounds"]:
        rounds.append({
            "thetas": rnd["thetas"], "best": rnd["best"], "best_score": rnd["best_score"],
            "decision": rnd["decision"], "removed": rnd["removed"], "d_rows_after": rnd["d_rows_after"],
            "added": {k: (rnd.get("added") or {}).get(k) for k in ("sources", "variants", "kept")},
            "fits": {tid: {k: fit[k] for k in ("seed", "score", "dev_score", "mistakes", "epochs")}
                     for tid, fit in rnd["fits"].items()},
        })
    fit_losses = {}
    for trial in sorted((run / "trials").glob("*/metrics.json")):
        fit_losses[trial.parent.name] = [e["train_loss"] for e in json.loads(trial.read_text())["epochs"]]
    return {"rounds": rounds, "best": state["best"]["trial"], "stopped": state["stopped"],
            "d_rows": state["d_rows"], "teacher_calls": state["teacher_forward_calls"], "fits": state["fits"],
            "train_losses": fit_losses, "main_score": metrics["main_score"], "final": metrics["final"]}


def _compare(actual, expected, where="") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            _compare(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual} != {expected}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-5, abs=1e-6), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _check(name: str, summary: dict) -> None:
    path = GOLDEN / f"{name}.json"
    summary = json.loads(json.dumps(summary))  # JSON types, as recorded
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path} is missing: record it with AGORA_UPDATE_GOLDEN=1")
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        return
    _compare(summary, json.loads(path.read_text()), name)


def test_golden_agora_fit(tmp_path, data_dir, tiny_bort, tiny_teacher):
    run = tmp_path / "run"
    recipe = _recipe(tiny_bort, tiny_teacher, data_dir, run, trainer={"max_epochs": 3, "num_sanity_val_steps": 0})
    run_cli(recipe, tmp_path, "fit", data_dir)
    summary = _fit_summary(run)
    assert summary["generated"] > 0 and len(summary["epochs"]) == 3  # the run did expand
    _check("agora_fit", summary)


def test_golden_search(tmp_path, data_dir, tiny_bort, tiny_teacher):
    run = tmp_path / "run"
    recipe = _recipe(tiny_bort, tiny_teacher, data_dir, run, trainer={"max_epochs": 2, "num_sanity_val_steps": 0},
                     search={"space": {"optim.lr": [3e-3, 1e-4], "seed": [0, 1]}, "max_rounds": 2, "max_replays": 0,
                             "min_prune_fraction": 0.25})
    run_cli(recipe, tmp_path, "search", data_dir)
    summary = _search_summary(run)
    assert len(summary["rounds"]) == 2 and summary["d_rows"] > 0
    _check("search", summary)


@pytest.fixture(scope="module")
def sst2_teacher(tmp_path_factory, tiny_tokenizer_dir):
    """A tiny teacher with SST-2's label names and the tiny tokenizer."""
    return save_tiny_teacher(tmp_path_factory.mktemp("sst2_teacher"), tiny_tokenizer_dir, ("negative", "positive"))


def test_golden_tiny_agora_fit(tmp_path, tiny_data, local_bort, sst2_teacher):
    run = tmp_path / "run"
    recipe = _recipe(local_bort, sst2_teacher, tiny_data, run, task="sst2",
                     trainer={"max_epochs": 3, "num_sanity_val_steps": 0})
    run_cli(recipe, tmp_path, "fit", tiny_data)
    summary = _fit_summary(run)
    assert summary["generated"] > 0 and len(summary["epochs"]) == 3  # the run did expand
    _check("tiny_agora_fit", summary)

