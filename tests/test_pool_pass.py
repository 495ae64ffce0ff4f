"""The pool's one teacher pass: where the teacher's encoder embeds the pool (``nearest``, ``select.by:
disagreement``), its outputs for every pool row come from the same forward and go into its cache."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import save_tiny_teacher

from agora.data.pool import Pool
from agora.method.generated import counting
from agora.method.generators.nearest import Embedder, NearestGenerator
from agora.method.teacher import Teacher


def _pool(tiny_data, task: str) -> Pool:
    """The tiny task's train rows as a pool; the file read holds one row twice (embedded and scored once)."""
    folder, columns = {"sst2": ("SST-2", ("sentence",)), "rte": ("RTE", ("sentence1", "sentence2")),
                       "stsb": ("STS-B", ("sentence1", "sentence2"))}[task]
    with open(tiny_data / "glue" / folder / "train.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    inputs = list(dict.fromkeys(tuple(r[c] for c in columns) for r in rows))
    read = inputs + [inputs[0]]
    return Pool(np.arange(len(inputs)), inputs, "train.tsv", {"kept": len(inputs)}, np.arange(len(inputs)), read)


@pytest.mark.parametrize("task, kind", [("sst2", "classification"), ("rte", "classification"), ("stsb", "regression")])
def test_one_teacher_pass_embeds_the_pool_and_fills_the_teacher_cache(task, kind, tmp_path, tiny_data, tiny_tokenizer_dir):
    labels = ("score",) if kind == "regression" else ("entailment", "not_entailment")
    model = save_tiny_teacher(tmp_path / "teacher", tiny_tokenizer_dir, labels)
    pool = _pool(tiny_data, task)
    n = len(pool)
    teacher = Teacher(str(model), None, kind, cache_dir=tmp_path / "teacher-cache", batch_size=8)
    gen = NearestGenerator(batch_size=8)
    gen.prepare(pool, default_model=str(model), cache_dir=tmp_path / "cache", teacher=teacher)
    assert teacher.forward_calls == n and len(teacher.cache) == n  # one pass, each distinct row once
    # the embeddings are those the encoder makes on its own
    np.testing.assert_allclose(gen.vectors, Embedder(str(model), batch_size=8)(pool.inputs), atol=1e-5)
    # scoring the pool now: all cache hits, the outputs of a plain scoring of the same rows
    with counting(teacher) as counts:
        cached = teacher.score(pool.inputs)
    assert counts.forward_calls == 0 and counts.cache_hits == n
    plain = Teacher(str(model), None, kind, cache_dir=None, batch_size=8)
    np.testing.assert_allclose(cached, plain.score(pool.inputs), atol=1e-5)
    assert plain.forward_calls == n and cached.shape == (n, len(labels))
    # kept on disk: another process's teacher finds them
    again = Teacher(str(model), None, kind, cache_dir=tmp_path / "teacher-cache")
    np.testing.assert_array_equal(again.score(pool.inputs), cached)
    assert again.forward_calls == 0


def test_rows_longer_than_the_embedders_max_length_are_embedded_apart(tmp_path, tiny_data, local_teacher,
                                                                      monkeypatch):
    """The embedder cuts at the rows' median length, the teacher at its own 256: the longer rows get the
    embedder's own vectors (from the embedder, for those rows only); every row's teacher output is cached."""
    from agora.method.generators import nearest

    pool = _pool(tiny_data, "sst2")
    tokenizer = Embedder(str(local_teacher)).tokenizer
    tokens = [len(tokenizer(x[0])["input_ids"]) for x in pool.read_inputs]
    cut = int(np.median(tokens))
    long = [x for x, k in zip(pool.read_inputs, tokens) if k > cut]
    assert 0 < len(set(long)) < len(pool)
    asked = []
    original = nearest.Embedder.__call__
    monkeypatch.setattr(nearest.Embedder, "__call__", lambda self, inputs: asked.append(list(inputs)) or
                        original(self, inputs))
    teacher = Teacher(str(local_teacher), None, cache_dir=None, batch_size=8)
    gen = NearestGenerator(batch_size=8, max_length=cut)
    gen.prepare(pool, default_model=str(local_teacher), cache_dir=tmp_path, teacher=teacher)
    assert asked == [long] and teacher.forward_calls == len(pool)
    np.testing.assert_allclose(gen.vectors, original(Embedder(str(local_teacher), 8, max_length=cut), pool.inputs),
                               atol=1e-5)
    with counting(teacher) as counts:
        cached = teacher.score(pool.inputs)
    assert counts.forward_calls == 0
    np.testing.assert_allclose(cached, Teacher(str(local_teacher), None).score(pool.inputs), atol=1e-5)


def test_an_encoder_other_than_the_teacher_leaves_the_teacher_alone(tmp_path, tiny_data, local_teacher, local_bort):
    pool = _pool(tiny_data, "sst2")
    teacher = Teacher(str(local_teacher), None, cache_dir=None, lazy=True)
    gen = NearestGenerator(model=str(local_bort), batch_size=8)
    gen.prepare(pool, default_model=str(local_teacher), cache_dir=tmp_path, teacher=teacher)
    assert teacher.forward_calls == 0 and len(teacher.cache) == 0 and teacher.model is None
    np.testing.assert_allclose(gen.vectors, Embedder(str(local_bort), 8)(pool.inputs), atol=1e-6)


def test_the_expanders_pool_labelling_is_cache_hits_after_the_pass(tmp_path, tiny_data, local_bort, local_teacher):
    """Through the Expander (as a fit and a search step call it): ``pool_rows: all`` after ``nearest`` embedded
    the pool costs the teacher nothing more."""
    from conftest import tiny_recipe

    from agora.config import validate_recipe
    from agora.data.cards import load_task
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import load_tokenizer
    from agora.method.expand import Expander

    recipe = tiny_recipe(local_bort, tiny_data, tmp_path / "run", data={"unlabelled": "train", "max_train_samples": 32},
                         agora={"enabled": True, "generator": "nearest", "pool_rows": "all"},
                         teacher={"path": str(local_teacher)})
    cfg = validate_recipe(recipe)
    card = load_task("rte")
    data = TaskDataModule(cfg, card, load_tokenizer(cfg.model)[0]).load(predict=False)
    teacher = Teacher(str(local_teacher), card.labels, cache_dir=None, batch_size=8)
    expander = Expander(cfg.agora, card, teacher, cfg.seed)
    expander.prepare(data.pool, str(local_teacher), tmp_path / "cache")
    read = len(set(data.pool.read_inputs))
    assert teacher.forward_calls == read >= len(data.pool) > 0
    sample = expander.label_pool(data.pool, "all", cfg.seed)
    assert sample.stats.teacher.forward_calls == 0 and sample.stats.teacher.cache_hits == len(data.pool)
    np.testing.assert_allclose(sample.probs, Teacher(str(local_teacher), card.labels).score(data.pool.inputs),
                               atol=1e-5)
