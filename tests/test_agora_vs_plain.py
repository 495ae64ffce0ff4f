"""The plumbing of benches/agora_vs_plain.py (its --quick path) with tiny models on a real RTE slice:
teacher trained by the framework, student cut from a pre-trained encoder, four arms, table and plot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
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
    argv = ["--quick", "--tasks", "rte", "--seeds", "1", "--lrs", "1e-3", "--epochs", "2", "--teacher-epochs", "1",
            "--student", str(tiny_bort), "--student-layers", "1", "--teacher", str(tiny_bort),
            "--student-rows", "64", "--e-rows", "32", "--teacher-rows", "96", "--tinybert-variants", "2",
            "--precision", "32", "--threads", "1", "--cpu", "--data-dir", str(data_dir), "--out", str(out), "--work", str(work)]
    threads = torch.get_num_threads()  # a tiny model runs fastest on one thread; the bench sets it process-wide
    try:
        results = bench.main(argv)
        again = bench.main(argv)  # a rerun reuses every finished fit and the teacher
    finally:
        torch.set_num_threads(threads)

    (res,) = results
    (student,) = (work / "students").glob("*-L1")
    assert AutoConfig.from_pretrained(student).num_hidden_layers == 1
    student_rows = (work / "slices" / "rte-student.tsv").read_text().splitlines()[1:]
    teacher_rows = (work / "slices" / "rte-teacher.tsv").read_text().splitlines()[1:]
    assert len(student_rows) == 64 + 32 and len(teacher_rows) == 96 and not set(student_rows) & set(teacher_rows)
    assert (work / "teachers" / "rte" / "best" / "config.json").exists()
    assert len(res.fits) == 4 and set(res.chosen) == set(bench.ARMS)
    by_arm = {arm: [f for f in res.fits if f.arm == arm] for arm in bench.ARMS}
    assert {f.steps for f in res.fits} == {2 * 4}  # D = 64 rows, batch 16, 2 epochs: step-matched
    assert all(f.generated == 0 and f.teacher_rows == 0 for f in by_arm["plain"])
    assert all(f.generated == 0 and f.teacher_rows == 64 for f in by_arm["distill"])
    assert all(f.generated > 0 for f in by_arm["tinybert"])
    assert 0 <= res.majority <= 1 and all(0 <= f.dev <= 1 and 0 <= f.e_sel <= 1 for f in res.fits)

    md = (out / "quick.md").read_text()
    assert (out / "quick.png").stat().st_size > 0
    for arm in (*bench.ARMS, "majority class", "teacher"):
        assert f"| {arm} |" in md
    assert "| rte (accuracy) | plain |" in capsys.readouterr().out

    assert [(f.dev, f.wall_s) for f in again[0].fits] == [(f.dev, f.wall_s) for f in res.fits]
    assert json.loads((work / "teachers" / "rte" / "bench.json").read_text())["wall_s"] > 0


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
