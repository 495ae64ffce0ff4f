"""Batches: length-bucketed, sharded by rank; rows fetched in one Arrow read; padded to their longest.

Batches group examples of similar length (shuffled in "megabatches", as in the Hugging Face
``group_by_length`` option) and are padded to the longest example in the batch. Samplers shard
batches across ranks themselves, so every rank gets the same number of training batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from agora.data.formats import pad_token_columns


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
        self.skip = 0
        """Batches of this epoch's order not to give again (a fit resumed inside an epoch, :class:`ResumableLoader`)."""

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
        for batch in self._batches()[self.rank :: self.world_size][self.skip :]:
            yield batch.tolist()

    def __len__(self) -> int:
        n_batches = math.ceil((self.num_samples if self.shuffle else len(self.lengths)) / self.batch_size)
        if self.shuffle:
            return math.ceil(n_batches / self.world_size)
        if len(self.lengths) and n_batches < self.world_size:
            return 1
        return len(range(self.rank, n_batches, self.world_size))


class ResumableLoader(DataLoader):
    """The training loader, which Lightning can checkpoint inside an epoch: its state is the epoch and how many
    batches it has given. Restored (a fit resumed from such a checkpoint), its next pass over the same epoch
    skips them; the order itself depends on ``(seed, epoch)`` alone (:class:`LengthBucketSampler`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._given = 0
        self._resume: dict | None = None

    def __iter__(self):
        sampler = self.batch_sampler
        resume, self._resume = self._resume, None
        sampler.skip = int(resume["batches"]) if resume and resume.get("epoch") == sampler.epoch else 0
        self._given = sampler.skip
        try:
            for batch in super().__iter__():
                self._given += 1
                yield batch
        finally:
            sampler.skip = 0

    def state_dict(self) -> dict:
        return {"epoch": int(self.batch_sampler.epoch), "batches": int(self._given)}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)

    def resume_at(self, epoch: int, batches: int) -> None:
        """Give epoch ``epoch``'s batches from number ``batches`` on (the fit's own record of a checkpoint:
        Lightning restores loader states only where it builds its loaders after the checkpoint is loaded)."""
        self.load_state_dict({"epoch": int(epoch), "batches": int(batches)})


TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


class Collator:
    """Pads token columns to the longest row of the batch; carries idx, label, and every other column
    of the rows as a tensor of the batch (bool, float32 or int64: the training rows' per-row columns,
    e.g. Agora's weights and teacher probabilities)."""

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
        for name in rows[0].keys() - {*TOKEN_COLUMNS, "idx", "label", "length"}:
            values = np.asarray([r[name] for r in rows])
            dtype = torch.bool if values.dtype == bool else torch.float32 if values.dtype.kind == "f" else torch.long
            batch[name] = torch.as_tensor(values, dtype=dtype)
        return batch


class BatchView(torch.utils.data.Dataset):
    """A thin view giving the DataLoader dict rows fetched in one Arrow read per batch.

    ``extras``: per-row numpy columns (e.g. Agora's weight, teacher_probs, is_generated) added to
    each row without touching the Arrow table.
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
