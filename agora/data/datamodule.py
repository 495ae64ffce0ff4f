"""The LightningDataModule: loads and tokenizes a task's splits, carves E, serves batches.

Splits are Arrow tables memory-mapped by ``datasets``; tokenization is a ``Dataset.map`` cached
by its fingerprint, so a second run starts without re-tokenizing. Batches are length-bucketed
and padded to their longest row (:mod:`agora.data.batches`).

What the training loader serves is D, the training split after E is carved, unless a method
gives it other rows through :meth:`TaskDataModule.use_training_rows` (Agora's training set: D
plus generated rows, with per-row columns; see :class:`TrainingRows`).
"""

from __future__ import annotations

from typing import Protocol

import datasets
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from agora.config import RunConfig
from agora.data.batches import BatchView, Collator, LengthBucketSampler, ResumableLoader
from agora.data.cards import TaskCard, load_task
from agora.data.evalset import EvalSet, split_e
from agora.data.pool import Pool, load_pool
from agora.data import formats
from agora.data.formats import format_of
from agora.data.integrity import verified
from agora.data.rows import inputs_of, rows_of  # noqa: F401  (re-exported)
from agora.data.splits import code_stamp, load_split
from agora.files import read_jsonl
from agora.paths import cache_dir, data_dir


def encode(tokenizer, card: TaskCard, batch: dict[str, list], max_length: int) -> dict[str, list]:
    """Tokenize a batch of rows the way the student reads them (see :mod:`agora.data.formats`)."""
    return format_of(card).encode(tokenizer, card, batch, max_length)


class TrainingRows(Protocol):
    """Rows the training loader serves instead of D (:meth:`TaskDataModule.use_training_rows`)."""

    columns: dict[str, np.ndarray]
    """Per-row columns collated into each batch beside the tokens (e.g. ``weight``, ``teacher_probs``)."""
    epoch_size: int | None
    """Rows drawn per epoch (None: all)."""
    sampler_weights: np.ndarray | None
    """Draw rows with replacement in proportion to these (None: a permutation)."""

    def dataset(self) -> datasets.Dataset:
        """The tokenized rows, in the order of ``columns``."""


class TaskDataModule(L.LightningDataModule):
    """Loads, tokenizes and serves one task's splits (plus test-only tasks it predicts, e.g. AX)."""

    def __init__(self, cfg: RunConfig, card: TaskCard, tokenizer):
        super().__init__()
        self.cfg, self.card, self.tokenizer = cfg, card, tokenizer
        self.raw: dict[str, datasets.Dataset] = {}
        self.tokenized: dict[str, datasets.Dataset] = {}
        self.predict_names: list[str] = []
        self.eval_names: list[str] = list(card.eval_splits)
        self.evalset = EvalSet.of(cfg, card)
        self.training_rows: TrainingRows | None = None
        self.pool: Pool | None = None

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
        if self.evalset.carve:
            self.split_eval_set()
            if self.evalset.extra_rows:
                self.append_train_rows(self.evalset.extra_rows)
        self.pool = load_pool(self) if self.card.train_split else None  # data.unlabelled, deduplicated
        return self

    def add_split(self, key: str, ds: datasets.Dataset, card: TaskCard | None = None, predict: bool = False) -> None:
        """Register a parsed split under ``key`` and tokenize it (cached); ``predict``: one of the
        splits ``trainer.predict`` writes (test splits, ``ax/test``)."""
        self.raw[key] = ds
        self.tokenized[key] = self._tokenize(ds, card or self.card)
        if predict and key not in self.predict_names:
            self.predict_names.append(key)

    def split_eval_set(self) -> None:
        """Agora's E (:class:`agora.data.evalset.EvalSet`): ``e_gen`` / ``e_sel`` carved from train and
        kept out of D; ``e_sel`` is evaluated each epoch, ``e_gen`` where its mistakes are needed.
        ``eval_on: dev``: both are the dev set."""
        e, train = self.evalset, self.card.train_split
        if e.on_dev:
            for name in ("e_gen", "e_sel"):
                self.raw[name], self.tokenized[name] = self.raw[self.card.select_split], self.tokenized[self.card.select_split]
            return
        labels = np.asarray(self.raw[train].with_format("numpy")["label"])
        n_dev = len(self.raw[self.card.select_split]) if self.card.eval_splits else len(labels)
        d, gen, sel = split_e(labels, e.size_for(len(labels), n_dev), e.seed, self.card.format == "regression",
                              e.gen_size)
        for name, positions in (("e_gen", gen), ("e_sel", sel), (train, d)):
            self.raw[name] = self.raw[train].select(positions)
            self.tokenized[name] = self.tokenized[train].select(positions)
        self.eval_names += ["e_sel"] + (["e_gen"] if e.e_gen else [])

    def append_train_rows(self, path: str) -> None:
        """Append rows of a JSONL file (``idx``, ``inputs`` as text segments, ``label`` name or score)
        to D, after E is carved: the additions of Agora's rounds (:mod:`agora.search`). They join D
        as ordinary rows (raw and tokenized), labelled by the teacher's argmax."""
        rows = read_jsonl(path)
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

    def has_split(self, key: str) -> bool:
        """The split ``key`` is loaded (``e_gen`` / ``e_sel`` once E is carved)."""
        return key in self.raw

    def tokenized_split(self, key: str) -> datasets.Dataset:
        """A split's tokenized rows, in the order of :meth:`inputs`."""
        return self.tokenized[key]

    def tokenize_rows(self, idx, inputs, labels) -> datasets.Dataset:
        """New rows (idx, inputs as text segments, labels) tokenized like the training split (in memory)."""
        rows = rows_of(self.card, idx, inputs, labels)
        features = format_of(self.card).features(self.card)
        new = self._tokenize(datasets.Dataset.from_dict(rows, features=datasets.Features({k: features[k] for k in rows})),
                             self.card)
        train = self.tokenized[self.card.train_split]
        return new.cast(train.features) if new.features != train.features else new

    def use_training_rows(self, rows: TrainingRows | None) -> None:
        """Serve ``rows`` (D and what a method adds, with per-row columns) in the training loader from
        the next epoch on; None: D. The Trainer must reload loaders every epoch
        (``reload_dataloaders_every_n_epochs=1``) when the rows change during a fit."""
        self.training_rows = rows

    def _tokenize(self, ds: datasets.Dataset, card: TaskCard) -> datasets.Dataset:
        """Token columns + ``length`` beside idx and label; other columns stay in ``raw`` (see :meth:`meta`)."""
        tokenizer, max_length = self.tokenizer, self.cfg.data.max_length
        code = code_stamp(*formats.CODE)  # part of the cache fingerprint
        return verified(lambda: ds.map(
            lambda batch, _code=code: encode(tokenizer, card, batch, max_length),
            batched=True,
            batch_size=1000,
            remove_columns=[c for c in ds.column_names if c not in ("idx", "label")],
            features=format_of(card).tokenized_features(card, tokenizer),
            desc=f"Tokenizing {card.name}",
        ), cache_dir(self.cfg.data.cache_dir) / "datasets", f"tokenizing {card.name}")

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
        # its own generator: creating an iterator draws a seed from it, never from the global generators
        generator = torch.Generator().manual_seed(self.cfg.seed)
        return (ResumableLoader if shuffle else DataLoader)(BatchView(ds, extras), batch_sampler=sampler, collate_fn=collate,
                                                            num_workers=self.cfg.data.num_workers, generator=generator)

    def train_dataloader(self) -> DataLoader:
        rows = self.training_rows
        if rows is None:
            return self._loader(self.tokenized[self.card.train_split], self.cfg.data.batch_size, shuffle=True)
        return self._loader(rows.dataset(), self.cfg.data.batch_size, shuffle=True, extras=rows.columns,
                            num_samples=rows.epoch_size, weights=rows.sampler_weights)

    @property
    def epoch_eval_names(self) -> list[str]:
        """The splits scored after each training epoch: all of :attr:`eval_names`, or with
        ``data.eval_dev: at_end`` all but the dev splits that choose nothing (scored at the end)."""
        if self.cfg.data.eval_dev == "every_epoch":
            return list(self.eval_names)
        later = set(self.card.eval_splits) - {self.evalset.select, self.evalset.gen}
        return [s for s in self.eval_names if s not in later]

    def val_dataloader(self) -> list[DataLoader]:
        fitting = getattr(self, "trainer", None) is not None and self.trainer.state.fn == "fit"
        names = self.epoch_eval_names if fitting else self.eval_names
        return [self._loader(self.tokenized[s], self.cfg.data.eval_batch_size, False) for s in names]

    def predict_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.tokenized[s], self.cfg.data.eval_batch_size, False) for s in self.predict_names]

    def card_of(self, key: str) -> TaskCard:
        """The task card a split key belongs to (``ax/test`` -> the AX card)."""
        return load_task(key.split("/")[0]) if "/" in key else self.card
