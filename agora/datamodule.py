"""The LightningDataModule: cached tokenization, length-bucketed batches, dynamic padding.

Splits are Arrow tables memory-mapped by ``datasets``; tokenization is a ``Dataset.map`` cached
by its fingerprint, so a second run starts without re-tokenizing. Batches group examples of
similar length (shuffled in "megabatches", as in the Hugging Face ``group_by_length`` option)
and are padded to the longest example in the batch. Samplers shard batches across ranks
themselves, so every rank gets the same number of training batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import datasets
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from agora.config import RunConfig
from agora.paths import cache_dir, data_dir
from agora.splits import is_pair, load_split
from agora.tasks import TaskCard, load_task

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def encode(tokenizer, card: TaskCard, batch: dict[str, list], max_length: int) -> dict[str, list]:
    """Tokenize a batch of rows (text_a[, text_b]) the way the student reads them."""
    texts = (batch["text_a"], batch["text_b"]) if is_pair(card) else (batch["text_a"],)
    enc = tokenizer(*texts, truncation=True, max_length=max_length)
    out = {k: enc[k] for k in TOKEN_COLUMNS if k in enc}
    out["length"] = [len(ids) for ids in enc["input_ids"]]
    return out


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length; shuffled per epoch (seed + epoch) and sharded by rank.

    Training (``shuffle=True``): indices are shuffled, cut into megabatches of 50 batches, each
    megabatch sorted by length and cut into batches, then the batch order is shuffled. Batches are
    padded (by repeating the first ones) to a multiple of ``world_size`` so every rank steps the
    same number of times. Evaluation (``shuffle=False``): sorted by length, no padding; each rank
    takes every ``world_size``-th batch, and predictions are gathered and de-duplicated by idx.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, bucket: bool = True, megabatch: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.bucket, self.megabatch = rank, world_size, bucket, megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable") if self.bucket else np.arange(n)
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n)
        if self.bucket:
            size = self.batch_size * self.megabatch
            chunks = [order[i : i + size] for i in range(0, n, size)]
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.bucket:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1 and len(batches) % self.world_size:
            batches += batches[: self.world_size - len(batches) % self.world_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches()[self.rank :: self.world_size]:
            yield batch.tolist()

    def __len__(self) -> int:
        n_batches = math.ceil(len(self.lengths) / self.batch_size)
        if self.shuffle:
            return math.ceil(n_batches / self.world_size)
        return len(range(self.rank, n_batches, self.world_size))


class Collator:
    """Pads token columns to the longest row of the batch; carries idx, label and extras."""

    def __init__(self, pad_token_id: int, regression: bool):
        self.pad_token_id = pad_token_id
        self.regression = regression

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        batch: dict[str, torch.Tensor] = {}
        for key in TOKEN_COLUMNS:
            if key not in rows[0]:
                continue
            pad = self.pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor([list(r[key]) + [pad] * (width - len(r[key])) for r in rows], dtype=torch.long)
        batch["idx"] = torch.tensor([r["idx"] for r in rows], dtype=torch.long)
        batch["labels"] = torch.tensor(
            [r["label"] for r in rows], dtype=torch.float32 if self.regression else torch.long
        )
        if "weight" in rows[0]:
            batch["weight"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        if "teacher_probs" in rows[0]:
            batch["teacher_probs"] = torch.tensor([r["teacher_probs"] for r in rows], dtype=torch.float32)
        return batch


class _Rows(torch.utils.data.Dataset):
    """A thin view giving the DataLoader dict rows fetched in one Arrow read per batch."""

    def __init__(self, ds: datasets.Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return self.ds[int(i)]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        cols = self.ds[list(indices)]
        return [{k: cols[k][j] for k in cols} for j in range(len(indices))]


class TaskDataModule(L.LightningDataModule):
    """Loads, tokenizes and serves one task's splits (plus test-only tasks it predicts, e.g. AX)."""

    def __init__(self, cfg: RunConfig, card: TaskCard, tokenizer):
        super().__init__()
        self.cfg, self.card, self.tokenizer = cfg, card, tokenizer
        self.raw: dict[str, datasets.Dataset] = {}
        self.tokenized: dict[str, datasets.Dataset] = {}
        self.predict_names: list[str] = []
        self.eval_names: list[str] = list(card.eval_splits)

    # -- loading -------------------------------------------------------------------------
    def load(self, predict: bool = True) -> "TaskDataModule":
        """Parse and tokenize every split now (errors surface before any training)."""
        dcfg = self.cfg.data
        root, cache = data_dir(dcfg.dir), cache_dir(dcfg.cache_dir)
        wanted: list[tuple[str, TaskCard, str, int | None]] = []
        if self.card.train_split:
            wanted.append((self.card.train_split, self.card, self.card.train_split, dcfg.max_train_samples))
        wanted += [(s, self.card, s, dcfg.max_eval_samples) for s in self.card.eval_splits]
        if predict:
            wanted += [(s, self.card, s, dcfg.max_predict_samples) for s in self.card.test_splits]
            for extra in self.card.extra_test_tasks:
                other = load_task(extra)
                for s in other.test_splits:
                    wanted.append((f"{other.name}/{s}", other, s, dcfg.max_predict_samples))
        for key, card, split, limit in wanted:
            ds = load_split(card, split, root, dcfg.source, cache)
            if limit is not None and limit < len(ds):
                ds = ds.select(range(limit))
            self.raw[key] = ds
            self.tokenized[key] = self._tokenize(ds, card)
            if key not in self.eval_names and key != self.card.train_split:
                self.predict_names.append(key)
        return self

    def _tokenize(self, ds: datasets.Dataset, card: TaskCard) -> datasets.Dataset:
        tokenizer, max_length = self.tokenizer, self.cfg.data.max_length
        text_cols = [c for c in ("text_a", "text_b") if c in ds.column_names]
        return ds.map(
            lambda batch: encode(tokenizer, card, batch, max_length),
            batched=True,
            batch_size=1000,
            remove_columns=text_cols,
            desc=f"Tokenizing {card.name}",
        )

    # -- loaders -------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, ds: datasets.Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        rank, world = self._rank_world()
        lengths = ds.with_format("numpy")["length"]
        sampler = LengthBucketSampler(lengths, batch_size, shuffle, self.cfg.seed, rank, world,
                                      bucket=self.cfg.data.bucket_by_length)
        collate = Collator(self.tokenizer.pad_token_id or 0, self.card.format == "regression")
        return DataLoader(_Rows(ds), batch_sampler=sampler, collate_fn=collate,
                          num_workers=self.cfg.data.num_workers)

    def train_dataset(self) -> datasets.Dataset:
        return self.tokenized[self.card.train_split]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), self.cfg.data.batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.tokenized[s], self.cfg.data.eval_batch_size, False) for s in self.eval_names]

    def predict_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.tokenized[s], self.cfg.data.eval_batch_size, False) for s in self.predict_names]

    def card_of(self, key: str) -> TaskCard:
        """The task card a split key belongs to (``ax/test`` -> the AX card)."""
        return load_task(key.split("/")[0]) if "/" in key else self.card
