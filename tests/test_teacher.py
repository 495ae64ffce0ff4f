"""Teacher and TeacherCache: label matching by name, one forward pass per distinct input, ever."""

import csv
import functools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from agora.method.teacher import Teacher, TeacherCache, teacher_identity

from conftest import HANG_GUARD_S, SENTENCES, build_tiny_tokenizer

DATA = os.environ.get("AGORA_DATA_DIR")
TASK = ["entailment", "not_entailment"]


def rte_pairs(n=20):
    """RTE dev pairs from the data dir; without it, pairs of :data:`conftest.SENTENCES`."""
    if not DATA:
        k = len(SENTENCES)
        return [(SENTENCES[i % k], SENTENCES[(i + 1 + i // k) % k]) for i in range(n)]
    with open(Path(DATA) / "glue/RTE/dev.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar=None))[1 : n + 1]
    return [(r[1], r[2]) for r in rows]


@functools.lru_cache(maxsize=1)
def roberta_tokenizer():
    """The RoBERTa tokenizer of the data dir, or the tiny one (same special tokens and pair template)."""
    import tempfile

    from transformers import AutoTokenizer

    path = Path(DATA) / "tokenizers/roberta" if DATA else build_tiny_tokenizer(Path(tempfile.mkdtemp()) / "tok")
    return AutoTokenizer.from_pretrained(path)


def save_tiny(path, id2label, kind="classification"):
    """A 1-layer BERT with the RoBERTa tokenizer, saved like a fine-tuned teacher."""
    import torch
    from transformers import BertConfig, BertForMultipleChoice, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50265, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )
    model = BertForMultipleChoice(config) if kind == "multiple_choice" else BertForSequenceClassification(config)
    model.save_pretrained(path)
    roberta_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    # Deliberately NOT the task's order: the teacher's columns must be swapped.
    return save_tiny(tmp_path_factory.mktemp("teacher"), {0: "not_entailment", 1: "entailment"})


def raw_probs(teacher, inputs):
    """The model's own softmax in the teacher's label order: one padded batch, no cache, no sorting."""
    import torch

    enc = teacher.tokenizer([a for a, _ in inputs], [b for _, b in inputs], padding=True, return_tensors="pt")
    with torch.inference_mode():
        return teacher.model(**enc).logits.softmax(-1).numpy()


def test_columns_follow_task_label_order(teacher_dir, tmp_path):
    inputs = rte_pairs(20)
    teacher = Teacher(teacher_dir, TASK, cache_dir=tmp_path, batch_size=8)
    probs = teacher.score(inputs)
    raw = raw_probs(teacher, inputs)
    assert probs.shape == (20, 2) and probs.dtype == np.float32
    assert np.allclose(probs, raw[:, ::-1], atol=1e-5)  # swapped: batching and sorting keep input order
    assert np.allclose(probs.sum(1), 1.0, atol=1e-6)
    teacher.columns = None  # no task labels: the teacher's own order
    assert np.allclose(teacher.score(inputs[:3]), raw[:3], atol=1e-5)


def test_each_distinct_input_scored_once_ever(teacher_dir, tmp_path):
    inputs = rte_pairs(20)
    doubled = inputs + inputs[:7] + [inputs[3]] * 3  # 30 inputs, 20 distinct
    teacher = Teacher(teacher_dir, TASK, cache_dir=tmp_path, batch_size=6)
    first = teacher.score(doubled)
    assert teacher.forward_calls == 20
    assert np.array_equal(first[20:27], first[:7]) and np.array_equal(first[27], first[3])
    again = teacher.score(inputs[::-1])
    assert teacher.forward_calls == 20 and np.array_equal(again, first[:20][::-1])

    restarted = Teacher(teacher_dir, TASK, cache_dir=tmp_path)  # a new process, same cache dir
    assert np.array_equal(restarted.score(doubled), first)
    assert restarted.forward_calls == 0 and restarted.cache.hits == 30 and restarted.cache.misses == 0

    more = rte_pairs(25)[20:]
    restarted.score(inputs[:2] + more)
    assert restarted.forward_calls == 5

    # The cache on disk: one valid Arrow part file per batch of new entries, named uniquely per writer
    # (time, pid, random: names sort in the order written), no temporary files.
    parts = sorted(restarted.cache.directory.glob("part-*.arrow"))
    assert len(parts) == 2 and all(re.fullmatch(rf"part-\d{{20}}-{os.getpid()}-[0-9a-f]{{8}}\.arrow", p.name) for p in parts)
    assert not list(restarted.cache.directory.glob("*.tmp"))
    tables = [pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in parts]
    assert [t.num_rows for t in tables] == [20, 5]
    assert tables[0].schema.field("key").type == pa.string()
    assert tables[0].schema.field("probs").type == pa.list_(pa.float32())
    stored = np.array(tables[0].column("probs").to_pylist(), dtype=np.float32)
    assert np.array_equal(stored[:, ::-1], first[:20])  # the raw teacher order is what is stored


def test_label_mismatch_error(teacher_dir):
    with pytest.raises(ValueError) as err:
        Teacher(teacher_dir, ["yes", "no"])
    msg = str(err.value)
    assert teacher_dir in msg and "not_entailment" in msg and "'yes'" in msg and "teacher.label_map" in msg
    assert "fine-tune the teacher" in msg


def test_generic_label_names_need_a_label_map(tmp_path):
    path = save_tiny(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="generic"):
        Teacher(path, TASK)
    mapped = Teacher(path, TASK, label_map={"LABEL_0": "not_entailment", "label_1": "ENTAILMENT"})
    inputs = rte_pairs(3)
    assert np.allclose(mapped.score(inputs), raw_probs(mapped, inputs)[:, ::-1], atol=1e-5)


def test_label_map_merges_teacher_labels(tmp_path):
    path = save_tiny(tmp_path / "mnli", {0: "Entailment", 1: "neutral", 2: "contradiction"})
    teacher = Teacher(path, TASK, label_map={"neutral": "not_entailment", "contradiction": "not_entailment"})
    inputs = rte_pairs(3)
    raw = raw_probs(teacher, inputs)
    probs = teacher.score(inputs)
    assert np.allclose(probs[:, 0], raw[:, 0], atol=1e-5) and np.allclose(probs[:, 1], raw[:, 1] + raw[:, 2], atol=1e-5)


def test_missing_local_path():
    with pytest.raises(FileNotFoundError, match="/no/such/teacher"):
        Teacher("/no/such/teacher", TASK)
    with pytest.raises(FileNotFoundError, match="no/such/teacher"):
        Teacher("./no/such/teacher", TASK)


def test_regression_and_multiple_choice(tmp_path):
    reg = Teacher(save_tiny(tmp_path / "reg", {0: "LABEL_0"}), None, task_type="regression")
    scores = reg.score(rte_pairs(4))
    assert scores.shape == (4, 1) and np.isfinite(scores).all()

    mc = Teacher(save_tiny(tmp_path / "mc", {0: "LABEL_0"}, "multiple_choice"), None, task_type="multiple_choice")
    a, b = rte_pairs(2)
    inputs = [(a[0], "Which is true?", a[1], b[1], "none"), (b[0], "Which is true?", b[1], a[1], "all")]
    probs = mc.score(inputs + inputs[:1])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-6) and mc.forward_calls == 2


def test_new_weights_mean_a_new_identity(teacher_dir, tmp_path):
    import shutil

    copy = shutil.copytree(teacher_dir, tmp_path / "copy")
    before = teacher_identity(str(copy))
    assert before == teacher_identity(str(copy)) and str(copy) in before
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert teacher_identity(str(copy)) != before
    assert TeacherCache(tmp_path, before).directory != TeacherCache(tmp_path, teacher_identity(str(copy))).directory


def test_teacher_cache_lookup_and_add(tmp_path):
    cache = TeacherCache(tmp_path, "teacher-x")
    inputs = [("a", "b"), ("c",), ("a", "b")]
    probs, miss = cache.lookup(inputs)
    assert miss.tolist() == [True, True, True] and probs.shape == (3, 0) and cache.misses == 3
    assert cache.add(inputs, np.array([[0.1, 0.9], [0.5, 0.5], [0.1, 0.9]])) == 2
    probs, miss = cache.lookup([("c",), ("zzz",), ("a", "b")])
    assert miss.tolist() == [False, True, False] and np.isnan(probs[1]).all()
    assert np.allclose(probs[[0, 2]], [[0.5, 0.5], [0.1, 0.9]]) and cache.hits == 2
    assert TeacherCache(tmp_path, "teacher-x").lookup([("c",)])[1].tolist() == [False]  # persisted
    assert TeacherCache(tmp_path, "teacher-y").lookup([("c",)])[1].tolist() == [True]  # other teacher
    memory = TeacherCache(None, "teacher-x")
    memory.add([("c",)], [[1.0, 0.0]])
    assert memory.lookup([("c",)])[1].tolist() == [False] and memory.directory is None


# ------------------------------------------------------------------ concurrency: several processes, one cache

WRITER = """
import sys, time
from pathlib import Path
from agora.method.teacher_cache import TeacherCache
root, first, last, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
cache = TeacherCache(root, "teacher-x", probabilities=False)  # raw scores: checked finite only
go.with_name(f"ready-{first}").touch()
while not go.exists():  # both start writing at the same moment
    time.sleep(0.005)
for start in range(first, last, 7):  # many small parts, each written while the other process writes
    keys = range(start, min(start + 7, last))
    cache.add([(f"input {i}",) for i in keys], [[i, -i, i / 1000] for i in keys])
"""


def _start_together(procs, go: Path) -> None:
    """Touch ``go`` once every process has said it is ready (its imports done, waiting for ``go``): a state,
    not a fixed sleep, so on a loaded machine they still start at the same moment."""
    while len(list(go.parent.glob("ready-*"))) < len(procs):
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
        time.sleep(0.01)
    go.touch()


def _check_rows(cache, keys):
    if not keys:
        return
    probs, miss = cache.lookup([(f"input {i}",) for i in keys], count=False)
    assert not miss.any()
    assert np.array_equal(probs, np.array([[i, -i, i / 1000] for i in keys], dtype=np.float32))


def test_concurrent_cache_writes_lose_no_entry_and_corrupt_none(tmp_path):
    """Two processes add overlapping entries to one cache directory at once, in parts of 7 rows, while
    this process keeps reading: every entry lands, every part reads back whole, no reader sees half a
    part (an entry with a wrong value or a file that does not parse)."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "cache"), str(a), str(b), str(go)],
                              stderr=subprocess.PIPE) for a, b in ((0, 700), (350, 1050))]
    reader, reads = TeacherCache(tmp_path / "cache", "teacher-x", probabilities=False), 0
    _start_together(procs, go)
    while any(p.poll() is None for p in procs):
        reader.refresh()  # parts appear whole or not at all
        _check_rows(reader, [i for i in range(1050) if (f"input {i}",) in reader])
        reads += 1
    assert [p.wait() for p in procs] == [0, 0], [p.stderr.read().decode()[-2000:] for p in procs]
    fresh = TeacherCache(tmp_path / "cache", "teacher-x", probabilities=False)
    assert len(fresh) == 1050 and reads > 1
    _check_rows(fresh, range(1050))
    # 2 x 100 parts of 7 rows (the 350 shared inputs written by both: neither process had seen the other's)
    parts = list(fresh.directory.glob("part-*.arrow"))
    assert len(parts) == 200 and not list(fresh.directory.glob(".*.tmp"))
    assert sum(pa.ipc.open_file(pa.memory_map(str(p))).read_all().num_rows for p in parts) == 1400


SCORER = """
import os, sys, time, json
from pathlib import Path
from agora.method.teacher import Teacher
teacher_dir, cache, go, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
teacher = Teacher(teacher_dir, ["entailment", "not_entailment"], cache_dir=cache, batch_size=4)
inputs = [(f"The cat number {i} sat on the mat.", f"A cat {i} is sitting.") for i in range(n)]
go.with_name(f"ready-{os.getpid()}").touch()
while not go.exists():  # both processes miss the whole cache at the same moment
    time.sleep(0.005)
probs = teacher.score(inputs)
print(json.dumps({"forward_calls": teacher.forward_calls, "hits": teacher.cache.hits, "misses": teacher.cache.misses,
                  "probs": probs.round(6).tolist()}))
"""


def test_concurrent_fits_score_each_input_once(teacher_dir, tmp_path):
    """Two processes score the same 48 inputs at the same moment through one cache directory: one
    scores them, the other waits for its part and reads it (teacher forward passes = distinct inputs)."""
    import json

    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", SCORER, teacher_dir, str(tmp_path / "cache"), str(go), "48"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    _start_together(procs, go)
    outs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    a, b = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert sorted([a["forward_calls"], b["forward_calls"]]) == [0, 48]
    assert a["hits"] + b["hits"] == 48 and a["misses"] + b["misses"] == 48  # the waiter counts its reads as hits
    assert a["probs"] == b["probs"]


def test_teacher_named_by_pkg_scheme_like_model_name(teacher_dir, tmp_path, monkeypatch):
    """``teacher.path: pkg:<package>/<folder>`` (was a hub "Repo id" error), through the recipe and in the class."""
    from agora.config import validate_recipe
    from agora.data.cards import load_task
    from agora.errors import ModelError
    from agora.method.teacher import build_teacher
    from conftest import in_package

    name = in_package(Path(teacher_dir), tmp_path / "site", "agora_test_teacher_pkg", monkeypatch)
    pairs = rte_pairs(4)
    direct = Teacher(teacher_dir, TASK).score(pairs)
    assert np.allclose(Teacher(name, TASK).score(pairs), direct)
    cfg = validate_recipe({"task": "rte", "agora": {"enabled": True}, "teacher": {"path": name}})
    teacher = build_teacher(cfg, load_task("rte"))
    assert teacher.path.endswith(os.path.join("agora_test_teacher_pkg", "model"))
    with pytest.raises(ModelError, match=r"teacher.path 'pkg:no_such_package_xyz/model': Python package 'no_such_package_xyz' is not installed"):
        Teacher("pkg:no_such_package_xyz/model", TASK)
    with pytest.raises(ModelError, match=r"teacher.path 'pkg:agora_test_teacher_pkg/nope': package 'agora_test_teacher_pkg' has no folder 'nope'"):
        Teacher("pkg:agora_test_teacher_pkg/nope", TASK)
