"""A NaN or infinite training loss stops the fit (exit 2, naming the epoch, the step and the likeliest causes),
leaves the run dir resumable and exports nothing; non-finite labels, teacher outputs and weights are refused
where they enter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from agora.config import validate_recipe
from agora.errors import DataError
from agora.trainer import AgoraTrainer
from conftest import tiny_recipe


def _cli(recipe: dict, tmp_path, data_dir) -> subprocess.CompletedProcess:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**__import__("os").environ, "AGORA_DATA_DIR": str(data_dir)}
    env.pop("AGORA_RUN_DIR", None)
    return subprocess.run([sys.executable, "-m", "agora.cli", str(path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def stsb_with_label(data_dir, tmp_path, label: str, line: int = 5):
    """STS-B's first 200 training rows with the label of file line ``line`` replaced."""
    lines = (data_dir / "glue/STS-B/train.tsv").read_text(encoding="utf-8").splitlines()[:201]
    cells = lines[line - 1].split("\t")
    lines[line - 1] = "\t".join(cells[:-1] + [label])
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("label", ["inf", "-Infinity", "nan"])
def test_a_non_finite_regression_label_is_refused_naming_the_file_and_line(label, tmp_path, data_dir, tiny_bort,
                                                                          monkeypatch, capsys):
    """The CLI's ``main`` in this process (its exit code and stderr): the refusal comes before any fit, so a
    fresh interpreter would only add its imports (test_a_diverging_fit_* runs the CLI as a process)."""
    from agora.cli import main

    train = stsb_with_label(data_dir, tmp_path, label)
    recipe = tiny_recipe(tiny_bort, data_dir, tmp_path / "run", task="stsb", data={"files": {"train": str(train)}})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{train}, line 5: label '{label}' is not a finite number" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_diverging_fit_stops_with_exit_2_and_exports_nothing(tmp_path, data_dir, tiny_bort, one_thread):
    """optim.lr 1e30: the first step's update overflows the weights; the next loss is NaN."""
    run = tmp_path / "run"
    recipe = tiny_recipe(tiny_bort, data_dir, run, optim={"lr": 1e30, "warmup_ratio": 0.0},
                         output={"save_checkpoints": True})
    proc = _cli(recipe, tmp_path, data_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr
    assert "agora-finetune: error: the training loss is nan at epoch 0, step 1 (batch 1 of the epoch): the fit stops; " \
           "nothing is exported or reported as final" in err
    assert "the model's outputs are not finite: its weights diverged (optim.lr 1e+30 may be too high" in err
    assert "Traceback" not in err
    assert not (run / "metrics.json").exists() and not (run / "best").exists()
    assert "final scores" not in proc.stdout


def test_a_nan_in_a_later_epoch_leaves_the_last_checkpoint_to_resume_from(tmp_path, data_dir, tiny_bort, monkeypatch,
                                                                          one_thread):
    """The loss turns NaN at the second batch of epoch 1 (4 batches an epoch): the fit stops there,
    checkpoints/last.ckpt (epoch 0) stays and resuming from it finishes the run."""
    import agora.fit.module as module
    from agora.fit.finite import NonFiniteLoss

    run = tmp_path / "run"
    recipe = tiny_recipe(tiny_bort, data_dir, run, output={"save_checkpoints": True})
    real, calls = module.HardLabelLoss.__call__, []

    def nan_once(self, logits, batch):
        loss, losses = real(self, logits, batch)
        calls.append(1)
        return (loss * float("nan"), losses) if len(calls) == 6 else (loss, losses)

    monkeypatch.setattr(module.HardLabelLoss, "__call__", nan_once)
    with pytest.raises(NonFiniteLoss, match=r"the training loss is nan at epoch 1, step 5 \(batch 1 of the epoch\).*"
                                            rf"{run}/checkpoints/last.ckpt \(the last finished epoch\) stays: fix the "
                                            r"cause, then continue it with output.resume_from: last"):
        AgoraTrainer(validate_recipe(recipe)).fit()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "metrics.json").exists() and not (run / "best").exists()
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["state_dict"].values())

    monkeypatch.setattr(module.HardLabelLoss, "__call__", real)
    result = AgoraTrainer(validate_recipe({**recipe, "output": {**recipe["output"], "resume_from": "last"}})).fit()
    assert (run / "best").is_dir() and np.isfinite(result.main_score)
    assert [e["epoch"] for e in result.history] == [0, 1]


def test_the_likeliest_causes_name_what_is_not_finite():
    from agora.fit.finite import causes

    idx = torch.tensor([7, 8])
    finite = torch.zeros(2, 2)
    said = causes({"idx": idx, "labels": torch.tensor([1.0, float("inf")])}, finite, 1e-4, "32-true")
    assert said[0] == "the batch holds a non-finite label (idx 8: inf): fix the data, or the source that made it"
    said = causes({"idx": idx, "labels": torch.tensor([0, 1]), "weight": torch.tensor([float("nan"), 1.0])}, finite,
                  1e-4, "32-true")
    assert said[0].startswith("the batch holds a non-finite row weight (idx 7: nan)")
    probs = torch.tensor([[float("nan")] * 2, [0.5, float("inf")]])  # row 0: no teacher (NaN on purpose)
    said = causes({"idx": idx, "labels": torch.tensor([0, 1]), "teacher_probs": probs}, finite, 1e-4, "32-true")
    assert said[0].startswith("the batch holds a non-finite teacher output (row 0: [0.5, inf])")
    said = causes({"idx": idx, "labels": torch.tensor([0, 1])}, torch.tensor([[float("inf"), 0.0], [0.0, 0.0]]),
                  5e-3, "16-mixed")
    assert said[0].startswith("the model's outputs are not finite: its weights diverged (optim.lr 0.005 may be too high")
    assert "trainer.precision 16-mixed overflowed" in said[1]
    said = causes({"idx": idx, "labels": torch.tensor([0, 1])}, finite, 1e-4, "32-true")
    assert said == ["optim.lr 0.0001 too high (lower it), or trainer.precision 32-true overflowing (try 32-true), or a "
                    "non-finite label in the training data"]


def test_non_finite_reweighting_inputs_are_refused():
    from agora.method.reweight import example_weights

    with pytest.raises(ValueError, match="loss / error of row 1 is infinite"):
        example_weights(np.array([0.5, np.inf, np.nan]), np.array([False, False, True]), gamma=1.0, rho=0.3)


def test_convert_label_refuses_inf():
    from agora.data.cards import load_task
    from agora.data.readers.registry import convert_label

    with pytest.raises(DataError, match=r"train.tsv, line 9: label 'inf' is not a finite number"):
        convert_label("inf", load_task("stsb"), "train.tsv, line 9")
    assert convert_label("4.5", load_task("stsb"), "x") == 4.5


def test_a_search_records_a_diverging_fit_as_failed_and_goes_on(tmp_path, data_dir, tiny_bort, one_thread):
    """The local runner: the θ whose loss goes NaN is recorded as diverged and pruned; the other θ wins."""
    import json

    from agora.search import run_search

    run = tmp_path / "search"
    recipe = tiny_recipe(tiny_bort, data_dir, run, trainer={"max_epochs": 1}, optim={"lr": 1e-3, "warmup_ratio": 0.0},
                         search={"space": {"optim.lr": [1e30, 1e-3]}, "max_rounds": 1})
    lines = []
    result = run_search(validate_recipe(recipe), "search.yaml", progress=lines.append)
    fits = json.loads((run / "search" / "state.json").read_text())["rounds"][0]["fits"]
    assert fits["0"]["failed"].startswith("diverged: the training loss is nan at epoch 0, step 1")
    assert fits["1"]["failed"] is None and result.best_model_dir is not None
    assert any("FAILED (diverged: the training loss is nan" in line for line in lines)
