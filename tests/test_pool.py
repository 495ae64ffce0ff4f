"""The unlabelled pool (``data.unlabelled``), the ``nearest`` generator and ``agora.pool_rows``."""

import json
from pathlib import Path

import numpy as np
import pytest

from agora.config import validate_recipe
from agora.errors import DataError, RecipeError
from conftest import tiny_recipe


def _dm(tiny_bort, data_dir, tmp_path, **data):
    from agora.data.cards import load_task
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import load_tokenizer

    cfg = validate_recipe(tiny_recipe(tiny_bort, data_dir, tmp_path / "run", task="sst2", agora={"enabled": True,
                                      "alpha": 0, "expand_every_n_epochs": 0},
                                      data={"max_train_samples": 120, "max_eval_samples": 40, **data}))
    return TaskDataModule(cfg, load_task("sst2"), load_tokenizer(cfg.model)[0]).load(predict=False)


def _sst2_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return path


def test_pool_from_train_drops_d_e_and_dev_and_counts_them(tmp_path, data_dir, tiny_bort):
    dm = _dm(tiny_bort, data_dir, tmp_path, unlabelled="train")
    pool = dm.pool
    d = set(dm.inputs("train")[1]) | set(dm.inputs("e_gen")[1]) | set(dm.inputs("e_sel")[1])
    assert pool.stats["read"] == 67349 and pool.stats["in_d"] + pool.stats["in_e"] >= len(d)
    assert not (set(pool.inputs) & d) and not (set(pool.inputs) & set(dm.inputs("validation")[1]))
    assert len(set(pool.inputs)) == len(pool) == pool.stats["kept"]
    assert sum(pool.stats[k] for k in ("repeated", "in_d", "in_e", "in_dev", "kept")) == pool.stats["read"]
    assert [pool.read_inputs[j] for j in pool.positions[:5]] == pool.inputs[:5]


def test_pool_file_labels_are_ignored_and_rows_deduplicated(tmp_path, data_dir, tiny_bort):
    base = _dm(tiny_bort, data_dir, tmp_path)
    in_d = base.inputs("train")[1][0][0]
    in_dev = base.inputs("validation")[1][0][0]
    rows = [("a brand new sentence", "not-a-label"), ("another new one", "1"), (in_d, "0"), (in_dev, "1"),
            ("a brand new sentence", "0")]
    dm = _dm(tiny_bort, data_dir, tmp_path, unlabelled=str(_sst2_file(tmp_path / "pool.tsv", rows)))
    assert dm.pool.inputs == [("a brand new sentence",), ("another new one",)]
    assert dm.pool.stats == {"read": 5, "repeated": 1, "in_d": 1, "in_e": 0, "in_dev": 1, "kept": 2}


@pytest.mark.parametrize("content, match", [
    (None, r"data\.unlabelled: .*missing\.tsv: no such file .*relative to data\.dir or absolute, or 'train'"),
    ("sentence\tlabel\n", r"data\.unlabelled: .*is empty"),
    ("text\tlabel\nhello\t1\n", r"data\.unlabelled: [^:]*missing\.tsv: column 'sentence' \(for text_a\) not found; the file has \['text', 'label'\]"),
])
def test_pool_errors_name_the_field_and_the_file(tmp_path, data_dir, tiny_bort, content, match):
    path = tmp_path / "missing.tsv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match):
        _dm(tiny_bort, data_dir, tmp_path, unlabelled=str(path))


def test_pool_of_rows_all_already_held_is_an_error(tmp_path, data_dir, tiny_bort):
    base = _dm(tiny_bort, data_dir, tmp_path)
    rows = [(x[0], "1") for x in base.inputs("train")[1][:3]]
    with pytest.raises(DataError, match=r"every one of its 3 rows is also in D, E or the dev set"):
        _dm(tiny_bort, data_dir, tmp_path, unlabelled=str(_sst2_file(tmp_path / "pool.tsv", rows)))


def test_recipes_that_draw_from_a_pool_need_one():
    base = {"task": "sst2", "teacher": {"path": "t"}}
    with pytest.raises(RecipeError, match=r"generator: nearest draws from unlabelled rows: set data\.unlabelled"):
        validate_recipe({**base, "agora": {"enabled": True, "generator": "nearest"}})
    with pytest.raises(RecipeError, match=r"agora\.pool_rows draws from unlabelled rows"):
        validate_recipe({**base, "agora": {"enabled": True, "pool_rows": 10}})
    assert validate_recipe({**base, "agora": {"enabled": True, "generator": "nearest"},
                            "data": {"unlabelled": "train"}}).agora.generator == "nearest"


# ------------------------------------------------------------------ the nearest generator

@pytest.fixture(scope="module")
def small_pool(data_dir):
    """120 real SST-2 sentences as a pool (read_inputs = inputs: no row dropped)."""
    import csv

    from agora.data.pool import Pool

    with open(data_dir / "glue/SST-2/dev.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar=None))[1:121]
    inputs = list(dict.fromkeys((r[0],) for r in rows))
    return Pool(np.arange(len(inputs)), inputs, "dev.tsv", {"kept": len(inputs)}, np.arange(len(inputs)), inputs)


def _nearest(small_pool, tiny_bort, cache):
    from agora.method.generators import make_generator

    gen = make_generator("nearest", {"batch_size": 16})
    gen.prepare(small_pool, default_model=str(tiny_bort), cache_dir=cache)
    return gen


def test_nearest_returns_the_true_top_k_and_each_pool_row_once(small_pool, tiny_bort, tmp_path):
    gen = _nearest(small_pool, tiny_bort, tmp_path)
    sources = [("a gripping , beautifully acted film .",), ("dull and far too long .",)]
    queries = gen.embedder(sources)
    brute = np.argsort(-(queries @ gen.vectors.T), axis=1, kind="stable")  # brute force, numpy
    first = gen.generate(sources, 3, seed=0)
    taken = [small_pool.inputs.index(v) for v in first.variants]
    assert first.sources == [0, 0, 0, 1, 1, 1]
    assert taken[:3] == brute[0, :3].tolist()
    expected_second = [int(j) for j in brute[1] if j not in taken[:3]][:3]
    assert taken[3:] == expected_second  # the second source skips rows the first one took
    again = gen.generate(sources, 3, seed=0)  # asked again in the same fit: the next nearest, never the same rows
    assert not set(again.variants) & set(first.variants) and again.rejected["used"] > 0
    # the state (rows used) round-trips: a resumed fit does not return them again
    other = _nearest(small_pool, tiny_bort, tmp_path)
    other.load_state_dict(gen.state_dict())
    assert not set(other.generate(sources, 3, seed=0).variants) & (set(first.variants) | set(again.variants))


def test_nearest_embeddings_are_cached_and_results_deterministic(small_pool, tiny_bort, tmp_path, monkeypatch):
    from agora.method.generators import nearest

    calls = []
    original = nearest.Embedder.__call__

    def counting(self, inputs):
        calls.append(len(inputs))
        return original(self, inputs)

    monkeypatch.setattr(nearest.Embedder, "__call__", counting)
    a = _nearest(small_pool, tiny_bort, tmp_path)
    assert calls == [len(small_pool)] and len(list((tmp_path / "embeddings").glob("*.npy"))) == 1
    b = _nearest(small_pool, tiny_bort, tmp_path)
    assert calls == [len(small_pool)]  # the pool is not embedded a second time
    np.testing.assert_array_equal(a.vectors, b.vectors)
    sources = [(s,) for (s,) in small_pool.inputs[:4]]
    assert a.generate(sources, 2, seed=3).variants == b.generate(sources, 2, seed=3).variants


def test_nearest_uses_faiss_above_its_threshold_with_the_same_neighbours(small_pool, tiny_bort, tmp_path):
    pytest.importorskip("faiss")
    exact = _nearest(small_pool, tiny_bort, tmp_path)
    big = _nearest(small_pool, tiny_bort, tmp_path)
    big.faiss_from = 10
    queries = exact.embedder([("an unexpected , touching story .",)])
    assert big.neighbours(queries, 5).tolist() == exact.neighbours(queries, 5).tolist()


# ------------------------------------------------------------------ in a fit

def _sst2_teacher(tmp_path, roberta_tokenizer_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    id2label = {0: "negative", 1: "positive"}
    BertForSequenceClassification(BertConfig(vocab_size=50265, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=37, id2label=id2label,
                                             label2id={v: k for k, v in id2label.items()},
                                             initializer_range=0.2)).save_pretrained(tmp_path / "teacher")
    AutoTokenizer.from_pretrained(roberta_tokenizer_dir).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def test_fit_with_nearest_and_pool_rows(tmp_path, data_dir, tiny_bort, roberta_tokenizer_dir, one_thread):
    """The pool: a file of SST-2's first 4000 training rows (any of D, E or dev in it are dropped, as from the whole
    file), not the whole 67k-row train file: 17x fewer rows to embed (test_pool_from_train_* reads the whole file)."""
    from agora.trainer import AgoraTrainer

    teacher = _sst2_teacher(tmp_path, roberta_tokenizer_dir)
    run = tmp_path / "run"
    lines = (data_dir / "glue/SST-2/train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:4001]
    (tmp_path / "pool.tsv").write_text("".join(lines), encoding="utf-8")
    recipe = tiny_recipe(tiny_bort, data_dir, run, task="sst2",
                         data={"max_train_samples": 160, "max_eval_samples": 48, "unlabelled": str(tmp_path / "pool.tsv")},
                         agora={"enabled": True, "generator": "nearest", "variants_per_source": 2, "pool_rows": 25,
                                "balance_generated": False},
                         teacher={"path": str(teacher), "cache_dir": str(tmp_path / "cache")},
                         trainer={"max_epochs": 3}, output={"predict": False, "export": False})
    AgoraTrainer(validate_recipe(recipe)).fit()
    report = json.loads((run / "metrics.json").read_text())["agora"]
    rows = [json.loads(line) for line in (run / "agora" / "generated.jsonl").read_text().splitlines()]
    pool_rows = [r for r in rows if r["key"] == -1]
    assert len(pool_rows) == 25 == report["teacher"]["pool_rows_scored"]  # drawn when the fit starts
    near = [r for r in rows if r["key"] >= 0]
    assert len(near) == sum(e.get("kept") or 0 for e in report["epochs"]) > 0
    assert len({tuple(r["inputs"]) for r in rows}) == len(rows)  # each pool row at most once
    assert all(r["label"] in ("negative", "positive") for r in rows)
    # one teacher pass: embedding the pool's file gave the teacher's outputs for its every distinct row,
    # so D's rows, the random pool rows and the neighbours were all cache hits
    distinct = len({line.split("\t")[0] for line in lines[1:]})
    assert report["teacher"]["pool_pass_rows"] == report["teacher_forward_calls"] == distinct
    assert report["teacher"]["teacher_forward_calls"] == 0 and all(not e.get("teacher_forward_calls") for e in report["epochs"])
