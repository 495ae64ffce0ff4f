"""The plumbing of benches/agora_vs_plain.py on a task card of one's own (``--card``), with tiny models:
slices and per-seed draws, every arm, pool-kd's budget matched to agora-nearest's, agora-best's and the
variants' settings (nested keys), the contrasts, the report, and reuse of finished fits on a rerun."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    sys.path.insert(0, str(ROOT / "benches"))
    spec = importlib.util.spec_from_file_location("agora_vs_plain", ROOT / "benches" / "agora_vs_plain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _card(tmp_path: Path, data_dir: Path) -> Path:
    """A user's own task: 400 SST-2 sentences as a TSV in a data dir of its own, and its card."""
    root = tmp_path / "mydata" / "reviews"
    root.mkdir(parents=True)
    with open(data_dir / "glue/SST-2/train.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar=None))[1:401]
    (root / "train.tsv").write_text("text\tstars\n" + "".join(f"{s}\t{'good' if y == '1' else 'bad'}\n" for s, y in rows))
    (root / "dev.tsv").write_text((data_dir / "glue/SST-2/dev.tsv").read_text().replace("\t1\n", "\tgood\n")
                                  .replace("\t0\n", "\tbad\n").replace("sentence\tlabel", "text\tstars"))
    card = tmp_path / "reviews.yaml"
    card.write_text("name: reviews\nbenchmark: mine\nformat: classification\nlabels: [bad, good]\n"
                    "metrics: [accuracy]\nmain_metric: accuracy\neval_splits: [validation]\n"
                    "local:\n  dir: reviews\n  columns: {text_a: text, label: stars}\n"
                    "  splits: {train: train.tsv, validation: dev.tsv}\n")
    return card


def test_agora_vs_plain_plumbing_on_a_card(tiny_bort, data_dir, tmp_path, one_thread):
    bench = load_bench()
    out, work = tmp_path / "results", tmp_path / "work"
    card = _card(tmp_path, data_dir)
    argv = ["--card", str(card), "--rows", "60,20,40,120", "--seeds", "2", "--lrs", "1e-3,3e-3", "--lr-seeds", "1",
            "--epochs", "2",
            "--student", str(tiny_bort), "--student-layers", "1", "--teacher", str(tiny_bort), "--workers", "1",
            "--precision", "32-true", "--cpu", "--data-dir", str(tmp_path / "mydata"), "--out", str(out),
            "--work", str(work), "--agora", "variants_per_source=2", "--agora", "pool_rows=7",
            "--agora", "select.neighbours=4", "--arms", ",".join([*bench.ARMS, "plain+egen"]),
            "--variant", "dis=select.by=disagreement,select.random_fraction=0.5,select.rows=6",
            "--best", ("select.by=disagreement,select.candidates=neighbours,select.per_anchor=2,"
                       "select.near_duplicate=null,expand_at_start=true"),
            "--name", "mine"]
    threads = torch.get_num_threads()
    try:
        (res,) = bench.main(argv)
        fits = {(f.arm, f.lr, f.seed): f for f in res.fits}
        walls = {k: f.wall_s for k, f in fits.items()}
        # a fit stored before a setting existed (here: output.overwrite), before fits recorded their commit
        # and when dev was scored every epoch (data.eval_dev: every_epoch, its default)
        old = work / f"runs/reviews/plain/lr{res.chosen['plain']:g}-s1-L1/bench.json"
        stored = json.loads(old.read_text())
        del stored["recipe"]["output"]["overwrite"], stored["code"], stored["recipe"]["data"]["eval_dev"]
        old.write_text(json.dumps(stored))
        (again,) = bench.main(argv)  # a rerun reuses every finished fit and the teacher
    finally:
        torch.set_num_threads(threads)

    slices = work / "slices"
    teacher_rows = (slices / "reviews-teacher-d60-g20-s40-t120-rrest.tsv").read_text().splitlines()[1:]
    region = (slices / "reviews-region-d60-g20-s40-t120-rrest.tsv").read_text().splitlines()[1:]
    s0, s1 = ((slices / f"reviews-student-s{s}-d60-g20-s40-t120-rrest.tsv").read_text().splitlines()[1:] for s in (0, 1))
    assert len(teacher_rows) == 120 and len(region) == 280 and not set(teacher_rows) & set(region)
    assert len(s0) == len(s1) == 120 and set(s0) <= set(region) and set(s0) != set(s1)  # a draw per seed
    # D 60 rows, batch 8: every arm makes the same steps (an Agora epoch draws |D| rows); plain+egen trains on
    # D and E_gen's 20 rows, so its epochs are longer
    assert {f.steps for f in res.fits if f.arm != "plain+egen"} == {2 * 8}
    assert {f.steps for f in res.fits if f.arm == "plain+egen"} == {2 * 10}
    # seed 0 fits both lrs and chooses each arm's on its E_sel; seed 1 fits the chosen lr only
    arms = [*bench.ARMS, "plain+egen", "agora+dis"]
    assert len(res.fits) == 7 * 2 + 7 and res.lr_seeds == [0] and res.arms == arms
    for arm in arms:
        assert res.chosen[arm] == max((1e-3, 3e-3), key=lambda lr: (fits[(arm, lr, 0)].e_sel, -lr))
        assert [lr for (a, lr, seed) in fits if a == arm and seed == 1] == [res.chosen[arm]]
    # pool-kd, at every lr of every seed, labels as many pool rows as the agora-nearest fit it is compared with
    # (its seed, agora-nearest's chosen lr), counting agora-nearest's 7 random pool rows (--agora pool_rows=7)
    nearest = res.at("agora-nearest")
    for (arm, lr, seed), f in fits.items():
        if arm == "pool-kd":
            assert f.generated == nearest[seed].pool_labelled == 7 + nearest[seed].generated_labelled
    assert fits[("plain", 1e-3, 0)].teacher_rows == 0 and fits[("plain+egen", 1e-3, 0)].generated == 0
    # pool-all: the whole pool labelled, no expansion, the same steps; region 280 rows less the seed's 120
    assert {f.pool_labelled for f in res.fits if f.arm == "pool-all"} == {280 - 120}
    assert {f.selection["kept"] for f in res.fits if f.arm in ("pool-all", "pool-kd")} == {0}
    # agora-best: selection by disagreement among the neighbours of E_gen's mistakes, 2 rows per anchor at most
    for f in res.at("agora-best").values():
        sel = f.selection
        assert 0 < sel["kept"] <= sel["scored"] and 1 <= sel["anchors"] and sel["near_duplicate_rate"] == 0.0
        assert sel["kept"] <= 2 * sel["anchors"] * 2  # 2 per anchor in each expansion (at the start, after epoch 0)
        assert sel["agreement_kept"] is not None and sel["random"] == 0
    # the variant: --agora's select.neighbours=4 kept beside its own select.* keys; half its rows at random
    dis = json.loads((work / f"runs/reviews/agora+dis/lr{res.chosen['agora+dis']:g}-s1-L1/bench.json").read_text())
    chosen = dis["recipe"]["agora"]["select"]
    assert (chosen["by"], chosen["random_fraction"], chosen["rows"], chosen["neighbours"]) == ("disagreement", 0.5, 6, 4)
    assert res.at("agora+dis")[1].selection["random"] == 3  # 6 rows an expansion (after epoch 0), half at random
    best = json.loads((work / f"runs/reviews/agora-best/lr{res.chosen['agora-best']:g}-s1-L1/bench.json")
                      .read_text())["recipe"]["agora"]
    assert best["select"]["neighbours"] == 32 and best["variants_per_source"] == 4  # --agora does not reach it
    assert best["expand_at_start"] and best["select"]["per_anchor"] == 2
    recipe = json.loads((work / "runs/reviews/plain/lr0.001-s0-L1/bench.json").read_text())["recipe"]
    assert recipe["data"]["eval_dev"] == "at_end"  # dev scored once, on the best epoch
    egen = json.loads((work / "runs/reviews/plain+egen/lr0.001-s0-L1/bench.json").read_text())["recipe"]["trial"]
    assert len(Path(egen["extra_rows"]).read_text().splitlines()) == 20  # D + E_gen's 20 labelled rows
    assert {f.wall_s for f in again.fits} == set(walls.values())  # reused, not refitted
    codes = {(f.arm, f.seed): f.code for f in again.fits}
    assert codes.pop(("plain", 1)) == "unrecorded" and len(set(codes.values())) == 1
    assert all(f.reused for f in again.fits) and not any(f.reused for f in res.fits)
    assert set(codes.values()) != {"unrecorded"}
    assert set(res.chosen) == set(arms)
    md = (out / "mine.md").read_text()
    for _, _, name in bench.CONTRASTS:
        assert f"reviews: {name}" in md
    assert "Agora vs plain |" not in md  # protocol v2's contrasts are not in the family any more
    assert ("`agora-best` (--best; `--agora` does not reach it): `expand_at_start=true, select.by=disagreement, "
            "select.candidates=neighbours, select.near_duplicate=null, select.per_anchor=2`") in md
    assert "`agora+dis`: `pool_rows=7, select.by=disagreement, select.neighbours=4, select.random_fraction=0.5, " in md
    assert "| Holm-adjusted CI (level) |" in md and "(98.33%)" in md and "(97.50%)" in md and "(95.00%)" in md
    assert "| distinct anchors |" in md  # what the expansions did: pool-all scored no expansion, labelled 160 rows
    assert "| reviews | pool-all | 160 | 0 | 0 | 0 | - | - | 0 |" in md
    esel = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| reviews | ")
            and line.count("|") == 7}  # the E_sel per seed table: task, arm, lr, seed 0, seed 1, mean
    f0, f1 = res.at("agora-best")[0], res.at("agora-best")[1]
    assert esel["agora-best"].endswith(f"| {100 * f0.e_sel:.1f} | {100 * f1.e_sel:.1f} "
                                       f"| {100 * (f0.e_sel + f1.e_sel) / 2:.2f} |")
    assert "reviews: student 1 layer, D 60, E_gen 20" in md
    assert "Code of the fits: reviews: " in md and "unrecorded (1 fits)" in md
    assert "p (Holm)" in md and "pool: the student region, disjoint from the teacher's slice" in md
    assert (out / "mine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pool_kd_needs_a_budget():
    bench = load_bench()
    from evidence.arms import agora_section, pool_labelled, teacher_labelled_generated

    with pytest.raises(ValueError, match="budget"):
        agora_section("pool-kd", {}, {})
    assert agora_section("pool-kd", {}, {}, budget=37)["pool_rows"] == 37
    report = {"epochs": [{"scored": 12, "kept": 5}, {"scored": 9, "kept": 9}, {"epoch": 2}]}
    assert teacher_labelled_generated(report) == 21  # every variant the teacher labelled, kept or not
    # pool-kd's budget: the random pool rows at the start too (--agora pool_rows=7), not D's rows
    report["teacher"] = {"train_rows_scored": 60, "pool_rows_scored": 7}
    assert pool_labelled(report) == 28
    assert bench.ARMS


def test_tasks_take_their_own_number_of_seeds(tmp_path):
    bench = load_bench()
    args = bench.parse_args(["--tasks", "sst2,mrpc:3", "--data-dir", str(tmp_path), "--out", str(tmp_path)])
    plans = bench.plans(args)
    assert [(p.name, p.seeds or args.seeds) for p in plans] == [("sst2", 10), ("mrpc", 3)]
    assert plans[1].key() == bench.PLANS["mrpc"].key()  # the seeds do not change the slices' files
    assert [p.student_layers for p in plans] == [2, bench.PLANS["mrpc"].student_layers or 2]
    for bad in ("mrpc:1", "mrpc:x"):
        with pytest.raises(SystemExit, match="TASK:N"):
            bench.plans(bench.parse_args(["--tasks", bad, "--data-dir", str(tmp_path), "--out", str(tmp_path)]))


def test_a_task_plan_names_its_student_size(tmp_path):
    bench = load_bench()
    from evidence.fits import run_dir

    base = ["--data-dir", str(tmp_path), "--out", str(tmp_path)]
    mine = bench.TaskPlan("stsb", student_layers=4)
    bench.PLANS["mine"] = mine
    try:
        assert [p.student_layers for p in bench.plans(bench.parse_args(["--tasks", "sst2,mine", *base]))] == [2, 4]
        # --student-layers overrides every plan's
        assert {p.student_layers for p in bench.plans(bench.parse_args(["--tasks", "sst2,mine", "--student-layers",
                                                                         "6", *base]))} == {6}
    finally:
        del bench.PLANS["mine"]
    # a student of another size than the default's never shares a run dir with the default's
    assert run_dir(tmp_path, "stsb", "plain", 1e-4, 3).name == "lr0.0001-s3"
    assert run_dir(tmp_path, "stsb", "plain", 1e-4, 3, 4).name == "lr0.0001-s3-L4"


def test_the_ceiling_trains_to_enough_steps():
    bench = load_bench()
    assert bench.ceiling_epochs(67349) == 2  # SST-2: 2 epochs are 2,074 steps of batch 32
    assert bench.ceiling_epochs(5749) == 11  # STS-B: 149 steps an epoch, 11 epochs for 1,500 steps
    assert bench.ceiling_epochs(1200) == 215  # 200 rows left: 7 steps an epoch, 215 epochs


class _Pool:
    """Fits without training: agora-nearest's pool labels and every arm's E_sel depend on the lr, so pool-kd's
    lr (3e-4) differs from agora-nearest's (1e-4), as on STS-B; records the jobs in order."""

    workers = 2

    def __init__(self):
        self.jobs = []

    def submit(self, job):
        from concurrent.futures import Future

        self.jobs.append(job)
        arm, lr, seed = job["arm"], job["lr"], job["seed"]
        e_sel = 0.6 + (0.1 if (arm == "pool-kd") == (lr == 3e-4) else 0.0)
        future = Future()
        future.set_result({"task": "t", "arm": arm, "lr": lr, "seed": seed, "dev": 0.5, "dev_all": {}, "e_sel": e_sel,
                           "steps": 10, "teacher_rows": 0, "generated_labelled": 0, "wall_s": 1.0,
                           "generated": job["budget"] or 0,
                           "pool_labelled": 100 * seed + (7 if lr == 1e-4 else 50) if arm == "agora-nearest" else 0})
        return future


def test_pool_kd_takes_the_budget_of_the_fit_it_is_compared_with():
    bench = load_bench()
    res = bench.report.TaskResult("t", "accuracy", "validation", ["plain", "pool-kd", "agora-nearest"], [1e-4, 3e-4],
                                  [], {}, None, "")
    pool = _Pool()
    bench.fit_arms(res, [0, 1, 2, 3, 4], 3, pool, lambda arm, lr, seed, budget=None: {
        "arm": arm, "lr": lr, "seed": seed, "budget": budget})
    assert res.lr_seeds == [0, 1, 2]
    assert res.chosen == {"plain": 1e-4, "agora-nearest": 1e-4, "pool-kd": 3e-4}
    kd = [(j["seed"], j["lr"], j["budget"]) for j in pool.jobs if j["arm"] == "pool-kd"]
    # every pool-kd fit, at either lr, labels as many pool rows as agora-nearest at ITS chosen lr (1e-4), same seed
    assert sorted(kd) == [(s, lr, 100 * s + 7) for s in (0, 1, 2) for lr in (1e-4, 3e-4)] + \
        [(s, 3e-4, 100 * s + 7) for s in (3, 4)]
    order = [(j["arm"], j["seed"]) for j in pool.jobs]
    for seed in (3, 4):  # after the lr seeds, a pool-kd fit comes right after its agora-nearest fit
        assert order.index(("pool-kd", seed)) > order.index(("agora-nearest", seed))
    assert len(pool.jobs) == 3 * 2 * 3 + 2 * 3
    # fresh seeds (--first-seed 100): the first three of them choose the lrs
    res.fits, res.chosen, pool.jobs = [], {}, []
    bench.fit_arms(res, [100, 101, 102, 103], 3, pool, lambda arm, lr, seed, budget=None: {
        "arm": arm, "lr": lr, "seed": seed, "budget": budget})
    assert res.lr_seeds == [100, 101, 102] and res.chosen["pool-kd"] == 3e-4
    assert sorted((j["arm"], j["lr"]) for j in pool.jobs if j["seed"] == 103) == [
        ("agora-nearest", 1e-4), ("plain", 1e-4), ("pool-kd", 3e-4)]


def test_arms_are_checked_and_agora_best_needs_its_settings(tmp_path):
    bench = load_bench()
    from evidence import settings
    from evidence.arms import agora_section, check_arms

    with pytest.raises(SystemExit, match="add agora-nearest to --arms"):
        check_arms(["plain", "pool-kd"], {})
    with pytest.raises(SystemExit, match="unknown arm 'agora-bset'"):
        check_arms(["plain", "agora-bset"], {})
    with pytest.raises(SystemExit, match="benches/results/agora-best.yaml"):
        check_arms(["plain", "agora-best"], {}, None)
    check_arms(["plain", "agora-best"], {}, {"gamma": 1.0})
    assert agora_section("pool-all", {"gamma": 1}, {}) == {"enabled": True, "expand_every_n_epochs": 0,
                                                           "pool_rows": "all", "alpha": 0.5, "temperature": 2.0}
    assert agora_section("agora-eda", {"select": {"rows": 3}}, {})["generator"] == "eda"
    assert agora_section("tinybert", {}, {})["expand_from"] == "train"
    # the file: nested or dotted keys; absent: no settings (and why); not a mapping or a bad key: named
    path = tmp_path / "agora-best.yaml"
    assert settings.best(None, path) == (None, f"no --best and no {path}")
    path.write_text("select:\n  by: disagreement\nselect.random_fraction: 0.25\nexpand_at_start: true\n")
    assert settings.best(None, path) == ({"select": {"by": "disagreement", "random_fraction": 0.25},
                                          "expand_at_start": True}, str(path))
    path.write_text("- select.by\n")
    with pytest.raises(SystemExit, match="agora-best.yaml: expected a mapping of agora: settings"):
        settings.best(None, path)
    path.write_text("select: {by: disagrement}\n")
    with pytest.raises(SystemExit, match=r"(?s)agora.select.by.*disagrement.*fix it in .*agora-best.yaml"):
        settings.best(None, path)
    with pytest.raises(SystemExit, match="--variant x 'select.by': expected key=value"):
        settings.variants(["x=select.by"])
    args = bench.parse_args(["--data-dir", str(tmp_path), "--best", "select.by=disagreement,select.rows=50"])
    assert (args.best_settings, args.best_source) == ({"select": {"by": "disagreement", "rows": 50}}, "--best")


def test_an_exploration_report_shows_e_sel_per_seed_and_never_dev(tmp_path):
    bench = load_bench()
    from evidence.fits import Fit

    arms = ["plain", "agora+dis"]
    fits = [Fit("sst2", arm, 1e-4, seed, dev=0.777, dev_all={"validation/accuracy": 0.777},
                e_sel=0.70 + 0.01 * seed + (0.05 if arm != "plain" else 0), steps=10, teacher_rows=0,
                generated_labelled=0, generated=0, wall_s=1.0) for arm in arms for seed in range(3)]
    res = bench.report.TaskResult("sst2", "accuracy", "validation", arms, [1e-4], fits,
                                  {"rows": 10, "lr": 1e-4, "dev": 0.888, "e_sel": 0.8}, None, "pool", explore=True)
    bench.report.choose(res)
    args = bench.parse_args(["--tasks", "sst2:3", "--arms", "plain", "--variant", "dis=select.by=disagreement",
                             "--explore", "--first-seed", "0", "--data-dir", str(tmp_path), "--out", str(tmp_path), "--name", "x"])
    bench.report.write([res], bench.plans(args), args, tmp_path, 60.0, [])
    md = (tmp_path / "x.md").read_text()
    assert "| sst2 | agora+dis | 0.0001 | 75.0 | 76.0 | 77.0 | 76.00 |" in md
    assert "| sst2 | plain | 0.0001 | 70.0 | 71.0 | 72.0 | 71.00 |" in md
    assert "77.7" not in md and "88.8" not in md and "Contrasts" not in md  # no dev score anywhere
    assert "- `agora+dis`: `select.by=disagreement`" in md and not (tmp_path / "x.png").exists()


def test_the_workers_teachers_find_the_pools_outputs_from_the_parents_pass(local_bort, local_teacher, tiny_data,
                                                                            tmp_path):
    """embed_pool's pass (the teacher's own encoder) puts the teacher's outputs for the pool in the task's cache; a
    worker's teacher, in a cache of its own (evidence.fits.worker_cache), scores the pool with 0 forward calls,
    writes only its own cache, and a damaged part is still set aside and its rows scored again."""
    import copy
    import os

    import numpy as np
    from conftest import tiny_recipe

    from agora.config import validate_recipe
    from agora.data.cards import load_task
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import load_tokenizer
    from agora.method.teacher import Teacher, attach_teacher, build_teacher

    bench = load_bench()
    from evidence.fits import worker_cache

    shared = tmp_path / "teacher-cache"
    recipe = tiny_recipe(local_bort, tiny_data, tmp_path / "run", data={"unlabelled": "train", "max_train_samples": 32},
                         agora={"enabled": True, "generator": "nearest", "pool_rows": "all"},
                         teacher={"path": str(local_teacher), "cache_dir": str(shared)})
    forward = bench.embed_pool(copy.deepcopy(recipe))
    parts = sorted(shared.glob("*/part-*.arrow"))
    job = copy.deepcopy(recipe)
    worker_cache(recipe)
    assert recipe["teacher"]["cache_dir"] == f"{shared}-w{os.getpid()}"
    cfg = validate_recipe(recipe)
    card = load_task(cfg.task)
    pool = TaskDataModule(cfg, card, load_tokenizer(cfg.model)[0]).load(predict=False).pool
    assert forward == len(set(pool.read_inputs)) > len(pool) > 0  # one pass over the pool's file

    def worker_teacher() -> Teacher:
        return attach_teacher(build_teacher(cfg, card), cfg)

    teacher = worker_teacher()
    probs = teacher.score(pool.inputs)
    assert teacher.forward_calls == 0 and teacher.model is None
    np.testing.assert_allclose(probs, Teacher(str(local_teacher), card.labels).score(pool.inputs), atol=1e-5)
    teacher.score([("a premise no pool holds", "a hypothesis")])  # the worker writes its own cache only
    assert teacher.forward_calls == 1 and sorted(shared.glob("*/part-*.arrow")) == parts
    parts[0].write_bytes(parts[0].read_bytes()[:100])  # damaged (in place: the worker's link too)
    worker_cache(job)  # the next fit of this worker
    assert job["teacher"]["cache_dir"] == recipe["teacher"]["cache_dir"]
    with pytest.warns(UserWarning, match="damaged"):
        again = worker_teacher()
    np.testing.assert_allclose(again.score(pool.inputs), probs, atol=1e-5)
    assert again.forward_calls == len(set(pool.inputs))
