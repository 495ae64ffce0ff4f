"""Selection by disagreement (``agora.select``), ``agora.pool_rows: all`` and ``agora.expand_at_start``."""

import json

import numpy as np
import pytest

from agora.config import validate_recipe
from agora.method.select import Picker, class_quotas, divergence, random_share
from conftest import tiny_recipe


def test_divergence_is_kl_of_teacher_to_student_and_abs_for_regression():
    teacher = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    logits = np.array([[0.0, 0.0], [0.0, 0.0], [-1.0, 1.0]])
    student = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = (teacher * np.log(teacher / student)).sum(1)
    assert divergence(teacher, logits, False) == pytest.approx(expected)
    assert divergence(teacher, logits, False)[1] == pytest.approx(0.0, abs=1e-12)  # agreement: no divergence
    assert divergence(np.array([[3.0], [1.0]]), np.array([[1.5], [1.0]]), True).tolist() == [1.5, 0.0]


def test_random_share_is_constant_or_moves_linearly_over_the_epochs():
    assert random_share(0.5, None, 3, 0, 8) == 0.5
    assert [random_share(1.0, 0.0, e, -1, 3) for e in (-1, 0, 1, 3, 5)] == [1.0, 0.75, 0.5, 0.0, 0.0]


def test_class_quotas_follow_the_prior_and_sum_to_k():
    assert class_quotas(7, np.array([0.5, 0.5])) == {0: 4, 1: 3}
    assert class_quotas(10, np.array([0.25, 0.75])) == {0: 3, 1: 7}  # a tied remainder goes to the first class
    assert sum(class_quotas(9, np.array([0.2, 0.3, 0.5])).values()) == 9


def _unit(rows):
    v = np.asarray(rows, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_picker_skips_near_duplicates_caps_anchors_and_balances_classes():
    # rows 0 and 1 point the same way; row 4 is a near-duplicate of a row of D or E
    vectors = _unit([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    near_de = np.array([0.1, 0.1, 0.1, 0.1, 0.99])
    rejected = {r: 0 for r in ("per_anchor", "near_duplicate", "balance")}
    picker = Picker(vectors, near_de, threshold=0.95, per_anchor=None, quotas=None)
    chosen = picker.pick(np.array([4, 0, 1, 2, 3]), 3, np.full(5, -1), np.zeros(5, np.int64), rejected)
    assert chosen == [0, 2, 3] and rejected["near_duplicate"] == 2
    rejected = {r: 0 for r in rejected}
    capped = Picker(vectors, np.zeros(5), threshold=None, per_anchor=1, quotas={0: 1, 1: 5})
    chosen = capped.pick(np.arange(5), 5, np.array([7, 7, 8, 9, 9]), np.array([0, 1, 0, 1, 1]), rejected)
    assert chosen == [0, 3] and rejected["per_anchor"] == 2 and rejected["balance"] == 1


def test_the_schema_checks_the_selection_settings():
    base = {"task": "rte", "agora": {"enabled": True, "select": {"by": "disagreement"}}, "teacher": {"path": "t"}}
    with pytest.raises(ValueError, match="select.by: disagreement draws from unlabelled rows"):
        validate_recipe(base)
    with pytest.raises(ValueError, match="random_fraction"):
        validate_recipe({**base, "data": {"unlabelled": "train"},
                         "agora": {"enabled": True, "select": {"by": "disagreement", "random_fraction": 1.5}}})
    with pytest.raises(ValueError, match="'all'"):
        validate_recipe({**base, "data": {"unlabelled": "train"}, "agora": {"enabled": True, "pool_rows": -3}})
    cfg = validate_recipe({**base, "data": {"unlabelled": "train"}, "agora": {"enabled": True, "pool_rows": "all"}})
    assert cfg.agora.pool_rows == "all" and cfg.agora.needs_teacher()


# ------------------------------------------------------------------ in a fit

WORDS = ["warm", "dull", "bright", "slow", "clever", "flat", "tender", "noisy", "gentle", "bitter"]


def _pool_file(tmp_path, n=90):
    """``n`` unlabelled rows in SST-2's layout, none of them a row of the tiny task's D, E or dev."""
    rows = [f"pool phrase {i} : a {WORDS[i % 10]} and {WORDS[(i * 7 + 3) % 10]} {'story' if i % 3 else 'film'}"
            for i in range(n)]
    path = tmp_path / "pool.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{r}\t0\n" for r in rows), encoding="utf-8")
    return path


def _fit(tmp_path, tiny_data, local_bort, tiny_tokenizer_dir, name, **agora):
    from agora.trainer import AgoraTrainer
    from test_pool import _sst2_teacher

    teacher = tmp_path / "teacher"
    if not teacher.exists():
        _sst2_teacher(tmp_path, tiny_tokenizer_dir)
    run = tmp_path / name
    recipe = tiny_recipe(local_bort, tiny_data, run, task="sst2",
                         data={"max_train_samples": 64, "max_eval_samples": 24, "unlabelled": str(_pool_file(tmp_path))},
                         agora={"enabled": True, "variants_per_source": 2, **agora},
                         teacher={"path": str(teacher), "cache_dir": str(tmp_path / "cache")},
                         trainer={"max_epochs": 3}, output={"predict": False, "export": False})
    AgoraTrainer(validate_recipe(recipe)).fit()
    report = json.loads((run / "metrics.json").read_text())["agora"]
    rows = [json.loads(line) for line in (run / "agora" / "generated.jsonl").read_text().splitlines()]
    return report, rows


def test_a_fit_selects_pool_rows_by_disagreement_diverse_mixed_and_early(tmp_path, tiny_data, local_bort,
                                                                         tiny_tokenizer_dir):
    select = {"by": "disagreement", "candidates": "pool", "rows": 10, "random_fraction": 0.4,
              "near_duplicate": 0.999}
    report, rows = _fit(tmp_path, tiny_data, local_bort, tiny_tokenizer_dir, "select", select=select,
                        expand_at_start=True, balance_generated=False)
    epochs = report["epochs"]
    assert [e["epoch"] for e in epochs] == [-1, 0, 1, 2]  # one expansion before the first epoch
    added = [e for e in epochs if e.get("kept") is not None]
    assert [e["epoch"] for e in added] == [-1, 0, 1] and all(e["kept"] == 10 and e["random"] == 4 for e in added)
    assert all(e["scored"] == 90 - 10 * i for i, e in enumerate(added))  # chosen rows leave the candidates
    assert all(e["student_seconds"] >= 0 and e["near_duplicate_rate"] is not None for e in added)
    assert len(rows) == 30 == report["generated"] and len({tuple(r["inputs"]) for r in rows}) == 30
    assert sorted({r["key"] for r in rows}) == [-1, 0, 1] and all(r["source_idx"] == -1 for r in rows)
    assert report["teacher"]["train_rows_scored"] > 0
    # the whole pool goes through the teacher once, in the pass that embeds it: the expansions' scoring is cache hits
    assert report["teacher"]["pool_pass_rows"] == 90 and all(e["teacher_forward_calls"] == 0 for e in added)
    assert report["teacher_forward_calls"] == report["teacher"]["teacher_forward_calls"] + 90  # D's, then the pool


class _Teacher:
    """Scores by the first letter (class 1 for a-m) with a confidence set by the length; counts its calls."""

    def __init__(self):
        from types import SimpleNamespace

        self.forward_calls, self.cache = 0, SimpleNamespace(hits=0)

    def score(self, inputs):
        self.forward_calls += len(inputs)
        conf = np.asarray([0.55 + min(len(x[0]), 40) / 100 for x in inputs])
        first = np.asarray([x[0][:1].lower() <= "m" for x in inputs])
        return np.stack([np.where(first, 1 - conf, conf), np.where(first, conf, 1 - conf)], 1).astype(np.float32)


def test_selection_takes_the_rows_the_student_disagrees_with_most(tmp_path, tiny_data, local_bort, local_teacher):
    """No random share, no diversity cut, no balance: the rows chosen are the top of KL x confidence, then the
    next ones (a chosen row is never chosen again); the student is asked about the candidates only."""
    from agora.data.cards import load_task
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import load_tokenizer
    from agora.method.expand import Expander
    from agora.method.select import Selector

    recipe = tiny_recipe(local_bort, tiny_data, tmp_path / "run", task="sst2",
                         data={"max_train_samples": 64, "max_eval_samples": 24, "unlabelled": str(_pool_file(tmp_path))},
                         agora={"enabled": True, "balance_generated": False, "variants_per_source": 2,
                                "select": {"by": "disagreement", "rows": 5, "near_duplicate": None}},
                         teacher={"path": "unused"})
    cfg = validate_recipe(recipe)
    card = load_task("sst2")
    data = TaskDataModule(cfg, card, load_tokenizer(cfg.model)[0]).load(predict=False)
    teacher = _Teacher()
    selector = Selector(Expander(cfg.agora, card, teacher, cfg.seed))
    selector.prepare(data, str(local_teacher), tmp_path / "cache")
    asked = []

    def student(rows):  # prefers class 0 more for longer rows: disagrees most on long class-1 rows
        asked.append(len(rows))
        lengths = np.asarray(rows["length"], np.float64)
        return np.stack([lengths / 10, np.zeros(len(lengths))], 1)

    pool = data.pool
    probs = teacher.score(pool.inputs)
    lengths = np.asarray(selector.tokens["length"], np.float64)
    score = divergence(probs, np.stack([lengths / 10, np.zeros(len(pool))], 1), False) * probs.max(-1)
    ranked = np.argsort(-score, kind="stable")
    first = selector.step(data, student, mistakes=[], key=0, share=0.0)
    second = selector.step(data, student, mistakes=[], key=1, share=0.0)
    assert first.variants == [pool.inputs[j] for j in ranked[:5]]
    assert second.variants == [pool.inputs[j] for j in ranked[5:10]]
    assert asked == [90, 85] and first.stats.scored == 90 and second.stats.scored == 85
    assert first.stats.kept == 5 and first.stats.anchors == 0 and first.stats.agreement_kept is None
    assert np.allclose(first.probs, probs[ranked[:5]]) and first.source_ids.tolist() == [-1] * 5
    mixed = selector.step(data, student, mistakes=[], key=2, share=0.6)
    assert mixed.stats.random == 3 and mixed.stats.kept == 5
    assert mixed.variants[:2] == [pool.inputs[j] for j in ranked[10:12]]


def test_pool_rows_all_distils_on_the_whole_pool(tmp_path, tiny_data, local_bort, tiny_tokenizer_dir):
    report, rows = _fit(tmp_path, tiny_data, local_bort, tiny_tokenizer_dir, "all", pool_rows="all",
                        expand_every_n_epochs=0)
    assert len(rows) == 90 == report["teacher"]["pool_rows_scored"] and {r["key"] for r in rows} == {-1}
    weights = report["weights"]  # the rho cap (0.5), as for pool_rows: N: 90 pool rows beside D's 52 go over it
    assert weights["n_generated"] == 90 and weights["n"] == 90 + 52 and weights["generated_share"] == pytest.approx(0.5)
