"""End to end: the real CLI on real GLUE slices with a tiny BORT-shaped model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import HANG_GUARD_S, tiny_recipe

FIXTURES = Path(__file__).parent / "fixtures"


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_cli_rte_end_to_end_and_export_reproduces_dev_score(tmp_path, data_dir, tiny_bort, one_thread):
    run = tmp_path / "run"
    recipe = _write(tmp_path / "rte.yaml", tiny_recipe(tiny_bort, data_dir, run))
    env = {**os.environ, "AGORA_DATA_DIR": str(data_dir)}
    proc = subprocess.run([sys.executable, "-m", "agora.cli", str(recipe), "--trainer.max_epochs", "2"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final scores on the best checkpoint" in proc.stdout and "validation/accuracy" in proc.stdout

    # the run dir
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == "rte" and cfg["trainer"]["max_epochs"] == 2  # the override is resolved in
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert all("val/validation/accuracy" in e and e["train_loss"] > 0 for e in metrics["epochs"])
    best_epoch_score = max(e["val_score"] for e in metrics["epochs"])
    assert metrics["main_score"] == pytest.approx(best_epoch_score)
    ckpt = Path(metrics["best_checkpoint"])
    import torch

    assert torch.load(ckpt, map_location="cpu", weights_only=True)["agora_recipe"]["task"] == "rte"

    # predictions: dev with gold, test ordered by idx, label names
    dev = [json.loads(line) for line in (run / "predictions" / "validation.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert [r["idx"] for r in dev] == list(range(96)) and [r["idx"] for r in test] == list(range(64))
    assert {r["label"] for r in test} <= {"entailment", "not_entailment"}
    dev_acc = np.mean([r["label"] == r["gold"] for r in dev])
    assert dev_acc == pytest.approx(metrics["final"]["validation/accuracy"])
    mistakes = json.loads((run / "mistakes.json").read_text())["validation"]
    assert mistakes == {"rows": 96, "mistakes": [r["idx"] for r in dev if r["label"] != r["gold"]]}

    # the export: plain transformers reproduces the dev score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from agora.data.splits import load_split
    from agora.data.cards import load_task

    model = AutoModelForSequenceClassification.from_pretrained(run / "best").eval()
    tok = AutoTokenizer.from_pretrained(run / "best")
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    rows = load_split(load_task("rte"), "validation", data_dir, "local").select(range(96))
    correct = 0
    with torch.inference_mode():
        for i in range(0, 96, 32):
            chunk = rows[i : i + 32]
            enc = tok(chunk["text_a"], chunk["text_b"], truncation=True, max_length=64, padding=True, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1)
            correct += int((pred == torch.tensor(chunk["label"])).sum())
    assert correct / 96 == pytest.approx(metrics["final"]["validation/accuracy"])


def test_api_regression_stsb(tmp_path, data_dir, tiny_bort):
    from agora import AgoraTrainer

    result = AgoraTrainer.from_dict(tiny_recipe(tiny_bort, data_dir, tmp_path / "run", task="stsb",
                                                trainer={"max_epochs": 1})).fit()
    assert set(result.scores) == {"validation/pearson", "validation/spearman"}
    assert -1 <= result.main_score <= 1
    dev = [json.loads(line) for line in result.predictions["validation"].read_text().splitlines()]
    from scipy.stats import pearsonr

    r = pearsonr([d["label"] for d in dev], [d["gold"] for d in dev]).statistic
    assert r == pytest.approx(result.scores["validation/pearson"], abs=1e-4)
    assert isinstance(json.loads(result.predictions["test"].read_text().splitlines()[0])["label"], float)


def test_mnli_reports_both_dev_sets_and_predicts_ax(tmp_path, data_dir, tiny_bort):
    from agora import AgoraTrainer

    root = tmp_path / "data" / "glue"
    root.mkdir(parents=True)
    (root / "MNLI").symlink_to(FIXTURES / "glue" / "MNLI")
    (root / "diagnostic").symlink_to(data_dir / "glue" / "diagnostic")
    recipe = tiny_recipe(tiny_bort, tmp_path / "data", tmp_path / "run", task="mnli", trainer={"max_epochs": 1},
                         data={"max_predict_samples": None})
    result = AgoraTrainer.from_dict(recipe).fit()
    assert set(result.scores) == {"validation_matched/accuracy", "validation_mismatched/accuracy"}
    assert set(result.predictions) == {"validation_matched", "validation_mismatched", "test_matched",
                                       "test_mismatched", "ax/test"}
    ax = result.predictions["ax/test"].read_text().splitlines()
    assert len(ax) == 1104 and json.loads(ax[0])["label"] in {"entailment", "neutral", "contradiction"}


def test_bad_input_fails_before_training(tmp_path, data_dir, capsys):
    from agora.cli import main

    run = tmp_path / "run"
    recipe = _write(tmp_path / "r.yaml", tiny_recipe(tmp_path / "no-model", data_dir, run))
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "no-model" in err and "does not exist" in err
    assert not run.exists(), "nothing was started"

    assert main([str(recipe), "--optim.lr", "-1"]) == 2
    assert "optim.lr" in capsys.readouterr().err

    assert main([str(recipe), "task=nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_test_only_task_is_explained(tmp_path, data_dir, tiny_bort):
    from agora import AgoraTrainer, TaskError

    with pytest.raises(TaskError, match=r"test-only.*mnli"):
        AgoraTrainer.from_dict(tiny_recipe(tiny_bort, data_dir, tmp_path / "run", task="ax")).fit()
