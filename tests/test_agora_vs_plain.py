"""The plumbing of benches/agora_vs_plain.py (its --quick path) with tiny models on a real RTE slice:
teacher trained by the framework, student cut from a pre-trained encoder, four arms, table and plot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("agora_vs_plain", ROOT / "benches" / "agora_vs_plain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_agora_vs_plain_plumbing(tiny_bort, data_dir, tmp_path, capsys):
    bench = load_bench()
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["--quick", "--tasks", "rte", "--seeds", "1", "--lrs", "1e-3,3e-3", "--epochs", "2", "--teacher-epochs", "1", "--teacher-lrs", "5e-5,1e-4",
            "--student", str(tiny_bort), "--student-layers", "1", "--teacher", str(tiny_bort),
            "--student-rows", "64", "--e-rows", "32", "--teacher-rows", "96", "--tinybert-variants", "2",
            "--variant", "hard=generated_targets=hard", "--rounds", "2", "--precision", "32", "--threads", "1", "--cpu", "--data-dir", str(data_dir), "--out", str(out), "--work", str(work)]
    threads = torch.get_num_threads()  # a tiny model runs fastest on one thread; the bench sets it process-wide
    try:
        results = bench.main(argv)
        again = bench.main(argv)  # a rerun reuses every finished fit and the teacher
    finally:
        torch.set_num_threads(threads)

    (res,) = results
    (student,) = (work / "students").glob("*-L1")
    assert AutoConfig.from_pretrained(student).num_hidden_layers == 1
    student_rows = (work / "slices" / "rte-student-d64-e32-t96.tsv").read_text().splitlines()[1:]
    teacher_rows = (work / "slices" / "rte-teacher-d64-e32-t96.tsv").read_text().splitlines()[1:]
    assert len(student_rows) == 64 + 32 and len(teacher_rows) == 96 and not set(student_rows) & set(teacher_rows)
    teachers = {t.name: t for t in (work / "teachers").iterdir()}  # named by the plan and lr: never reused by another
    assert set(teachers) == {"rte-d64-e32-t96-ep1-lr5e-05", "rte-d64-e32-t96-ep1-lr0.0001"}
    e_sel = {float(name.rsplit("-lr", 1)[1]): json.loads((t / "metrics.json").read_text())["final"]["e_sel/accuracy"]
             for name, t in teachers.items()}
    best = max(e_sel.values())  # the teacher's lr is chosen on its own E_sel (ties: the first of the grid)
    assert res.teacher_lr == next(lr for lr in (5e-5, 1e-4) if e_sel[lr] == best)
    teacher = teachers[f"rte-d64-e32-t96-ep1-lr{res.teacher_lr:g}"]
    assert res.teacher_dev == json.loads((teacher / "metrics.json").read_text())["final"]["validation/accuracy"]
    arms = (*bench.ARMS, "agora+hard")
    assert len(res.fits) == 5 * 2 + 2 and set(res.chosen) == {*arms, *bench.ROUNDS_ARMS}
    by_arm = {arm: [f for f in res.fits if f.arm == arm] for arm in arms}
    assert {f.steps for arm in arms for f in by_arm[arm]} == {2 * 4}  # D = 64 rows, batch 16, 2 epochs: step-matched
    assert all(f.generated == 0 and f.teacher_rows == 0 for f in by_arm["plain"])
    assert all(f.generated == 0 and f.teacher_rows == 64 for f in by_arm["distill"])
    assert all(f.generated > 0 for f in by_arm["tinybert"])
    # the outer loop: a search over the lr grid of 2 rounds (2 fits, pruning to 1 fit); Agora's grows D
    searches = {arm: json.loads((work / "runs" / "rte" / arm / "r2-s0" / "bench.json").read_text())
                for arm in bench.ROUNDS_ARMS}
    assert all(s["search"]["rounds"] == 2 and s["search"]["fits"] == 3 for s in searches.values())
    assert searches["plain-rounds"]["steps"] == 3 * 8 < searches["agora-rounds"]["steps"]  # D grew
    assert searches["plain-rounds"]["search"]["d_added"] == 0 and searches["agora-rounds"]["search"]["d_added"] > 0
    assert searches["agora-rounds"]["teacher_rows"] > 0 == searches["plain-rounds"]["teacher_rows"]
    variant = yaml.safe_load((work / "runs" / "rte" / "agora+hard" / "lr0.001-s0" / "config.yaml").read_text())
    assert variant["agora"]["generated_targets"] == "hard" and variant["agora"]["enabled"]
    assert 0 <= res.majority <= 1 and all(0 <= f.dev <= 1 and 0 <= f.e_sel <= 1 for f in res.fits)

    md = (out / "quick.md").read_text()
    assert (out / "quick.png").stat().st_size > 0
    assert "| rte (accuracy) | agora-rounds | searched |" in md
    for arm in (*arms, "majority class", "teacher"):
        assert f"| {arm} |" in md
    assert "agora+hard: agora with generated_targets=hard" in md
    assert "| rte (accuracy) | plain |" in capsys.readouterr().out

    assert [(f.dev, f.wall_s) for f in again[0].fits] == [(f.dev, f.wall_s) for f in res.fits]
    assert json.loads((teacher / "bench.json").read_text())["wall_s"] > 0


def test_agora_arm_takes_setting_overrides():
    import argparse

    import pytest

    bench = load_bench()
    args = argparse.Namespace(agora=["balance_generated=true", "variants_per_mistake=8", "generator=mlm"])
    assert bench.arm_settings("agora", args) == {"enabled": True, "balance_generated": True,
                                                 "variants_per_mistake": 8, "generator": "mlm"}
    assert bench.arm_settings("agora", argparse.Namespace(agora=None)) == {"enabled": True}
    with pytest.raises(SystemExit, match="expected key=value"):
        bench.arm_settings("agora", argparse.Namespace(agora=["balance_generated"]))


def test_variants_are_extra_agora_arms():
    import argparse

    import pytest

    bench = load_bench()
    args = argparse.Namespace(agora=["alpha=0.7"], variant=["v8=variants_per_mistake=8,balance_generated=true", "hard=generated_targets=hard"])
    assert list(bench.agora_variants(args)) == ["agora+v8", "agora+hard"]
    assert bench.arm_settings("agora+v8", args) == {"enabled": True, "alpha": 0.7, "variants_per_mistake": 8,
                                                    "balance_generated": True}
    assert bench.arm_settings("agora", args) == {"enabled": True, "alpha": 0.7}  # the defaults stay the defaults
    with pytest.raises(SystemExit, match="unknown arm 'agora\\+v9'"):
        bench.arm_settings("agora+v9", args)
    for bad in ("v8", "=alpha=1", "v8=alpha"):
        with pytest.raises(SystemExit, match="expected"):
            bench.agora_variants(argparse.Namespace(variant=[bad]))


def test_a_finished_fit_is_reused_only_for_the_same_resolved_recipe(tmp_path, tiny_bort):
    from agora.config import validate_recipe
    from conftest import tiny_recipe

    bench = load_bench()
    wanted = validate_recipe(tiny_recipe(tiny_bort, tmp_path, tmp_path / "run")).to_dict()
    stored = json.loads(json.dumps(wanted))
    del stored["agora"]["require_agreement"]  # a fit that ran before the setting existed (its default is off)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    assert bench._same_recipe(tmp_path, wanted)
    stored["optim"]["lr"] = wanted["optim"]["lr"] * 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    assert not bench._same_recipe(tmp_path, wanted)
    stored["optim"]["lr"], stored["agora"]["renamed_setting"] = wanted["optim"]["lr"], 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    assert not bench._same_recipe(tmp_path, wanted)  # a setting since removed: not the same recipe
    assert not bench._same_recipe(tmp_path / "missing", wanted)
