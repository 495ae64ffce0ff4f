"""``AgoraCallback``: Agora inside one Lightning fit (expand, distil, reweight).

Method card
-----------
What: the three parts of Agora that act between epochs of one training run (docs/method.md,
"Inside one fit: the callback"); the outer loop over hyperparameter sets and rounds lives around
the fits.

1. **Expand** (de Wynter 2020, arXiv 2010.07990, the loop's "generate new inputs from the
   mistakes, label them with S, append them to D"): every ``expand_every_n_epochs`` epochs, take
   the student's mistakes on ``E_gen`` (``expand_from: mistakes``; or every row of E_gen, ``all``;
   or every original row of D, ``train``), make ``variants_per_source`` variants of each with the
   generator G, label them with the teacher S through its cache, drop those below
   ``min_teacher_confidence``, optionally ``balance_generated``, and append them to D for the
   following epochs (:func:`agora.method.expand.expand`). ``E_sel`` is never used for generation. No
   expansion after the last epoch (nothing would train on it).
2. **Distil** (Hinton et al. 2015; soft targets are our choice, see docs/method.md, "Distil"):
   the loss of :meth:`agora.fit.module.TaskModule.training_loss` is
   ``(1 - alpha) * CE + alpha * T^2 * KL`` on every row with teacher probabilities: D's rows
   (scored once when the fit starts, if
   ``alpha > 0``) and generated rows, which train on the soft term alone with
   ``generated_targets: soft`` (:mod:`agora.method.distill`).
3. **Reweight** (our choice, :mod:`agora.method.reweight`): after every epoch, per-example weights from
   the student's per-example loss (``reweight_by: loss``; or 0/1 error, ``error``) on the rows it
   trained on that epoch (the training-step loss against the hard label, in train mode: no extra
   forward pass over D; a row not seen keeps its last value), strength ``gamma``, generated rows
   capped at a share ``rho`` of the total weight. Applied as loss weights (``reweight_mode:
   loss``) or through the sampler (``sampler``: rows drawn with replacement in proportion).

The rows, their teacher targets and weights live in :class:`agora.method.training_set.TrainingSet`,
which the data module serves. Our choices around them: an epoch draws as many rows as D had at
the start (``epoch_size``), so a run with the callback makes exactly as many optimiser steps as
the plain run, and the LR schedule is unchanged. The callback acts once per epoch, at the end-of-epoch validation (after
the student's E_gen predictions are gathered, before checkpoints are saved), so the checkpoint of
an epoch holds its expansion and weights.

DDP: the per-example statistics are gathered from all ranks and de-duplicated by idx; the teacher
and the generator run on rank 0 only and the new rows and the weights are broadcast from it, so
every rank trains on identical data; a digest of the state is compared across ranks every epoch.
Only rank 0 writes files (the teacher cache, ``<run>/agora/generated.jsonl``).

Resume: ``state_dict`` holds the generated rows, their teacher probabilities, the weights, the
per-example statistics (those of the epoch in progress too), the epochs done and the report;
everything is a plain type or a tensor, so a checkpoint loads with ``torch.load(weights_only=True)``.
Randomness: every fit reseeds the global generators from ``(seed, epoch)`` at the first batch of
every epoch and restores the sampler's position (:mod:`agora.fit.resume`); G draws from ``(seed,
epoch, source idx)``, so a resumed run draws exactly what the uninterrupted run draws.

Reported per epoch (``metrics.json`` key ``agora``, and the Lightning loggers under ``agora/``):
mistakes on E_gen, generated rows kept and rejected by reason, label balance of the kept rows,
agreement of the teacher with the source's gold label, teacher forward passes and cache hits,
weight statistics.

Hyperparameters (``agora:`` section of the recipe; all usable in a search space): see
:class:`agora.config.AgoraConfig`.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch

from agora.config import RunConfig
from agora.data.cards import TaskCard
from agora.data.evalset import EvalSet
from agora.data.formats import find_mistakes
from agora.files import plain, write_jsonl
from agora.fit.contract import FitData, FitModule
from agora.fit.module import gather_objects, merge_by_idx
from agora.method.expand import AgoraWarning, Expander, Sources
from agora.method.generated import Expansion, TeacherCounts, counting, flat_record
from agora.method.reweight import example_weights, per_example_stats, weight_stats
from agora.method.select import Selector, random_share
from agora.method.teacher import attach_teacher, build_teacher
from agora.method.training_set import TrainingSet


class AgoraCallback(L.Callback):
    """Expand the student's mistakes, distil from a teacher, reweight by metric (see the module docstring).

    Args:
        cfg: the resolved recipe (``agora``, ``teacher``, ``seed``, ``data``).
        card: the task card.
        teacher: a :class:`agora.method.teacher.Teacher` (tests, benchmarks); built from ``cfg.teacher``
            when None and the settings need one.
        output_dir: the run directory; rank 0 writes ``agora/generated.jsonl`` there at the end.

    Raises:
        ModelNotFoundError / ModelError: the teacher path does not exist, or its label names do
            not match the task's. (The settings themselves are checked by the recipe's schema.)

    Example::

        callback = AgoraCallback(cfg, card)          # cfg.agora.enabled, cfg.teacher.path set
        trainer = L.Trainer(callbacks=[callback], reload_dataloaders_every_n_epochs=1, ...)
        trainer.fit(module, datamodule=data)         # a TaskDataModule loaded with agora enabled
        callback.report()                            # what happened, per epoch
    """

    def __init__(self, cfg: RunConfig, card: TaskCard, teacher=None, output_dir=None):
        acfg = cfg.agora
        self.cfg, self.card, self.acfg = cfg, card, acfg
        self.regression = card.format == "regression"
        self.evalset = EvalSet.of(cfg, card)
        self.teacher = teacher if teacher is not None else (build_teacher(cfg, card) if acfg.needs_teacher() else None)
        self.expander = Expander(acfg, card, self.teacher, cfg.seed) if self.teacher is not None else None
        by_disagreement = self.expander is not None and acfg.select.by == "disagreement"
        self.selector = Selector(self.expander) if by_disagreement else None
        self.output_dir = output_dir
        self.dm: FitData | None = None
        self.training_set: TrainingSet | None = None
        self.rank = 0
        self._mistake_idx: np.ndarray | None = None
        self._pending: dict | None = None
        self.last_loss = np.zeros(0)
        self.last_error = np.zeros(0)
        self.epochs_done: list[int] = []
        self.history: list[dict] = []
        self.teacher_summary: dict[str, Any] = {}
        """What the teacher did when the fit started: D scored, pool rows drawn (and its counts)."""
        self._batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._resumed_inside_epoch = False
        self._max_epochs: int | None = None

    # ------------------------------------------------------------------ setup

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if not isinstance(dm, FitData) or not dm.has_split(self.evalset.gen):
            raise RuntimeError("AgoraCallback needs a TaskDataModule loaded with agora.enabled (it carves E_gen/E_sel)")
        if not isinstance(pl_module, FitModule):
            raise RuntimeError("AgoraCallback reads the student's evaluations from last_eval "
                               "(agora.fit.contract.FitModule): fit a TaskModule")
        self.dm, self.rank, self._max_epochs = dm, trainer.global_rank, trainer.max_epochs
        self._check_trainer(trainer)
        names = list(self.card.labels) if self.card.labels and self.card.format != "multiple_choice" else None
        train = self.card.train_split
        self.training_set = TrainingSet(Sources.of(dm, train), dm.tokenized_split(train), dm.tokenize_rows, names,
                                        self.regression, self.acfg.reweight_mode)
        if self.teacher is not None and self.rank == 0:
            attach_teacher(self.teacher, self.cfg, str(trainer.strategy.root_device))
            self._prepare(dm)
        self._score_at_start(trainer, dm)
        if self.acfg.expand_at_start and self._pending is None and -1 not in self.epochs_done:
            self._expand_at_start(trainer, pl_module)
        if self._pending is not None:
            self.training_set.load_state_dict(self._pending)
            self._load_generator_state(self._pending.get("generator", {}))
            self._pending = None
        if len(self.last_loss) != len(self.training_set):
            self.last_loss = np.full(len(self.training_set), np.nan)
            self.last_error = np.full(len(self.training_set), np.nan)
        dm.use_training_rows(self.training_set)

    def _prepare(self, dm: FitData) -> None:
        """Rank 0: a pool-drawing generator, or the selector, embeds the pool now (cached); where the teacher
        embeds it, its outputs for the pool come with that pass (``pool_pass_rows``: the rows it ran;
        ``pool_pass_seconds``: the whole preparation's time)."""
        from agora.paths import cache_dir

        with counting(self.teacher) as counts:
            if self.expander is not None:
                self.expander.prepare(dm.pool, self.cfg.teacher.path, cache_dir(self.cfg.data.cache_dir))
            if self.selector is not None:
                self.selector.prepare(dm, self.cfg.teacher.path, cache_dir(self.cfg.data.cache_dir))
        if counts.forward_calls:
            self.teacher_summary.update(pool_pass_rows=counts.forward_calls, pool_pass_seconds=counts.seconds)

    def _expand_at_start(self, trainer, pl_module: FitModule) -> None:
        """``expand_at_start``: one expansion before the first epoch, from the pre-trained student (its
        mistakes on E_gen, its disagreement with the teacher), recorded as epoch -1."""
        record: dict[str, Any] = {"epoch": -1}
        if self.rank == 0:
            idx, _, labels = self.dm.inputs(self.evalset.gen)
            logits = pl_module.logits_of(self.dm.tokenized_split(self.evalset.gen))
            mistakes = find_mistakes(logits, labels, self.regression)
            record["e_gen_rows"], record["mistakes"] = int(len(mistakes)), int(mistakes.sum())
            self._mistake_idx = idx[mistakes]
        expansion = trainer.strategy.broadcast(self._expand(-1, pl_module) if self.rank == 0 else None)
        self._add(expansion, -1, record)
        self.epochs_done.append(-1)
        record["generated_total"] = len(self.training_set.gen_inputs)
        self.history.append(record)

    @staticmethod
    def _check_trainer(trainer) -> None:
        if trainer.reload_dataloaders_every_n_epochs != 1:
            raise RuntimeError("AgoraCallback grows the training rows between epochs: give the Trainer "
                               "reload_dataloaders_every_n_epochs=1 (agora.method.extension.agora_extension does)")
        if trainer.limit_val_batches == 0 or (trainer.check_val_every_n_epoch or 1) != 1:
            warnings.warn("Agora acts at the end-of-epoch validation: with limit_val_batches=0 or "
                          "check_val_every_n_epoch != 1 it skips the epochs that do not validate", AgoraWarning,
                          stacklevel=3)

    def _score_at_start(self, trainer, dm: FitData) -> None:
        """The teacher's targets for D (``alpha > 0``) and the random pool rows (``pool_rows``), on rank 0,
        broadcast to every rank."""
        if self.acfg.alpha > 0:
            self.training_set.d_probs, summary = trainer.strategy.broadcast(self._score_d() if self.rank == 0 else None)
            self.teacher_summary.update(summary)
        if self.acfg.pool_rows:
            sample = trainer.strategy.broadcast(
                self.expander.label_pool(dm.pool, self.acfg.pool_rows, self.cfg.seed) if self.rank == 0 else None)
            self.training_set.add(sample, epoch=-1)
            counts = sample.stats.teacher
            summary = self.teacher_summary
            summary["pool_rows_scored"] = len(sample.variants)
            summary["teacher_forward_calls"] = summary.get("teacher_forward_calls", 0) + counts.forward_calls
            summary["teacher_cache_hits"] = summary.get("teacher_cache_hits", 0) + counts.cache_hits

    def _score_d(self) -> tuple[np.ndarray, dict]:
        d = self.training_set.d
        with counting(self.teacher) as counts:
            probs = self.teacher.score(d.inputs)
        agree = find_mistakes(probs, d.labels, self.regression) == 0
        return probs, {"train_rows_scored": len(probs), "train_agreement": float(agree.mean()) if len(agree) else None,
                       "teacher_forward_calls": counts.forward_calls, "teacher_cache_hits": counts.cache_hits,
                       "seconds": counts.seconds}

    # ------------------------------------------------------------------ per batch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._resumed_inside_epoch:  # the statistics of the epoch's batches before the checkpoint stay
            self._resumed_inside_epoch = False
            return
        self._batches = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(outputs, dict) and "logits" in outputs:
            loss, error = per_example_stats(outputs["logits"], batch["labels"], self.regression)
            self._batches.append((batch["idx"], loss, error))  # kept on the device until the epoch ends

    # ------------------------------------------------------------------ per epoch

    def on_validation_end(self, trainer, pl_module: FitModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.dm is None:
            return
        epoch = trainer.current_epoch
        if epoch in self.epochs_done or not trainer.is_last_batch:
            return  # already done, or a validation in the middle of the epoch
        start = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch}
        self._update_stats(record)
        self._record_mistakes(pl_module, record)
        last = trainer.max_epochs not in (None, -1) and epoch + 1 >= trainer.max_epochs
        n = self.acfg.expand_every_n_epochs
        if n > 0 and (epoch + 1) % n == 0 and not last:
            expansion = trainer.strategy.broadcast(self._expand(epoch, pl_module) if self.rank == 0 else None)
            self._add(expansion, epoch, record)
        self._reweight(trainer, record)
        self.epochs_done.append(epoch)
        record["generated_total"] = len(self.training_set.gen_inputs)
        record["seconds"] = round(time.perf_counter() - start, 3)
        self._check_ranks_agree(epoch)
        self.history.append(record)
        self._log(trainer, record)

    def _update_stats(self, record: dict) -> None:
        local = {}
        if self._batches:
            local = {name: torch.cat([b[i].cpu() for b in self._batches]).numpy().astype(dtype)
                     for i, (name, dtype) in enumerate((("idx", np.int64), ("loss", np.float64), ("error", np.float64)))}
        self._batches = []
        seen = merge_by_idx(gather_objects(local))
        record["rows_trained"] = int(len(seen.get("idx", [])))
        if not seen:
            return
        pos = self.training_set.positions(seen["idx"])
        self.last_loss[pos], self.last_error[pos] = seen["loss"], seen["error"]

    def _record_mistakes(self, pl_module: FitModule, record: dict) -> None:
        out = pl_module.last_eval.get(self.evalset.gen)
        if out:
            mistakes = find_mistakes(out["logits"], out["labels"], self.regression)
            record["e_gen_rows"], record["mistakes"] = int(len(mistakes)), int(mistakes.sum())
            self._mistake_idx = out["idx"][mistakes]
        else:
            self._mistake_idx = None

    def _expand(self, epoch: int, pl_module: FitModule) -> Expansion:
        """Rank 0: the expansion step (generator or selector, and the teacher); its result is broadcast to
        every rank."""
        if self.selector is None:
            return self.expander.step(self.dm, self._mistake_idx, epoch, self.training_set.gen_inputs)
        scfg, n = self.acfg.select, self.acfg.expand_every_n_epochs
        first = -1 if self.acfg.expand_at_start else max(n - 1, 0)
        last = (self._max_epochs or 1) - 2
        share = random_share(scfg.random_fraction, scfg.random_fraction_final, epoch, first, last)
        return self.selector.step(self.dm, pl_module.logits_of, self._mistake_idx, epoch, share)

    def _add(self, expansion: Expansion, epoch: int, record: dict) -> None:
        record.update(expansion.stats.as_record())
        k = self.training_set.add(expansion, epoch)
        if k:
            self.last_loss, self.last_error = np.r_[self.last_loss, np.full(k, np.nan)], np.r_[self.last_error, np.full(k, np.nan)]

    def _reweight(self, trainer, record: dict) -> None:
        acfg = self.acfg
        is_gen = self.training_set.is_generated
        if acfg.gamma == 0 and not is_gen.any():
            return  # uniform: nothing to do
        values = self.last_loss if acfg.reweight_by == "loss" else self.last_error
        weights = example_weights(values, is_gen, acfg.gamma, acfg.rho, kind=acfg.reweight_by) if self.rank == 0 else None
        self.training_set.weights = trainer.strategy.broadcast(weights)
        record["weights"] = weight_stats(self.training_set.weights, is_gen)

    def _check_ranks_agree(self, epoch: int) -> None:
        digests = gather_objects(self.training_set.digest())
        if len(set(digests)) > 1:
            raise RuntimeError(f"AgoraCallback: ranks disagree on the generated rows or weights after epoch {epoch}")

    def _log(self, trainer, record: dict) -> None:
        flat = flat_record(record, "agora")
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(flat, step=trainer.global_step)

    # ------------------------------------------------------------------ end of fit

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self.output_dir is not None:
            from pathlib import Path

            write_jsonl(Path(self.output_dir) / "agora" / "generated.jsonl", self.generated_rows())

    def generated_rows(self) -> list[dict]:
        """The generated rows (:class:`agora.method.generated.GeneratedRow`, as JSON)."""
        return [r.to_json() for r in self.training_set.generated_rows()] if self.training_set is not None else []

    def report(self) -> dict[str, Any]:
        """What metrics.json keeps under ``agora``: settings, teacher, per-epoch records, totals."""
        start = self.teacher_summary
        counts = TeacherCounts(start.get("teacher_forward_calls", 0) + start.get("pool_pass_rows", 0),
                               start.get("teacher_cache_hits", 0))
        for record in self.history:
            counts += TeacherCounts(record.get("teacher_forward_calls", 0), record.get("teacher_cache_hits", 0))
        rows = self.training_set
        return {"enabled": True, "settings": self.acfg.model_dump(mode="json"),
                "teacher": {"path": self.cfg.teacher.path, **self.teacher_summary} if self.teacher is not None else None,
                "epochs": list(self.history), "generated": len(rows.gen_inputs) if rows else 0,
                "teacher_forward_calls": counts.forward_calls, "teacher_cache_hits": counts.cache_hits,
                "weights": weight_stats(rows.weights, rows.is_generated) if rows and rows.weights is not None else None}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        generator = self.expander.generator.state_dict() if self.expander is not None else {}
        if self.selector is not None:
            generator = {**generator, "selected": self.selector.state_dict()}
        return {
            **(self.training_set.state_dict() if self.training_set is not None else self._pending or {}),
            "generator": generator,
            "last_loss": torch.from_numpy(np.asarray(self.last_loss, np.float64)),
            "last_error": torch.from_numpy(np.asarray(self.last_error, np.float64)),
            "epochs_done": list(self.epochs_done),
            "history": plain(self.history),
            "teacher_summary": plain(self.teacher_summary),
            "epoch_batches": [torch.cat([b[i].cpu() for b in self._batches]) for i in range(3)] if self._batches else None,
        }

    def _load_generator_state(self, state: dict) -> None:
        """Rank 0: the pool rows the generator (and the selector) returned before the checkpoint."""
        if self.expander is not None and self.rank == 0:
            self.expander.generator.load_state_dict(state)
            if self.selector is not None:
                self.selector.load_state_dict(state.get("selected", {}))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.training_set is not None:
            self.training_set.load_state_dict(state)
            self._load_generator_state(state.get("generator", {}))
        else:
            self._pending = state
        n = len(self.training_set) if self.training_set is not None else None
        for name in ("last_loss", "last_error"):
            value = state.get(name)
            setattr(self, name, value.numpy() if value is not None else np.full(n or 0, np.nan))
        self.epochs_done = list(state.get("epochs_done", []))
        self.history = list(state.get("history", []))
        self.teacher_summary = {**state.get("teacher_summary", {}), **self.teacher_summary}
        batches = state.get("epoch_batches")  # a checkpoint written inside an epoch: its rows so far
        self._batches = [tuple(batches)] if batches else []
        self._resumed_inside_epoch = bool(batches)
