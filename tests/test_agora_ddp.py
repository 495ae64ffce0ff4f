"""Agora under DDP: 2 CPU processes (gloo) generate the same rows and weights as one process.

The student barely moves (lr 1e-9, no dropout), so both runs see the same mistakes and the same
per-example losses; what is tested is the gathering (E_gen predictions and per-example statistics
from both ranks, de-duplicated by idx), the broadcast from rank 0 and the writes by rank 0 only.
"""

import json

import pytest
import torch

from conftest import run_cli, tiny_recipe


def _run(tmp_path, data_dir, tiny_bort, tiny_teacher, name, devices):
    run = tmp_path / name
    recipe = tiny_recipe(
        tiny_bort, data_dir, run,
        model={"dropout": 0.0}, optim={"lr": 1e-9},
        data={"max_train_samples": 96, "batch_size": 16, "max_eval_samples": 32, "eval_batch_size": 4},
        agora={"enabled": True, "expand_from": "mistakes", "variants_per_source": 3, "gamma": 1.0, "rho": 0.4},
        teacher={"path": str(tiny_teacher), "cache_dir": str(tmp_path / f"cache-{name}")},
        trainer={"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto", "max_epochs": 2},
        output={"predict": False, "export": False},
    )
    run_cli(recipe, tmp_path, name, data_dir, ddp=devices > 1)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("AgoraCallback"))
    report = json.loads((run / "metrics.json").read_text())["agora"]
    return state, report, (run / "agora" / "generated.jsonl").read_text()


def test_ddp_expansion_and_weights_equal_single_process(tmp_path, data_dir, tiny_bort, tiny_teacher, one_thread):
    single, single_report, single_rows = _run(tmp_path, data_dir, tiny_bort, tiny_teacher, "single", 1)
    ddp, ddp_report, ddp_rows = _run(tmp_path, data_dir, tiny_bort, tiny_teacher, "ddp", 2)
    assert len(single["gen_inputs"]) > 0
    assert ddp["gen_inputs"] == single["gen_inputs"] and ddp["gen_labels"] == single["gen_labels"]
    assert ddp_rows == single_rows
    assert torch.allclose(ddp["weights"], single["weights"], atol=1e-5)
    e0, d0 = single_report["epochs"][0], ddp_report["epochs"][0]
    # every E_gen row and every training row counted once after the gather, as in one process
    assert (d0["mistakes"], d0["e_gen_rows"], d0["rows_trained"]) == (e0["mistakes"], e0["e_gen_rows"], e0["rows_trained"])
    assert ddp_report["teacher_forward_calls"] == single_report["teacher_forward_calls"]  # rank 0 alone ran the teacher
    assert ddp_report["weights"]["generated_share"] == pytest.approx(single_report["weights"]["generated_share"], abs=1e-6)
