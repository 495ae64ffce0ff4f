"""Length-bucketed sampling, dynamic padding, cached tokenization."""

import numpy as np
import pytest
import torch

from agora.data.datamodule import Collator, LengthBucketSampler


def _lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(5, 128, size=n)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_training_batches_cover_every_row_and_ranks_step_equally(world):
    lengths = _lengths(1003)
    per_rank = [list(LengthBucketSampler(lengths, 16, True, seed=1, rank=r, world_size=world)) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1, "every rank steps the same number of times"
    assert all(len(b) == len(LengthBucketSampler(lengths, 16, True, world_size=world)) for b in per_rank)
    seen = [i for rank in per_rank for batch in rank for i in batch]
    assert set(seen) == set(range(1003))
    if world == 1:
        assert sorted(seen) == list(range(1003)), "each row exactly once on one process"


def test_shuffle_depends_on_seed_and_epoch_only():
    lengths = _lengths()
    a = LengthBucketSampler(lengths, 16, True, seed=3)
    b = LengthBucketSampler(lengths, 16, True, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_bucketing_cuts_padding():
    lengths = _lengths(4000)

    def padded(sampler):
        return sum(len(b) * lengths[b].max() for b in map(np.array, sampler))

    bucketed = padded(LengthBucketSampler(lengths, 32, True, bucket=True))
    plain = padded(LengthBucketSampler(lengths, 32, True, bucket=False))
    assert bucketed < 0.75 * plain


def test_eval_batches_split_across_ranks_without_duplicates():
    lengths = _lengths(101)
    parts = [list(LengthBucketSampler(lengths, 10, False, rank=r, world_size=2)) for r in range(2)]
    rows = [i for p in parts for b in p for i in b]
    assert sorted(rows) == list(range(101))


@pytest.mark.parametrize("n", [1, 3, 5])
def test_small_eval_split_gives_every_rank_a_batch(n):
    """Fewer rows than one batch per rank (a tiny E_sel under DDP) must not leave a rank empty."""
    lengths = _lengths(n)
    parts = [list(LengthBucketSampler(lengths, 64, False, rank=r, world_size=4)) for r in range(4)]
    assert all(len(p) >= 1 and all(len(b) for b in p) for p in parts)
    assert {i for p in parts for b in p for i in b} == set(range(n))
    assert all(len(LengthBucketSampler(lengths, 64, False, rank=r, world_size=4)) == len(parts[r]) for r in range(4))


def test_collator_pads_dynamically():
    rows = [{"input_ids": [0, 5, 2], "attention_mask": [1, 1, 1], "idx": 4, "label": 1},
            {"input_ids": [0, 2], "attention_mask": [1, 1], "idx": 9, "label": 0}]
    batch = Collator(pad_token_id=1, regression=False)(rows)
    assert batch["input_ids"].tolist() == [[0, 5, 2], [0, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["idx"].tolist() == [4, 9] and batch["labels"].dtype == torch.long


def test_tokenization_is_cached_by_fingerprint(data_dir, tiny_bort):
    from agora.config import validate_recipe
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import load_tokenizer
    from agora.data.cards import load_task

    cfg = validate_recipe({"task": "sst2", "model": {"name": str(tiny_bort)}, "data": {"dir": str(data_dir)}})
    tok, _ = load_tokenizer(cfg.model)
    first = TaskDataModule(cfg, load_task("sst2"), tok).load(predict=False)
    second = TaskDataModule(cfg, load_task("sst2"), tok).load(predict=False)
    a, b = first.tokenized["train"], second.tokenized["train"]
    assert len(a) == 67349
    assert a._fingerprint == b._fingerprint
    assert a.cache_files and a.cache_files[0]["filename"] == b.cache_files[0]["filename"]
    assert set(a.column_names) == {"idx", "label", "input_ids", "attention_mask", "length"}
    assert a[0]["input_ids"][0] == 0 and a[0]["input_ids"][-1] == 2
