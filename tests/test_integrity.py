"""Caches are checked on read: a damaged teacher-cache part, Arrow split cache or embedding file is named in a
warning, set aside and built again (the teacher asked again), never served; an unwritable cache dir is a
clear error naming it and its setting."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from agora.config import validate_recipe
from agora.errors import RecipeError
from agora.method.teacher_cache import TeacherCache
from agora.trainer import AgoraTrainer
from conftest import tiny_recipe

DISTIL = {"enabled": True, "alpha": 0.5, "expand_every_n_epochs": 0}
"""Agora with distillation only: the teacher scores D (103 rows of RTE's 128 less E) at the start of the fit."""


def _parts(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/part-*.arrow"))


def swap_pairs(part: Path) -> None:
    """Rewrite a part with each row's two probabilities swapped, keeping its schema and metadata (its
    checksum): every value stays a valid probability, only the checksum can tell."""
    table = pa.ipc.open_file(pa.memory_map(str(part))).read_all()
    swapped = pa.table({"key": table.column("key"), "probs": [row[::-1] for row in table.column("probs").to_pylist()]},
                       schema=table.schema)
    with pa.OSFile(str(part), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(swapped)


def random_bytes(part: Path) -> None:
    """64 random bytes written over the middle of the file."""
    with open(part, "r+b") as handle:
        handle.seek(os.path.getsize(part) // 2)
        handle.write(np.random.default_rng(0).bytes(64))


def truncate(part: Path) -> None:
    os.truncate(part, os.path.getsize(part) // 2)


def _fit(tiny_bort, tiny_teacher, data_dir, out: Path, cache: Path) -> dict:
    recipe = tiny_recipe(tiny_bort, data_dir, out, agora=DISTIL, teacher={"path": str(tiny_teacher), "cache_dir": str(cache)},
                         trainer={"max_epochs": 1})
    AgoraTrainer(validate_recipe(recipe)).fit()
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def first_fit(tmp_path_factory, tiny_bort, tiny_teacher, data_dir):
    """A fit that fills a teacher cache (one part: D's 103 rows), and the cache as it left it."""
    tmp = tmp_path_factory.mktemp("first")
    metrics = _fit(tiny_bort, tiny_teacher, data_dir, tmp / "run", tmp / "cache")
    return metrics["agora"]["teacher"], tmp / "cache"


@pytest.mark.parametrize("damage", [swap_pairs, random_bytes, truncate])
def test_a_damaged_part_is_named_set_aside_and_scored_again(damage, first_fit, tmp_path, tiny_bort, tiny_teacher,
                                                            data_dir):
    teacher, clean = first_fit
    assert teacher["teacher_forward_calls"] == teacher["train_rows_scored"] == 103
    cache = tmp_path / "cache"
    import shutil

    shutil.copytree(clean, cache)
    (part,) = _parts(cache)
    damage(part)
    with pytest.warns(UserWarning, match=f"teacher cache part {part} is damaged") as caught:
        metrics = _fit(tiny_bort, tiny_teacher, data_dir, tmp_path / "run", cache)
    said = next(str(w.message) for w in caught if str(part) in str(w.message))
    assert "Set aside as" in said and "scores them again" in said
    again = metrics["agora"]["teacher"]
    # every row of the damaged part was scored again by the teacher, none served from it
    assert again["teacher_forward_calls"] == 103 and again["teacher_cache_hits"] == 0
    assert again["train_agreement"] == teacher["train_agreement"]
    assert all(math.isfinite(e["train_loss"]) for e in metrics["epochs"])
    assert (part.parent / (part.name + ".corrupt")).is_file()  # kept to look at, never read again
    assert len(_parts(cache)) == 1 and _parts(cache)[0] != part


def test_parts_carry_a_checksum_of_their_content(tmp_path):
    from agora.method.teacher_cache import content_digest

    cache = TeacherCache(tmp_path, "t")
    cache.add([("a",), ("b",)], [[0.25, 0.75], [1.0, 0.0]])
    (part,) = _parts(tmp_path)
    table = pa.ipc.open_file(pa.memory_map(str(part))).read_all()
    probs = table.column("probs").combine_chunks()
    stored = table.schema.metadata[b"sha256"].decode()
    assert stored == content_digest(table.column("key").to_pylist(), probs.offsets.to_numpy(), probs.values.to_numpy())
    assert len(TeacherCache(tmp_path, "t")) == 2 and not list(tmp_path.glob("*/*.corrupt"))


def test_random_bytes_over_the_stored_probabilities_are_caught(tmp_path):
    """The garbage of the issue (5e34, -1.7e31 served as probabilities): bytes written over the values buffer."""
    cache = TeacherCache(tmp_path, "t")
    cache.add([("a",), ("b",)], [[0.25, 0.75], [0.5, 0.5]])
    (part,) = _parts(tmp_path)
    data = part.read_bytes()
    values = np.array([0.25, 0.75, 0.5, 0.5], np.float32).tobytes()
    at = data.index(values)
    part.write_bytes(data[:at] + np.array([5e34, -1.7e31, 0.5, 0.5], np.float32).tobytes() + data[at + 16:])
    with pytest.warns(UserWarning, match=f"part {part} is damaged: its checksum does not match its content"):
        fresh = TeacherCache(tmp_path, "t")
    assert len(fresh) == 0 and fresh.lookup([("a",), ("b",)])[1].all() and fresh.set_aside == [
        part.with_name(part.name + ".corrupt")]


@pytest.mark.parametrize("rows, why", [([[0.5, float("nan")]], "not finite"), ([[0.7, 0.7]], "not probabilities"),
                                       ([[1.5, -0.5]], "not probabilities")])
def test_values_that_are_not_probabilities_are_never_stored_or_served(rows, why, tmp_path):
    from agora.method.teacher_cache import content_digest

    cache = TeacherCache(tmp_path, "t")
    with pytest.raises(ValueError, match=why):
        cache.add([("a",)], rows)
    # a part holding such values (with a matching checksum: written by other code) is set aside when read
    table = pa.table({"key": ["k"], "probs": rows}, schema=pa.schema(
        [("key", pa.string()), ("probs", pa.list_(pa.float32()))]).with_metadata(
        {"sha256": content_digest(["k"], np.array([0, 2]), np.asarray(rows, np.float32).ravel())}))
    part = cache.directory / "part-0-0-x.arrow"
    with pa.OSFile(str(part), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.warns(UserWarning, match=f"part {part} is damaged: its row for key k... is {why}"):
        assert len(TeacherCache(tmp_path, "t")) == 0
    regression = TeacherCache(tmp_path / "r", "t", probabilities=False)  # raw scores: finite is enough
    assert regression.add([("a",)], [[3.5]]) == 1
    with pytest.raises(ValueError, match="not finite"):
        regression.add([("b",)], [[float("inf")]])


def test_a_teacher_giving_nan_is_refused_naming_it(tiny_teacher, tmp_path):
    import torch

    from agora.errors import ModelError
    from agora.method.teacher import Teacher

    teacher = Teacher(str(tiny_teacher), ["entailment", "not_entailment"], cache_dir=tmp_path)
    with torch.no_grad():
        teacher.model.classifier.weight.fill_(float("nan"))
    with pytest.raises(ModelError, match=rf"teacher '{tiny_teacher}' gave an output that is not finite .* for the "
                                         r"input \['A man sleeps.'\].*weights are likely damaged"):
        teacher.score([("A man sleeps.",)])
    assert len(teacher.cache) == 0 and not _parts(tmp_path)


def read_only(path: Path, monkeypatch) -> None:
    """Make ``path`` read-only: chmod, and as root (whom chmod does not stop) refuse creating files in it the
    way the kernel does for others (EACCES from open and mkdir)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    if os.geteuid() != 0:
        return
    inside = str(path.resolve())
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(target) -> bool:
        return os.path.abspath(target).startswith(inside)

    def fake_open(target, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refuse(target):
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real_open(target, flags, *args, **kwargs)

    def fake_mkdir(target, *args, **kwargs):
        if refuse(target):
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real_mkdir(target, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_a_read_only_teacher_cache_dir_is_a_clear_error(tmp_path, monkeypatch, tiny_bort, tiny_teacher, data_dir):
    cache = tmp_path / "cache"
    read_only(cache, monkeypatch)
    with pytest.raises(RecipeError, match=rf"the teacher cache dir {cache}/\w+ cannot be written \(Permission denied\): "
                                          r"set teacher.cache_dir to a writable directory"):
        _fit(tiny_bort, tiny_teacher, data_dir, tmp_path / "run", cache)
    assert not (tmp_path / "run").exists()  # failed before training: no run dir left behind


def test_a_full_teacher_cache_dir_is_a_clear_error(tmp_path, monkeypatch):
    import agora.method.teacher_cache as module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = TeacherCache(tmp_path, "t")
    monkeypatch.setattr(module, "atomic_write", full)
    with pytest.raises(RecipeError, match=rf"teacher cache dir {cache.directory} cannot be written \(No space left on "
                                          r"device\): free some space there, or set teacher.cache_dir"):
        cache.add([("a",)], [[0.5, 0.5]])


# ---------------------------------------------------------------------- Arrow caches and embeddings

@pytest.mark.parametrize("damage", [random_bytes, truncate])
def test_a_damaged_arrow_split_cache_is_set_aside_and_parsed_again(damage, tmp_path, data_dir):
    from agora.data.cards import load_task
    from agora.data.splits import load_split

    card = load_task("rte")
    first = load_split(card, "train", data_dir, "local", tmp_path).to_dict()
    again = load_split(card, "train", data_dir, "local", tmp_path)
    (path,) = [Path(f["filename"]) for f in again.cache_files]
    assert path.with_name(path.name + ".sha256").is_file()
    del again
    damage(path)
    with pytest.warns(UserWarning, match=rf"the cache file {path} is damaged .* set aside as {path.parent}.corrupt"):
        rebuilt = load_split(card, "train", data_dir, "local", tmp_path)
    assert rebuilt.to_dict() == first


@pytest.mark.parametrize("damage", [random_bytes, truncate])
def test_a_damaged_tokenized_cache_is_set_aside_and_tokenized_again(damage, tmp_path):
    import datasets

    from agora.data.integrity import verified

    def rows():
        for i in range(3000):
            yield {"idx": i, "text": f"row number {i}"}

    source = datasets.Dataset.from_generator(rows, cache_dir=str(tmp_path))

    def tokenize():
        return source.map(lambda b: {"length": [len(t) for t in b["text"]]}, batched=True)

    first = list(verified(tokenize, tmp_path, "tokenizing")["length"])  # a copy: the cache file is damaged below
    (path,) = [Path(f["filename"]) for f in verified(tokenize, tmp_path, "tokenizing").cache_files]
    assert path.name.startswith("cache-")
    damage(path)
    with pytest.warns(UserWarning, match=rf"tokenizing: the cache file {path} is damaged"):
        assert list(verified(tokenize, tmp_path, "tokenizing")["length"]) == first
    assert path.with_name(path.name + ".corrupt").is_file()


def test_damaged_pool_embeddings_are_set_aside_and_embedded_again(tmp_path):
    from agora.data.integrity import damaged
    from agora.files import atomic_write
    from agora.method.generators.nearest import NearestGenerator

    path = tmp_path / "embeddings" / "key.npy"
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    atomic_write(path, lambda handle: np.save(handle, vectors))
    damaged(path)
    assert np.array_equal(NearestGenerator._read(path, 50), vectors)
    random_bytes(path)
    with pytest.warns(UserWarning, match=rf"the cache file {path} is damaged \(its sha256 differs"):
        assert NearestGenerator._read(path, 50) is None
    assert not path.exists() and path.with_name("key.npy.corrupt").is_file()


def test_a_read_only_data_cache_dir_is_a_clear_error(tmp_path, monkeypatch, data_dir):
    from agora.data.cards import load_task
    from agora.data.splits import load_split

    read_only(tmp_path / "cache", monkeypatch)
    with pytest.raises(RecipeError, match=rf"the cache dir {tmp_path}/cache/datasets cannot be written \(Permission "
                                          r"denied\): set data.cache_dir to a writable directory"):
        load_split(load_task("rte"), "train", data_dir, "local", tmp_path / "cache")
