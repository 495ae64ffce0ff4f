"""What makes a fit resumable: a resumed fit ends exactly where the uninterrupted one does.

``output.resume_from`` (``last``: ``<run>/checkpoints/last.ckpt``, written after every epoch's
validation) restores the weights, the optimiser, the schedule and Lightning's loops; this module
restores the rest, for plain and Agora fits alike:

- **Randomness.** The global torch / numpy / python generators (dropout draws from torch's) are
  reseeded from ``(seed, epoch)`` at the first batch of every epoch (:class:`Resumable`), so an
  epoch draws the same whether the fit was resumed or not; no loader draws from them (every
  DataLoader has its own generator). A checkpoint written inside an epoch (``trainer.val_check_interval``
  below 1) also holds the generators' states, restored at the next batch.
- **The sampler's position.** Batches are drawn from ``(seed, epoch)``; the training loader tells
  Lightning how many it has given (:class:`agora.data.batches.ResumableLoader`), so a fit resumed
  inside an epoch goes on with the next batch of the same order.
- **The logs.** ``logs/metrics.csv`` keeps the rows written up to the checkpoint (the checkpoint
  records how many, flushed to disk when it is saved); rows written after it are dropped, since the
  resumed fit logs them again (:class:`RunLogger`). Lightning's own CSVLogger deletes the file.
- **What the fit counts between checkpoints**: the module's running training loss, Agora's
  per-row statistics of the epoch in progress (their own ``state_dict``).

A fit interrupted between checkpoints resumes from the last one: with the default checkpoints, from
the end of the last finished epoch, the interrupted epoch done again from its first batch; the
line printed when the fit resumes says which (:meth:`ResumePoint.line`).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from agora.errors import RecipeError
from agora.fit.seeds import stable_seed

KEY = "agora_resume"
"""Where :class:`Resumable` keeps its state in a checkpoint."""


def seed_epoch(seed: int, epoch: int) -> None:
    """Reseed the global torch / numpy / python generators from ``(seed, epoch)``."""
    value = stable_seed(seed, "epoch", epoch)
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def rng_states() -> dict[str, Any]:
    """The global generators' states as tensors and plain lists (a checkpoint loads with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "python": [version, list(internal), gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Resumable(L.Callback):
    """Per-epoch seeds, and in every checkpoint: where in the epoch it was written, the generators' states,
    and how many rows ``logs/metrics.csv`` held (flushed first). Part of every fit (:func:`agora.fit.run.run_fit`)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._restore: dict | None = None
        self._position: dict | None = None
        self.batches_run = 0
        """Training batches this fit ran (0: it stopped before training)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self._place_loaders(trainer)  # a fit resumed inside an epoch starts here, without on_train_epoch_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._place_loaders(trainer)

    def _place_loaders(self, trainer) -> None:
        """Lightning sets the epoch of a DataLoader's sampler, not of its batch sampler (ours): set it, so each
        epoch draws its own order, and where a checkpoint written inside this epoch left the loader."""
        for loader in _loaders(trainer.train_dataloader):
            sampler = getattr(loader, "batch_sampler", None)
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(trainer.current_epoch)
            if self._position is not None and self._position["epoch"] == trainer.current_epoch \
                    and callable(getattr(loader, "resume_at", None)):
                loader.resume_at(self._position["epoch"], self._position["batches"])
        self._position = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:  # the first batch of an epoch, resumed or not
            seed_epoch(self.seed, trainer.current_epoch)
        elif self._restore is not None:  # the first batch after a checkpoint written inside this epoch
            set_rng_states(self._restore)
        self._restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches_run += 1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        rows = None
        for logger in trainer.loggers:
            if isinstance(logger, RunLogger) and trainer.is_global_zero:
                logger.save()  # the rows up to this checkpoint are on disk, whatever happens next
                rows = logger.rows
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        checkpoint[KEY] = {"epoch": trainer.current_epoch, "batches": int(progress.processed),
                           "epoch_batches": int(trainer.num_training_batches), "log_rows": rows, "rng": rng_states()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get(KEY) or {}
        inside = 0 < state.get("batches", 0) < state.get("epoch_batches", 0)
        self._restore = state.get("rng") if inside else None
        self._position = {"epoch": state["epoch"], "batches": state["batches"]} if inside else None


def _loaders(loader) -> list:
    """The DataLoaders behind ``trainer.train_dataloader`` (one, or a list or mapping of them)."""
    if isinstance(loader, dict):
        return [x for v in loader.values() for x in _loaders(v)]
    if isinstance(loader, (list, tuple)):
        return [x for v in loader for x in _loaders(v)]
    return [] if loader is None else [loader]


class RunLogger(CSVLogger):
    """``<run>/logs/metrics.csv``, counting the rows it logs. Resumed (``keep_rows``: what the checkpoint
    recorded), it keeps that many rows of the earlier file and drops the rest, which the fit logs again."""

    def __init__(self, run_dir: Path, keep_rows: int | None = None):
        super().__init__(str(run_dir), name="logs", version="")
        self.rows = 0
        self._kept: tuple[list[str], list[dict]] | None = None
        path = Path(self.log_dir) / "metrics.csv"
        if keep_rows is not None and path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                self._kept = (list(reader.fieldnames or []), list(itertools.islice(reader, keep_rows)))

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            writer = CSVLogger.experiment.fget(self)  # Lightning's writer deletes an earlier metrics.csv
            if self._kept is not None and self._kept[1]:
                fields, rows = self._kept
                with open(writer.metrics_file_path, "w", newline="", encoding="utf-8") as handle:
                    out = csv.DictWriter(handle, fieldnames=fields)
                    out.writeheader()
                    out.writerows(rows)
                writer.metrics_keys = list(fields)
                self.rows = len(rows)
            self._kept = None
        return self._experiment

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        self.rows += 1


def resume_path(resume_from: str | None, run_dir: Path) -> str | None:
    """``output.resume_from``: a checkpoint path, or ``last`` for ``<run>/checkpoints/last.ckpt``."""
    if resume_from is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if resume_from == "last" else Path(resume_from).expanduser()
    if not path.is_file():
        raise RecipeError(f"output.resume_from: no checkpoint at {path}" + (
            " (a fit writes it after every epoch unless output.save_checkpoints is false); leave resume_from "
            "unset to start a new fit" if resume_from == "last" else ""))
    return str(path)


@dataclasses.dataclass
class ResumePoint:
    """Where a checkpoint leaves a fit, read before any work."""

    path: str
    epoch: int
    step: int
    batches: int | None
    """Batches of ``epoch`` done when it was written; None for a checkpoint without this module's state."""
    epoch_batches: int | None
    log_rows: int | None
    state_keys: dict[str, tuple]
    """The model's parameters and buffers in the checkpoint, with their shapes."""

    @classmethod
    def read(cls, path: str) -> ResumePoint:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # torch.load raises many kinds on a file that is not a checkpoint
            raise RecipeError(f"output.resume_from: {path} is not a readable Lightning checkpoint "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
            raise RecipeError(f"output.resume_from: {path} is not a Lightning checkpoint of a fit (no state_dict or loops)")
        mine = ckpt.get(KEY) or {}
        return cls(path=path, epoch=int(ckpt.get("epoch", 0)), step=int(ckpt.get("global_step", 0)),
                   batches=mine.get("batches"), epoch_batches=mine.get("epoch_batches"), log_rows=mine.get("log_rows"),
                   state_keys={k: tuple(v.shape) for k, v in ckpt["state_dict"].items()})

    @property
    def inside_epoch(self) -> bool:
        return self.batches is not None and 0 < self.batches < (self.epoch_batches or 0)

    def check_fits(self, module: torch.nn.Module, model_name: str) -> None:
        """RecipeError when the checkpoint's weights are not this recipe's model's (names or shapes)."""
        own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        missing, unexpected = sorted(own.keys() - self.state_keys.keys()), sorted(self.state_keys.keys() - own.keys())
        shapes = sorted(k for k in own.keys() & self.state_keys.keys() if own[k] != self.state_keys[k])
        if missing or unexpected or shapes:
            detail = "; ".join(part for part in (
                f"{len(missing)} weights missing (e.g. {missing[0]})" if missing else "",
                f"{len(unexpected)} unknown weights (e.g. {unexpected[0]})" if unexpected else "",
                f"{len(shapes)} of another shape (e.g. {shapes[0]}: {self.state_keys[shapes[0]]} vs {own[shapes[0]]})"
                if shapes else "") if part)
            raise RecipeError(f"output.resume_from: {self.path} holds another model than model.name '{model_name}' "
                              f"with this task's head ({detail}); resume with the recipe that wrote it")

    def line(self) -> str:
        """What the resumed fit does, in one line."""
        where = f"resuming from {self.path}"
        if self.batches is None:
            return f"{where} (epoch {self.epoch}, step {self.step})"
        if self.inside_epoch:
            return (f"{where}: written in epoch {self.epoch} after batch {self.batches} of {self.epoch_batches} "
                    f"(step {self.step}); the epoch goes on from batch {self.batches + 1}, in the same order and with "
                    "the same random draws")
        return (f"{where}: written at the end of epoch {self.epoch} (step {self.step}); training goes on with epoch "
                f"{self.epoch + 1} from its first batch (anything done after that checkpoint is done again)")


def atomic_checkpoint_io():
    """Lightning's ``TorchCheckpointIO``, each checkpoint written to a temporary file beside its name and
    renamed into place (:func:`agora.files.atomic_write`): a full disk or a kill mid-write never leaves part
    of a checkpoint under its name, and the ``last.ckpt`` written before stays whole (resumable)."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from agora.files import atomic_write

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own way
                return super().save_checkpoint(checkpoint, path, storage_options)
            atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))

    return AtomicCheckpointIO()
