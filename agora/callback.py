"""``AgoraCallback``: Agora inside one Lightning fit (expand, distil, reweight).

Method card
-----------
What: the three parts of Agora that act between epochs of one training run (AGORA.md, "Inside one
training run"); the outer loop over hyperparameter sets and rounds lives around the fits.

1. **Expand** (de Wynter 2020, arXiv 2010.07990, the loop's "generate new inputs from the
   mistakes, label them with S, append them to D"): every ``expand_every_n_epochs`` epochs, take
   the student's mistakes on ``E_gen`` (``expand_from: mistakes``; or every row of E_gen, ``all``;
   or every original row of D, ``train``), make ``variants_per_mistake`` variants of each with the
   generator G, label them with the teacher S through its cache, drop those below
   ``min_teacher_confidence``, optionally ``balance_generated``, and append them to D for the
   following epochs (:func:`agora.expand.expand`). ``E_sel`` is never used for generation. No
   expansion after the last epoch (nothing would train on it).
2. **Distil** (Hinton et al. 2015; soft targets are our choice, see AGORA.md): the loss of
   :meth:`agora.module.AgoraModule.training_loss` is ``(1 - alpha) * CE + alpha * T^2 * KL`` on
   every row with teacher probabilities: D's rows (scored once when the fit starts, if
   ``alpha > 0``) and generated rows, which train on the soft term alone with
   ``generated_targets: soft`` (:mod:`agora.distill`).
3. **Reweight** (our choice, :mod:`agora.reweight`): after every epoch, per-example weights from
   the student's per-example loss (``reweight_by: loss``; or 0/1 error, ``error``) on the rows it
   trained on that epoch (the training-step loss against the hard label, in train mode: no extra
   forward pass over D; a row not seen keeps its last value), strength ``gamma``, generated rows
   capped at a share ``rho`` of the total weight. Applied as loss weights (``reweight_mode:
   loss``) or through the sampler (``sampler``: rows drawn with replacement in proportion).

Our choices around them: an epoch draws as many rows as D had at the start (``epoch_size``),
so a run with the callback makes exactly as many optimiser steps as the plain run, and the LR
schedule is unchanged. The callback acts once per epoch, at the end-of-epoch validation (after
the student's E_gen predictions are gathered, before checkpoints are saved), so the checkpoint of
an epoch holds its expansion and weights.

DDP: the per-example statistics are gathered from all ranks and de-duplicated by idx; the teacher
and the generator run on rank 0 only and the new rows and the weights are broadcast from it, so
every rank trains on identical data; a digest of the state is compared across ranks every epoch.
Only rank 0 writes files (the teacher cache, ``<run>/agora/generated.jsonl``).

Resume: ``state_dict`` holds the generated rows, their teacher probabilities, the weights, the
per-example statistics, the epochs done and the report; everything is a plain type or a tensor,
so a checkpoint loads with ``torch.load(weights_only=True)``. Randomness (our choice): the
global torch / numpy / python generators are reseeded from ``(seed, epoch)`` at the first batch
of every epoch (dropout), the sampler draws from ``(seed, epoch)`` and G from ``(seed, epoch,
source idx)``, so a run resumed from an end-of-epoch checkpoint draws exactly what the
uninterrupted run draws, with no generator snapshot to carry.

Reported per epoch (``metrics.json`` key ``agora``, and the Lightning loggers under ``agora/``):
mistakes on E_gen, generated rows kept and rejected by reason, label balance of the kept rows,
agreement of the teacher with the source's gold label, teacher forward passes and cache hits,
weight statistics.

Hyperparameters (``agora:`` section of the recipe; all usable in a search space): see
:class:`agora.config.AgoraConfig`.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from agora.config import RunConfig
from agora.distill import validate_distill_settings
from agora.expand import Expansion, expand, find_mistakes
from agora.generators import resolve_generator, stable_seed
from agora.module import gather_objects, merge_by_idx
from agora.reweight import example_weights, weight_stats
from agora.tasks import TaskCard

GENERATED_IDX_BASE = 1 << 40
"""Generated row ``j`` has idx ``GENERATED_IDX_BASE + j`` (never an original row's idx)."""


def teacher_task_type(card: TaskCard) -> str:
    return {"regression": "regression", "multiple_choice": "multiple_choice"}.get(card.format, "classification")


def build_teacher(cfg: RunConfig, card: TaskCard):
    """The teacher of a recipe, checked now (path, label names) and loaded lazily; cache in memory
    until :meth:`agora.teacher.Teacher.attach_cache` (rank 0). Raises ModelNotFoundError, ModelError."""
    from agora.teacher import Teacher

    tcfg = cfg.teacher
    labels = card.labels if teacher_task_type(card) == "classification" else None
    return Teacher(tcfg.path, labels, teacher_task_type(card), cache_dir=None, batch_size=tcfg.batch_size,
                   max_length=tcfg.max_length, device="cpu", label_map=tcfg.label_map, lazy=True)


def per_example_stats(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(loss, error)`` per row against the hard label: CE (squared error for regression) and 0/1."""
    logits = logits.detach().float()
    if regression:
        loss = (logits[:, 0] - labels.float()) ** 2
    else:
        loss = F.cross_entropy(logits, labels.long(), reduction="none")
    loss = loss.cpu().numpy().astype(np.float64)
    error = find_mistakes(logits.cpu().numpy(), labels.cpu().numpy(), regression).astype(np.float64)
    return loss, error


class AgoraCallback(L.Callback):
    """Expand the student's mistakes, distil from a teacher, reweight by metric (see the module docstring).

    Args:
        cfg: the resolved recipe (``agora``, ``teacher``, ``seed``, ``data``).
        card: the task card.
        teacher: a :class:`agora.teacher.Teacher` (tests, benchmarks); built from ``cfg.teacher``
            when None and the settings need one.
        output_dir: the run directory; rank 0 writes ``agora/generated.jsonl`` there at the end.

    Raises:
        RecipeError: alpha outside [0, 1], temperature <= 0, unknown generator.
        ModelNotFoundError / ModelError: the teacher path does not exist, or its label names do
            not match the task's.

    Example::

        callback = AgoraCallback(cfg, card)          # cfg.agora.enabled, cfg.teacher.path set
        trainer = L.Trainer(callbacks=[callback], ...)
        trainer.fit(module, datamodule=data)         # a TaskDataModule loaded with agora enabled
        callback.report()                            # what happened, per epoch
    """

    def __init__(self, cfg: RunConfig, card: TaskCard, teacher=None, output_dir=None):
        acfg = cfg.agora
        validate_distill_settings(acfg.alpha, acfg.temperature)
        resolve_generator(acfg.generator)
        self.cfg, self.card, self.acfg = cfg, card, acfg
        self.regression = card.format == "regression"
        self.teacher = teacher if teacher is not None else (build_teacher(cfg, card) if acfg.needs_teacher() else None)
        self.output_dir = output_dir
        self.dm = None
        self.rank = 0
        self._mistake_idx: np.ndarray | None = None
        # D (set in setup) and the state (state_dict)
        self.d_idx = np.zeros(0, np.int64)
        self.d_inputs: list[tuple[str, ...]] = []
        self.d_labels = np.zeros(0)
        self.d_probs: np.ndarray | None = None
        self.gen_inputs: list[tuple[str, ...]] = []
        self.gen_labels: list = []
        self.gen_probs = np.zeros((0, 0), np.float32)
        self.gen_sources = np.zeros(0, np.int64)
        self.gen_epochs = np.zeros(0, np.int64)
        self.weights: np.ndarray | None = None
        self.last_loss = np.zeros(0)
        self.last_error = np.zeros(0)
        self.epochs_done: list[int] = []
        self.history: list[dict] = []
        self.teacher_summary: dict[str, Any] = {}
        self._batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    # ------------------------------------------------------------------ setup

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "add_generated") or "e_gen" not in dm.raw:
            raise RuntimeError("AgoraCallback needs a TaskDataModule loaded with agora.enabled (it carves E_gen/E_sel)")
        self.dm, self.rank = dm, trainer.global_rank
        trainer.reload_dataloaders_every_n_epochs = 1  # D grows between epochs: rebuild the (cheap) loaders
        self.d_idx, self.d_inputs, self.d_labels = dm.inputs(self.card.train_split)
        dm.epoch_size = len(self.d_idx)  # as many steps per epoch as the plain run
        if self.teacher is not None and self.rank == 0:
            from agora.paths import cache_dir

            tcfg = self.cfg.teacher
            self.teacher.attach_cache(tcfg.cache_dir or cache_dir(self.cfg.data.cache_dir) / "teacher")
            self.teacher.device = str(trainer.strategy.root_device) if tcfg.device == "auto" else tcfg.device
        if self.acfg.alpha > 0:
            self.d_probs, self.teacher_summary = trainer.strategy.broadcast(self._score_d() if self.rank == 0 else None)
        n = len(self.d_idx) + len(self.gen_inputs)
        if len(self.last_loss) != n:
            self.last_loss, self.last_error = np.full(n, np.nan), np.full(n, np.nan)
        self._rebuild_generated()

    def _score_d(self) -> tuple[np.ndarray, dict]:
        calls, hits, start = self.teacher.forward_calls, self.teacher.cache.hits, time.perf_counter()
        probs = self.teacher.score(self.d_inputs)
        agree = find_mistakes(probs, self.d_labels, self.regression) == 0
        return probs, {"train_rows_scored": len(probs), "train_agreement": float(agree.mean()) if len(agree) else None,
                       "forward_calls": self.teacher.forward_calls - calls, "cache_hits": self.teacher.cache.hits - hits,
                       "seconds": round(time.perf_counter() - start, 3)}

    def _rebuild_generated(self) -> None:
        """Put the generated rows of the state into the data module (after setup or a restore)."""
        if self.dm is None:
            return
        self.dm.generated = None
        if self.gen_inputs:
            self.dm.add_generated(GENERATED_IDX_BASE + np.arange(len(self.gen_inputs)), self.gen_inputs, self.gen_labels)
        self._apply()

    def _apply(self) -> None:
        """Per-row columns over D + generated rows: is_generated, teacher_probs, weight or sampler weights."""
        n_d, n_g = len(self.d_idx), len(self.gen_inputs)
        extras: dict[str, np.ndarray] = {"is_generated": np.r_[np.zeros(n_d, bool), np.ones(n_g, bool)]}
        width = self.d_probs.shape[1] if self.d_probs is not None else (self.gen_probs.shape[1] if n_g else 0)
        if width:
            d_probs = self.d_probs if self.d_probs is not None else np.full((n_d, width), np.nan, np.float32)
            extras["teacher_probs"] = np.concatenate([d_probs, self.gen_probs.reshape(n_g, width)]).astype(np.float32)
        weights = self.weights if self.weights is not None and len(self.weights) == n_d + n_g else None
        if self.acfg.reweight_mode == "loss":
            extras["weight"] = (np.ones(n_d + n_g) if weights is None else weights).astype(np.float32)
            self.dm.sampler_weights = None
        else:
            self.dm.sampler_weights = weights
        self.dm.train_extras = extras

    # ------------------------------------------------------------------ per batch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:  # after the loader's own draws: the same stream whether resumed or not
            seed = stable_seed(self.cfg.seed, "epoch", trainer.current_epoch)
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(outputs, dict) and "logits" in outputs:
            loss, error = per_example_stats(outputs["logits"], batch["labels"], self.regression)
            self._batches.append((batch["idx"].cpu().numpy(), loss, error))

    # ------------------------------------------------------------------ per epoch

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.dm is None:
            return
        epoch = trainer.current_epoch
        progress = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if epoch in self.epochs_done or progress < trainer.num_training_batches:
            return  # already done, or a validation in the middle of the epoch
        start = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch}
        self._update_stats(record)
        self._record_mistakes(pl_module, record)
        last = trainer.max_epochs not in (None, -1) and epoch + 1 >= trainer.max_epochs
        n = self.acfg.expand_every_n_epochs
        if n > 0 and (epoch + 1) % n == 0 and not last:
            result = trainer.strategy.broadcast(self._expand(pl_module, epoch) if self.rank == 0 else None)
            self._add(result, epoch, record)
        self._reweight(trainer, record)
        self.epochs_done.append(epoch)
        record["generated_total"] = len(self.gen_inputs)
        record["seconds"] = round(time.perf_counter() - start, 3)
        self._check_ranks_agree(epoch)
        self.history.append(record)
        self._apply()
        self._log(trainer, record)

    def _update_stats(self, record: dict) -> None:
        local = {}
        if self._batches:
            local = {"idx": np.concatenate([b[0] for b in self._batches]),
                     "loss": np.concatenate([b[1] for b in self._batches]),
                     "error": np.concatenate([b[2] for b in self._batches])}
        self._batches = []
        seen = merge_by_idx(gather_objects(local))
        record["rows_trained"] = int(len(seen.get("idx", [])))
        if not seen:
            return
        pos = self._positions(seen["idx"])
        self.last_loss[pos], self.last_error[pos] = seen["loss"], seen["error"]

    def _positions(self, idx: np.ndarray) -> np.ndarray:
        """Row positions in D + generated rows of dataset idx values."""
        idx = np.asarray(idx, dtype=np.int64)
        pos = np.empty(len(idx), dtype=np.int64)
        gen = idx >= GENERATED_IDX_BASE
        pos[gen] = len(self.d_idx) + idx[gen] - GENERATED_IDX_BASE
        order = np.argsort(self.d_idx, kind="stable")
        pos[~gen] = order[np.searchsorted(self.d_idx[order], idx[~gen])]
        return pos

    def _e_gen_name(self) -> str:
        return self.card.select_split if self.acfg.eval_on == "dev" else "e_gen"

    def _record_mistakes(self, pl_module, record: dict) -> None:
        out = getattr(pl_module, "last_eval", {}).get(self._e_gen_name())
        if out:
            mistakes = find_mistakes(out["logits"], out["labels"], self.regression)
            record["e_gen_rows"], record["mistakes"] = int(len(mistakes)), int(mistakes.sum())
            self._mistake_idx = out["idx"][mistakes]
        else:
            self._mistake_idx = None

    def _sources(self) -> tuple[np.ndarray, list, np.ndarray]:
        if self.acfg.expand_from == "train":
            return self.d_idx, self.d_inputs, self.d_labels
        idx, inputs, labels = self.dm.inputs("e_gen")
        if self.acfg.expand_from == "all":
            return idx, inputs, labels
        if self._mistake_idx is None:
            raise RuntimeError("agora.expand_from: mistakes needs the student's predictions on e_gen (validation each epoch)")
        keep = np.isin(idx, self._mistake_idx)
        return idx[keep], [x for x, k in zip(inputs, keep) if k], labels[keep]

    def _expand(self, pl_module, epoch: int) -> tuple[Expansion, dict]:
        """Rank 0: the expansion step (generator + teacher); its result is broadcast to every rank."""
        idx, inputs, labels = self._sources()
        seen = set(self.d_inputs) | set(self.gen_inputs)
        for name in ("e_gen", "e_sel"):
            seen.update(self.dm.inputs(name)[1])
        prior = None
        if self.acfg.balance_generated and not self.regression:
            counts = np.bincount(self.d_labels.astype(np.int64), minlength=self.card.num_labels)
            prior = counts / counts.sum()
        names = self.card.labels if self.card.labels else [str(i) for i in range(self.card.num_labels)]
        calls, hits = self.teacher.forward_calls, self.teacher.cache.hits
        result = expand(inputs, idx, labels, self.teacher.score, generator=self.acfg.generator,
                        n_per_source=self.acfg.variants_per_mistake, seed=self.cfg.seed, key=epoch,
                        settings=self.acfg.generator_settings, min_confidence=self.acfg.min_teacher_confidence,
                        class_prior=prior, label_names=None if self.regression else names,
                        regression=self.regression, seen=seen)
        teacher = {"forward_calls": self.teacher.forward_calls - calls, "cache_hits": self.teacher.cache.hits - hits}
        return result, teacher

    def _add(self, result: tuple[Expansion, dict], epoch: int, record: dict) -> None:
        expansion, teacher = result
        record.update({k: v for k, v in expansion.stats.items()})
        record["teacher_calls"], record["cache_hits"] = teacher["forward_calls"], teacher["cache_hits"]
        k = len(expansion.variants)
        if not k:
            return
        first = len(self.gen_inputs)
        self.gen_inputs += [tuple(v) for v in expansion.variants]
        self.gen_labels += expansion.labels.tolist()
        probs = np.asarray(expansion.probs, np.float32)
        self.gen_probs = probs if first == 0 else np.concatenate([self.gen_probs, probs])
        self.gen_sources = np.r_[self.gen_sources, expansion.source_ids].astype(np.int64)
        self.gen_epochs = np.r_[self.gen_epochs, np.full(k, epoch)].astype(np.int64)
        self.last_loss, self.last_error = np.r_[self.last_loss, np.full(k, np.nan)], np.r_[self.last_error, np.full(k, np.nan)]
        self.dm.add_generated(GENERATED_IDX_BASE + np.arange(first, first + k), expansion.variants, expansion.labels)

    def _reweight(self, trainer, record: dict) -> None:
        acfg = self.acfg
        is_gen = np.r_[np.zeros(len(self.d_idx), bool), np.ones(len(self.gen_inputs), bool)]
        if acfg.gamma == 0 and not is_gen.any():
            return  # uniform: nothing to do
        values = self.last_loss if acfg.reweight_by == "loss" else self.last_error
        weights = example_weights(values, is_gen, acfg.gamma, acfg.rho, kind=acfg.reweight_by) if self.rank == 0 else None
        self.weights = trainer.strategy.broadcast(weights)
        record["weights"] = weight_stats(self.weights, is_gen)

    def _check_ranks_agree(self, epoch: int) -> None:
        digests = gather_objects(self.digest())
        if len(set(digests)) > 1:
            raise RuntimeError(f"AgoraCallback: ranks disagree on the generated rows or weights after epoch {epoch}")

    def digest(self) -> str:
        """sha256 of the generated rows, their labels and the weights (equal on every rank)."""
        h = hashlib.sha256(repr((self.gen_inputs, self.gen_labels)).encode("utf-8"))
        if self.weights is not None:
            h.update(np.asarray(self.weights, np.float64).tobytes())
        return h.hexdigest()

    def _log(self, trainer, record: dict) -> None:
        flat = {}
        for key, value in record.items():
            if isinstance(value, dict):
                flat.update({f"agora/{key}_{k}": v for k, v in value.items() if isinstance(v, (int, float))})
            elif isinstance(value, (int, float)) and key != "epoch":
                flat[f"agora/{key}"] = value
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(flat, step=trainer.global_step)

    # ------------------------------------------------------------------ end of fit

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or self.output_dir is None:
            return
        import json
        from pathlib import Path

        from agora.rundir import atomic_write

        rows = self.generated_rows()
        atomic_write(Path(self.output_dir) / "agora" / "generated.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def generated_rows(self) -> list[dict]:
        """The generated rows: idx, inputs, label, teacher probabilities, source idx, epoch."""
        names = self.card.labels if self.card.format != "multiple_choice" else None
        return [{"idx": GENERATED_IDX_BASE + j, "inputs": list(v),
                 "label": (float(y) if self.regression else (names[y] if names else int(y))),
                 "teacher_probs": [round(float(p), 6) for p in self.gen_probs[j]],
                 "source_idx": int(self.gen_sources[j]), "epoch": int(self.gen_epochs[j])}
                for j, (v, y) in enumerate(zip(self.gen_inputs, self.gen_labels))]

    def report(self) -> dict[str, Any]:
        """What metrics.json keeps under ``agora``: settings, teacher, per-epoch records, totals."""
        calls = self.teacher_summary.get("forward_calls", 0) + sum(r.get("teacher_calls", 0) for r in self.history)
        hits = self.teacher_summary.get("cache_hits", 0) + sum(r.get("cache_hits", 0) for r in self.history)
        return {"enabled": True, "settings": self.acfg.model_dump(mode="json"),
                "teacher": {"path": self.cfg.teacher.path, **self.teacher_summary} if self.teacher is not None else None,
                "epochs": list(self.history), "generated": len(self.gen_inputs),
                "teacher_forward_calls": calls, "teacher_cache_hits": hits,
                "weights": weight_stats(self.weights, np.r_[np.zeros(len(self.d_idx), bool),
                                                            np.ones(len(self.gen_inputs), bool)])
                if self.weights is not None else None}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "gen_inputs": [list(v) for v in self.gen_inputs],
            "gen_labels": list(self.gen_labels),
            "gen_probs": torch.from_numpy(np.ascontiguousarray(self.gen_probs, dtype=np.float32)),
            "gen_sources": self.gen_sources.tolist(),
            "gen_epochs": self.gen_epochs.tolist(),
            "weights": None if self.weights is None else torch.from_numpy(np.asarray(self.weights, np.float64)),
            "last_loss": torch.from_numpy(np.asarray(self.last_loss, np.float64)),
            "last_error": torch.from_numpy(np.asarray(self.last_error, np.float64)),
            "epochs_done": list(self.epochs_done),
            "history": _plain(self.history),
            "teacher_summary": _plain(self.teacher_summary),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen_inputs = [tuple(v) for v in state.get("gen_inputs", [])]
        self.gen_labels = list(state.get("gen_labels", []))
        probs = state.get("gen_probs")
        self.gen_probs = probs.numpy() if probs is not None else np.zeros((0, 0), np.float32)
        self.gen_sources = np.asarray(state.get("gen_sources", []), np.int64)
        self.gen_epochs = np.asarray(state.get("gen_epochs", []), np.int64)
        weights = state.get("weights")
        self.weights = None if weights is None else weights.numpy()
        n = len(self.d_idx) + len(self.gen_inputs)
        for name in ("last_loss", "last_error"):
            value = state.get(name)
            setattr(self, name, value.numpy() if value is not None else np.full(n, np.nan))
        self.epochs_done = list(state.get("epochs_done", []))
        self.history = list(state.get("history", []))
        self.teacher_summary = {**state.get("teacher_summary", {}), **self.teacher_summary}
        self._rebuild_generated()


def _plain(value):
    """Numpy scalars and tuples -> Python types (a checkpoint must load with weights_only=True)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value

