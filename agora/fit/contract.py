"""What a method (Agora, :mod:`agora.method`) may use of a fit, declared: nothing else is read.

A method runs inside a Lightning fit as a callback, beside a data module and a LightningModule. It
reads them only through these two protocols, which :class:`agora.data.datamodule.TaskDataModule` and
:class:`agora.fit.module.TaskModule` implement (a test checks both, member by member):

- :class:`FitData`: the task's rows as text (``inputs``), the rows a method adds tokenized like D
  (``tokenize_rows``), the unlabelled pool, the evaluation set E, and ``use_training_rows`` to serve
  D plus what the method adds (:class:`agora.data.datamodule.TrainingRows`);
- :class:`FitModule`: the last evaluation of every scored split (``last_eval``), and the student's
  logits for any tokenized rows (``logits_of``: a method scoring candidates).

The end of an epoch is told by Lightning's public ``trainer.is_last_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import datasets
import numpy as np

from agora.data.cards import TaskCard
from agora.data.datamodule import TrainingRows
from agora.data.evalset import EvalSet
from agora.data.pool import Pool

Segments = tuple[str, ...]


@runtime_checkable
class FitData(Protocol):
    """The data side of a fit, as a method sees it."""

    card: TaskCard
    evalset: EvalSet
    """E: whether it is carved, which split picks the best epoch, which split's mistakes drive generation."""
    pool: Pool | None
    """The unlabelled rows (``data.unlabelled``), or None."""

    def has_split(self, key: str) -> bool:
        """The split ``key`` (``train``, ``e_gen``, ``e_sel``, ``validation``, ...) is loaded."""

    def inputs(self, key: str) -> tuple[np.ndarray, list[Segments], np.ndarray]:
        """``(idx, inputs, labels)`` of a split, inputs as text segments (what G and the teacher read)."""

    def tokenized_split(self, key: str) -> datasets.Dataset:
        """A split's tokenized rows, in the order of :meth:`inputs`."""

    def tokenize_rows(self, idx: Sequence[int], inputs: Sequence[Segments], labels) -> datasets.Dataset:
        """New rows tokenized like the training split."""

    def use_training_rows(self, rows: TrainingRows | None) -> None:
        """Serve ``rows`` in the training loader from the next epoch on (None: D)."""


@runtime_checkable
class FitModule(Protocol):
    """The LightningModule of a fit, as a method sees it."""

    last_eval: dict[str, dict[str, np.ndarray]]
    """Split name -> its last gathered evaluation (``idx``, ``logits``, ``labels``), after every validation."""

    def logits_of(self, rows: datasets.Dataset, batch_size: int = 128) -> np.ndarray:
        """The student's logits for tokenized rows (eval mode, no gradients), in their order."""
