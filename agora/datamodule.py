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
from agora.formats import format_of, pad_token_columns
from agora.paths import cache_dir, data_dir
from agora.splits import code_stamp, is_pair, load_split  # noqa: F401  (is_pair re-exported)
from agora.tasks import TaskCard, load_task

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def encode(tokenizer, card: TaskCard, batch: dict[str, list], max_length: int) -> dict[str, list]:
    """Tokenize a batch of rows the way the student reads them (see :mod:`agora.formats`)."""
    return format_of(card).encode(tokenizer, card, batch, max_length)


def inputs_of(card: TaskCard, rows: dict[str, list]) -> list[tuple[str, ...]]:
    """Rows as text segments: ``(text_a,)``, ``(text_a, text_b)``, or for multiple choice
    ``(context, "", option_1, ..., option_k)`` (the teacher's ``(context, question, options)`` with
    the question folded into each option, as the student reads it)."""
    if card.format == "multiple_choice":
        return [(a, "", *options) for a, options in zip(rows["text_a"], rows["choices"])]
    if "text_b" in rows:
        return list(zip(rows["text_a"], rows["text_b"]))
    return [(a,) for a in rows["text_a"]]


def rows_of(card: TaskCard, idx, inputs, labels) -> dict[str, list]:
    """The inverse of :func:`inputs_of`: row columns (idx, text columns, label) for new inputs."""
    rows: dict[str, list] = {"idx": [int(i) for i in idx]}
    if card.format == "multiple_choice":
        rows["text_a"] = [seg[0] for seg in inputs]
        rows["choices"] = [list(seg[2:]) for seg in inputs]
    else:
        rows["text_a"] = [seg[0] for seg in inputs]
        if is_pair(card):
            rows["text_b"] = [seg[1] for seg in inputs]
    rows["label"] = [float(x) if card.format == "regression" else int(x) for x in labels]
    return rows


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length; shuffled per epoch (seed + epoch) and sharded by rank.

    Training (``shuffle=True``): indices are shuffled, cut into megabatches of 50 batches, each
    megabatch sorted by length and cut into batches, then the batch order is shuffled. Batches are
    padded (by repeating the first ones) to a multiple of ``world_size`` so every rank steps the
    same number of times. Evaluation (``shuffle=False``): sorted by length, no padding; each rank
    takes every ``world_size``-th batch, and predictions are gathered and de-duplicated by idx. A
    split with fewer batches than ranks is cut into one smaller batch per rank (a row repeated
    where there are fewer rows than ranks; the repeat is dropped when de-duplicating).

    Agora (training only): ``num_samples`` rows per epoch (default: all), drawn without
    replacement, or with replacement in proportion to ``weights`` (``reweight_mode: sampler``);
    the draw depends on (seed, epoch) only, so every rank draws the same rows.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, bucket: bool = True, megabatch: int = 50,
                 num_samples: int | None = None, weights: np.ndarray | None = None):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.bucket, self.megabatch = rank, world_size, bucket, megabatch
        self.num_samples = len(self.lengths) if num_samples is None or not shuffle else int(num_samples)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable") if self.bucket else np.arange(n)
            batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
            if n and len(batches) < self.world_size:  # every rank needs a batch (Lightning rejects an empty loader)
                batches = [part if len(part) else order[:1] for part in np.array_split(order, self.world_size)]
            return batches
        rng = np.random.default_rng((self.seed, self.epoch))
        if self.weights is not None:
            order = rng.choice(n, size=self.num_samples, replace=True, p=self.weights / self.weights.sum())
        else:
            order = rng.permutation(n)[: self.num_samples]
        n = len(order)
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
        n_batches = math.ceil((self.num_samples if self.shuffle else len(self.lengths)) / self.batch_size)
        if self.shuffle:
            return math.ceil(n_batches / self.world_size)
        if len(self.lengths) and n_batches < self.world_size:
            return 1
        return len(range(self.rank, n_batches, self.world_size))


class Collator:
    """Pads token columns to the longest row of the batch; carries idx, label and extras."""

    def __init__(self, pad_token_id: int, regression: bool):
        self.pad_token_id = pad_token_id
        self.regression = regression

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        # [batch, len], or [batch, n_choices, len] for multiple choice; mask 1 on stored tokens
        batch: dict[str, torch.Tensor] = pad_token_columns(rows, self.pad_token_id)
        batch["idx"] = torch.tensor([r["idx"] for r in rows], dtype=torch.long)
        batch["labels"] = torch.tensor(
            [r["label"] for r in rows], dtype=torch.float32 if self.regression else torch.long
        )
        if "weight" in rows[0]:
            batch["weight"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        if "teacher_probs" in rows[0]:
            batch["teacher_probs"] = torch.tensor([r["teacher_probs"] for r in rows], dtype=torch.float32)
        if "is_generated" in rows[0]:
            batch["is_generated"] = torch.tensor([r["is_generated"] for r in rows], dtype=torch.bool)
        return batch


class _Rows(torch.utils.data.Dataset):
    """A thin view giving the DataLoader dict rows fetched in one Arrow read per batch.

    ``extras``: per-row numpy columns (Agora's weight, teacher_probs, is_generated) added to each
    row without touching the Arrow table.
    """

    def __init__(self, ds: datasets.Dataset, extras: dict[str, np.ndarray] | None = None):
        self.ds = ds
        self.extras = extras or {}

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        cols = self.ds[list(indices)]
        cols.update({k: v[np.asarray(indices, dtype=np.int64)].tolist() for k, v in self.extras.items()})
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
        # Set by agora.callback.AgoraCallback: tokenized generated rows appended to the training
        # split, per-row extras over both (weight, teacher_probs, is_generated), sampler settings.
        self.generated: datasets.Dataset | None = None
        self.train_extras: dict[str, np.ndarray] = {}
        self.sampler_weights: np.ndarray | None = None
        self.epoch_size: int | None = None

    # -- loading -------------------------------------------------------------------------
    def load(self, predict: bool = True) -> "TaskDataModule":
        """Parse and tokenize every split now (errors surface before any training). In a fit of
        Agora's rounds (``cfg.trial``) E is carved even with Agora off and D's additions are appended."""
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
            ds = load_split(card, split, root, dcfg.source, cache, dcfg.files.get(key))
            if limit is not None and limit < len(ds):
                ds = ds.select(range(format_of(card).whole_groups(ds, limit)))
            self.add_split(key, ds, card, predict=key not in self.eval_names and key != self.card.train_split)
        trial = self.cfg.trial
        if (self.cfg.agora.enabled or trial is not None) and self.card.train_split:
            self.split_eval_set(seed=None if trial is None else trial.e_seed,
                                with_e_gen=trial is not None and self.cfg.agora.enabled)
            if trial is not None and trial.extra_rows:
                self.append_train_rows(trial.extra_rows)
        return self

    def add_split(self, key: str, ds: datasets.Dataset, card: TaskCard | None = None, predict: bool = False) -> None:
        """Register a parsed split under ``key`` and tokenize it (cached); ``predict``: one of the
        splits ``trainer.predict`` writes (test splits, ``ax/test``)."""
        self.raw[key] = ds
        self.tokenized[key] = self._tokenize(ds, card or self.card)
        if predict and key not in self.predict_names:
            self.predict_names.append(key)

    def split_eval_set(self, seed: int | None = None, with_e_gen: bool = False) -> None:
        """Agora's E: ``e_gen`` / ``e_sel`` splits carved from train (kept out of D) with ``seed``
        (default: the run's), see :mod:`agora.evalset`; ``e_sel`` is also evaluated each epoch, and
        ``e_gen`` where its mistakes are needed. ``eval_on: dev``: both are dev."""
        from agora.evalset import default_e_size, split_e

        acfg, train = self.cfg.agora, self.card.train_split
        if acfg.eval_on == "dev":
            for name in ("e_gen", "e_sel"):
                self.raw[name], self.tokenized[name] = self.raw[self.card.select_split], self.tokenized[self.card.select_split]
            return
        labels = np.asarray(self.raw[train].with_format("numpy")["label"])
        n_dev = len(self.raw[self.card.select_split]) if self.card.eval_splits else len(labels)
        size = acfg.e_size or default_e_size(len(labels), n_dev, acfg.e_max_fraction)
        d, gen, sel = split_e(labels, size, self.cfg.seed if seed is None else seed, self.card.format == "regression")
        for name, positions in (("e_gen", gen), ("e_sel", sel), (train, d)):
            self.raw[name] = self.raw[train].select(positions)
            self.tokenized[name] = self.tokenized[train].select(positions)
        self.eval_names.append("e_sel")
        if with_e_gen or (acfg.expand_every_n_epochs > 0 and acfg.expand_from == "mistakes"):
            self.eval_names.append("e_gen")  # the student's mistakes on it drive generation

    def append_train_rows(self, path: str) -> None:
        """Append rows of a JSONL file (``idx``, ``inputs`` as text segments, ``label`` name or score)
        to D, after E is carved: the additions of Agora's rounds (:mod:`agora.search`). They join D
        as ordinary rows (raw and tokenized), labelled by the teacher's argmax."""
        import json
        from pathlib import Path

        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows:
            return
        train = self.card.train_split
        names = list(self.card.labels or [])
        labels = [r["label"] if self.card.format == "regression" or not isinstance(r["label"], str)
                  else names.index(r["label"]) for r in rows]
        columns = rows_of(self.card, [r["idx"] for r in rows], [tuple(r["inputs"]) for r in rows], labels)
        raw = self.raw[train]
        for name in raw.column_names:
            columns.setdefault(name, [None] * len(rows))
        new = datasets.Dataset.from_dict({k: columns[k] for k in raw.column_names}, features=raw.features)
        self.raw[train] = datasets.concatenate_datasets([raw, new])
        tokenized = self._tokenize(new, self.card)
        if tokenized.features != self.tokenized[train].features:
            tokenized = tokenized.cast(self.tokenized[train].features)
        self.tokenized[train] = datasets.concatenate_datasets([self.tokenized[train], tokenized])

    def inputs(self, key: str) -> tuple[np.ndarray, list[tuple[str, ...]], np.ndarray]:
        """``(idx, inputs, labels)`` of a split, inputs as the text segments G and the teacher read
        (see :func:`inputs_of`)."""
        raw = self.raw[key]
        columns = [c for c in ("text_a", "text_b", "choices") if c in raw.column_names]
        rows = raw.select_columns(["idx", "label", *columns]).to_dict()
        return np.asarray(rows["idx"], dtype=np.int64), inputs_of(self.card, rows), np.asarray(rows["label"])

    def add_generated(self, idx, inputs, labels) -> None:
        """Append Agora's generated rows to D: only the new rows are tokenized (in memory, no file)."""
        train = self.tokenized[self.card.train_split]
        rows = rows_of(self.card, idx, inputs, labels)
        features = format_of(self.card).features(self.card)
        ds = datasets.Dataset.from_dict(rows, features=datasets.Features({k: features[k] for k in rows}))
        new = self._tokenize(ds, self.card)
        if new.features != train.features:
            new = new.cast(train.features)
        self.generated = new if self.generated is None else datasets.concatenate_datasets([self.generated, new])

    def _tokenize(self, ds: datasets.Dataset, card: TaskCard) -> datasets.Dataset:
        """Token columns + ``length`` beside idx and label; other columns stay in ``raw`` (see :meth:`meta`)."""
        tokenizer, max_length = self.tokenizer, self.cfg.data.max_length
        code = code_stamp(format_of(card).__class__)  # part of the cache fingerprint
        return ds.map(
            lambda batch, _code=code: encode(tokenizer, card, batch, max_length),
            batched=True,
            batch_size=1000,
            remove_columns=[c for c in ds.column_names if c not in ("idx", "label")],
            features=format_of(card).tokenized_features(card, tokenizer),
            desc=f"Tokenizing {card.name}",
        )

    def meta(self, key: str, idx) -> dict[str, list] | None:
        """The columns a split's metric and prediction rows need (MultiRC groups, ReCoRD candidates,
        RACE ids and levels), for the rows ``idx`` in that order; None when the format needs none."""
        card = self.card_of(key)
        columns = format_of(card).meta_columns(card)
        if not columns or key not in self.raw:
            return None
        raw = self.raw[key]
        all_idx = np.asarray(raw.with_format("numpy")["idx"])
        order = np.argsort(all_idx, kind="stable")
        positions = order[np.searchsorted(all_idx[order], np.asarray(idx))]
        return raw.select_columns(columns)[positions.tolist()]

    # -- loaders -------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, ds: datasets.Dataset, batch_size: int, shuffle: bool, extras=None,
                num_samples: int | None = None, weights: np.ndarray | None = None) -> DataLoader:
        rank, world = self._rank_world()
        lengths = ds.with_format("numpy")["length"]
        sampler = LengthBucketSampler(lengths, batch_size, shuffle, self.cfg.seed, rank, world,
                                      bucket=self.cfg.data.bucket_by_length, num_samples=num_samples,
                                      weights=weights)
        collate = Collator(self.tokenizer.pad_token_id or 0, self.card.format == "regression")
        return DataLoader(_Rows(ds, extras), batch_sampler=sampler, collate_fn=collate,
                          num_workers=self.cfg.data.num_workers)

    def train_dataset(self) -> datasets.Dataset:
        """D: the training split, then Agora's generated rows (appended, never re-tokenized)."""
        ds = self.tokenized[self.card.train_split]
        if self.generated is not None and len(self.generated):
            ds = datasets.concatenate_datasets([ds, self.generated])
        return ds

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), self.cfg.data.batch_size, shuffle=True, extras=self.train_extras,
                            num_samples=self.epoch_size, weights=self.sampler_weights)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.tokenized[s], self.cfg.data.eval_batch_size, False) for s in self.eval_names]

    def predict_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.tokenized[s], self.cfg.data.eval_batch_size, False) for s in self.predict_names]

    def card_of(self, key: str) -> TaskCard:
        """The task card a split key belongs to (``ax/test`` -> the AX card)."""
        return load_task(key.split("/")[0]) if "/" in key else self.card
