"""DDP: 2 CPU processes (gloo) give exactly the single-process scores and predictions."""

import json

import pytest

from conftest import run_cli, tiny_recipe


def _run(tmp_path, data_dir, tiny_bort, name, devices):
    run = tmp_path / name
    recipe = tiny_recipe(tiny_bort, data_dir, run, task="mrpc",
                         trainer={"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto",
                                  "limit_train_batches": 0, "max_epochs": 1},
                         data={"max_eval_samples": 101, "max_predict_samples": 37, "eval_batch_size": 8})
    run_cli(recipe, tmp_path, name, data_dir, ddp=devices > 1)
    metrics = json.loads((run / "metrics.json").read_text())
    preds = {s: (run / "predictions" / f"{s}.jsonl").read_text().splitlines() for s in ("validation", "test")}
    return metrics, preds


def test_ddp_scores_equal_single_process(tmp_path, data_dir, tiny_bort, one_thread):
    single, single_preds = _run(tmp_path, data_dir, tiny_bort, "single", 1)
    ddp, ddp_preds = _run(tmp_path, data_dir, tiny_bort, "ddp", 2)
    # 101 dev rows in batches of 8 split over 2 ranks: every row scored once after the gather
    assert len(ddp_preds["validation"]) == 101 and len(ddp_preds["test"]) == 37
    assert [json.loads(r)["idx"] for r in ddp_preds["validation"]] == list(range(101))
    for key in ("validation/f1", "validation/accuracy"):
        assert ddp["final"][key] == pytest.approx(single["final"][key], abs=1e-12)
    labels = lambda rows: [json.loads(r)["label"] for r in rows]  # noqa: E731
    assert labels(ddp_preds["validation"]) == labels(single_preds["validation"])
    assert labels(ddp_preds["test"]) == labels(single_preds["test"])
