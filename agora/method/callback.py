"""``AgoraCallback``: Agora inside one Lightning fit (expand, distil, reweight).

Method card
-----------
What: the three parts of Agora that act between epochs of one training run (docs/method.md,
"Inside one fit: the callback"); the outer loop over hyperparameter sets and rounds lives around
the fits.

1. **Expand** (de Wynter 2020, arXiv 2010.07990, the loop's "generate new inputs from the
   mistakes, label them with S, append them to D"): every ``expand_every_n_epochs`` epochs, take
   the student's mistakes on ``E_gen`` (``expand_from: mistakes``; or every row of E_gen, ``all``;
   or every original row of D, ``train``), make ``variants_per_mistake`` variants of each with the
   generator G, label them with the teacher S through its cache, drop those below
   ``min_teacher_confidence``, optionally ``balance_generated``, and append them to D for the
   following epochs (:func:`agora.method.expand.expand`). ``E_sel`` is never used for generation. No
   expansion after the last epoch (nothing would train on it).
2. **Distil** (Hinton et al. 2015; soft targets are our choice, see docs/method.md, "Distil"):
   the loss of :meth:`agora.fit.module.AgoraModule.training_loss` is
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
import torch.nn.functional as F

from agora.config import RunConfig
from agora.data.cards import TaskCard
from agora.data.evalset import EvalSet
from agora.data.formats import find_mistakes
from agora.files import plain, write_jsonl
from agora.fit.module import gather_objects, merge_by_idx
from agora.method.distill import validate_distill_settings
from agora.method.expand import AgoraWarning, Expander, Expansion, Sources, known_inputs
from agora.method.generators import make_generator, stable_seed
from agora.method.reweight import example_weights, weight_stats
from agora.method.teacher import attach_teacher, build_teacher
from agora.method.training_set import TrainingSet


def per_example_stats(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, error)`` per row against the hard label, fp32 on the logits' device: CE (squared
    error for regression) and 0/1 (argmax != label; ``|prediction - label| > 0.5`` for regression)."""
    logits = logits.detach().float()
    if regression:
        return (logits[:, 0] - labels.float()) ** 2, ((logits[:, 0] - labels.float()).abs() > 0.5).float()
    return F.cross_entropy(logits, labels.long(), reduction="none"), (logits.argmax(-1) != labels).float()


class AgoraCallback(L.Callback):
    """Expand the student's mistakes, distil from a teacher, reweight by metric (see the module docstring).

    Args:
        cfg: the resolved recipe (``agora``, ``teacher``, ``seed``, ``data``).
        card: the task card.
        teacher: a :class:`agora.method.teacher.Teacher` (tests, benchmarks); built from ``cfg.teacher``
            when None and the settings need one.
        output_dir: the run directory; rank 0 writes ``agora/generated.jsonl`` there at the end.

    Raises:
        RecipeError: alpha outside [0, 1], temperature <= 0, unknown generator.
        ModelNotFoundError / ModelError: the teacher path does not exist, or its label names do
            not match the task's.

    Example::

        callback = AgoraCallback(cfg, card)          # cfg.agora.enabled, cfg.teacher.path set
        trainer = L.Trainer(callbacks=[callback], reload_dataloaders_every_n_epochs=1, ...)
        trainer.fit(module, datamodule=data)         # a TaskDataModule loaded with agora enabled
        callback.report()                            # what happened, per epoch
    """

    def __init__(self, cfg: RunConfig, card: TaskCard, teacher=None, output_dir=None):
        acfg = cfg.agora
        validate_distill_settings(acfg.alpha, acfg.temperature)
        make_generator(acfg.generator, acfg.generator_settings)  # an unknown name or import path fails now
        self.cfg, self.card, self.acfg = cfg, card, acfg
        self.regression = card.format == "regression"
        self.evalset = EvalSet.of(cfg, card)
        self.teacher = teacher if teacher is not None else (build_teacher(cfg, card) if acfg.needs_teacher() else None)
        self.expander = Expander(acfg, card, self.teacher.score, cfg.seed) if self.teacher is not None else None
        self.output_dir = output_dir
        self.dm = None
        self.rows: TrainingSet | None = None
        self.rank = 0
        self._mistake_idx: np.ndarray | None = None
        self._pending: dict | None = None
        self.last_loss = np.zeros(0)
        self.last_error = np.zeros(0)
        self.epochs_done: list[int] = []
        self.history: list[dict] = []
        self.teacher_summary: dict[str, Any] = {}
        self._batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._resumed_inside_epoch = False

    # ------------------------------------------------------------------ setup

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "use_training_rows") or "e_gen" not in dm.raw:
            raise RuntimeError("AgoraCallback needs a TaskDataModule loaded with agora.enabled (it carves E_gen/E_sel)")
        self.dm, self.rank = dm, trainer.global_rank
        if trainer.reload_dataloaders_every_n_epochs != 1:
            raise RuntimeError("AgoraCallback grows the training rows between epochs: give the Trainer "
                               "reload_dataloaders_every_n_epochs=1 (agora.method.extension.agora_extension does)")
        if trainer.limit_val_batches == 0 or (trainer.check_val_every_n_epoch or 1) != 1:
            warnings.warn("Agora acts at the end-of-epoch validation: with limit_val_batches=0 or "
                          "check_val_every_n_epoch != 1 it skips the epochs that do not validate", AgoraWarning,
                          stacklevel=2)
        train = self.card.train_split
        names = list(self.card.labels) if self.card.labels and self.card.format != "multiple_choice" else None
        self.rows = TrainingSet(Sources.of(dm, train), dm.tokenized[train], dm.tokenize_rows, names,
                                self.regression, self.acfg.reweight_mode)
        if self.teacher is not None and self.rank == 0:
            attach_teacher(self.teacher, self.cfg, str(trainer.strategy.root_device))
            if self.expander is not None:  # a pool-drawing generator embeds the pool now (cached)
                from agora.paths import cache_dir

                self.expander.prepare(dm.pool, self.cfg.teacher.path, cache_dir(self.cfg.data.cache_dir))
        if self.acfg.alpha > 0:
            self.rows.d_probs, self.teacher_summary = trainer.strategy.broadcast(self._score_d() if self.rank == 0 else None)
        if self.acfg.pool_rows:
            sample = trainer.strategy.broadcast(self._pool_sample(dm.pool) if self.rank == 0 else None)
            self.rows.add(sample, epoch=-1)
            summary = self.teacher_summary
            summary["pool_rows_scored"] = len(sample.variants)
            for key in ("forward_calls", "cache_hits"):
                summary[key] = summary.get(key, 0) + sample.stats[key]
        if self._pending is not None:
            self.rows.load_state_dict(self._pending)
            if self.expander is not None and self.rank == 0:
                self.expander.generator.load_state_dict(self._pending.get("generator", {}))
            self._pending = None
        if len(self.last_loss) != len(self.rows):
            self.last_loss, self.last_error = np.full(len(self.rows), np.nan), np.full(len(self.rows), np.nan)
        dm.use_training_rows(self.rows)

    def _score_d(self) -> tuple[np.ndarray, dict]:
        calls, hits, start = self.teacher.forward_calls, self.teacher.cache.hits, time.perf_counter()
        d = self.rows.d
        probs = self.teacher.score(d.inputs)
        agree = find_mistakes(probs, d.labels, self.regression) == 0
        return probs, {"train_rows_scored": len(probs), "train_agreement": float(agree.mean()) if len(agree) else None,
                       "forward_calls": self.teacher.forward_calls - calls, "cache_hits": self.teacher.cache.hits - hits,
                       "seconds": round(time.perf_counter() - start, 3)}

    def _pool_sample(self, pool) -> Expansion:
        """Rank 0: ``agora.pool_rows`` random rows of the unlabelled pool, labelled by the teacher (every
        row kept: distillation on unlabelled data, no filter)."""
        rng = np.random.default_rng(stable_seed(self.cfg.seed, "pool_rows") % 2**32)
        chosen = np.sort(rng.choice(len(pool), size=min(self.acfg.pool_rows, len(pool)), replace=False))
        inputs = [pool.inputs[j] for j in chosen]
        calls, hits = self.teacher.forward_calls, self.teacher.cache.hits
        probs = np.asarray(self.teacher.score(inputs), np.float32)
        labels = probs[:, 0] if self.regression else probs.argmax(-1)
        return Expansion(inputs, np.full(len(inputs), -1, np.int64), probs, labels,
                         {"forward_calls": self.teacher.forward_calls - calls,
                          "cache_hits": self.teacher.cache.hits - hits})

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
            result = trainer.strategy.broadcast(self._expand(epoch) if self.rank == 0 else None)
            self._add(result, epoch, record)
        self._reweight(trainer, record)
        self.epochs_done.append(epoch)
        record["generated_total"] = len(self.rows.gen_inputs)
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
        pos = self.rows.positions(seen["idx"])
        self.last_loss[pos], self.last_error[pos] = seen["loss"], seen["error"]

    def _record_mistakes(self, pl_module, record: dict) -> None:
        out = getattr(pl_module, "last_eval", {}).get(self.evalset.gen)
        if out:
            mistakes = find_mistakes(out["logits"], out["labels"], self.regression)
            record["e_gen_rows"], record["mistakes"] = int(len(mistakes)), int(mistakes.sum())
            self._mistake_idx = out["idx"][mistakes]
        else:
            self._mistake_idx = None

    def _expand(self, epoch: int):
        """Rank 0: the expansion step (generator + teacher); its result is broadcast to every rank."""
        sources = self.expander.sources(Sources.of(self.dm, "e_gen"), self.rows.d, self._mistake_idx)
        seen = known_inputs(self.dm, self.rows.gen_inputs)
        calls, hits = self.teacher.forward_calls, self.teacher.cache.hits
        result = self.expander(sources, epoch, seen, self.rows.d.labels)
        teacher = {"forward_calls": self.teacher.forward_calls - calls, "cache_hits": self.teacher.cache.hits - hits}
        return result, teacher

    def _add(self, result, epoch: int, record: dict) -> None:
        expansion, teacher = result
        record.update({k: v for k, v in expansion.stats.items()})
        record["teacher_calls"], record["cache_hits"] = teacher["forward_calls"], teacher["cache_hits"]
        k = self.rows.add(expansion, epoch)
        if k:
            self.last_loss, self.last_error = np.r_[self.last_loss, np.full(k, np.nan)], np.r_[self.last_error, np.full(k, np.nan)]

    def _reweight(self, trainer, record: dict) -> None:
        acfg = self.acfg
        is_gen = self.rows.is_generated
        if acfg.gamma == 0 and not is_gen.any():
            return  # uniform: nothing to do
        values = self.last_loss if acfg.reweight_by == "loss" else self.last_error
        weights = example_weights(values, is_gen, acfg.gamma, acfg.rho, kind=acfg.reweight_by) if self.rank == 0 else None
        self.rows.weights = trainer.strategy.broadcast(weights)
        record["weights"] = weight_stats(self.rows.weights, is_gen)

    def _check_ranks_agree(self, epoch: int) -> None:
        digests = gather_objects(self.rows.digest())
        if len(set(digests)) > 1:
            raise RuntimeError(f"AgoraCallback: ranks disagree on the generated rows or weights after epoch {epoch}")

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
        if trainer.is_global_zero and self.output_dir is not None:
            from pathlib import Path

            write_jsonl(Path(self.output_dir) / "agora" / "generated.jsonl", self.generated_rows())

    def generated_rows(self) -> list[dict]:
        """The generated rows: idx, inputs, label, teacher probabilities, source idx, epoch."""
        return self.rows.generated_rows() if self.rows is not None else []

    def report(self) -> dict[str, Any]:
        """What metrics.json keeps under ``agora``: settings, teacher, per-epoch records, totals."""
        calls = self.teacher_summary.get("forward_calls", 0) + sum(r.get("teacher_calls", 0) for r in self.history)
        hits = self.teacher_summary.get("cache_hits", 0) + sum(r.get("cache_hits", 0) for r in self.history)
        rows = self.rows
        return {"enabled": True, "settings": self.acfg.model_dump(mode="json"),
                "teacher": {"path": self.cfg.teacher.path, **self.teacher_summary} if self.teacher is not None else None,
                "epochs": list(self.history), "generated": len(rows.gen_inputs) if rows else 0,
                "teacher_forward_calls": calls, "teacher_cache_hits": hits,
                "weights": weight_stats(rows.weights, rows.is_generated) if rows and rows.weights is not None else None}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        generator = self.expander.generator.state_dict() if self.expander is not None else {}
        return {
            **(self.rows.state_dict() if self.rows is not None else self._pending or {}),
            "generator": generator,
            "last_loss": torch.from_numpy(np.asarray(self.last_loss, np.float64)),
            "last_error": torch.from_numpy(np.asarray(self.last_error, np.float64)),
            "epochs_done": list(self.epochs_done),
            "history": plain(self.history),
            "teacher_summary": plain(self.teacher_summary),
            "epoch_batches": [torch.cat([b[i].cpu() for b in self._batches]) for i in range(3)] if self._batches else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.rows is not None:
            self.rows.load_state_dict(state)
            if self.expander is not None and self.rank == 0:
                self.expander.generator.load_state_dict(state.get("generator", {}))
        else:
            self._pending = state
        n = len(self.rows) if self.rows is not None else None
        for name in ("last_loss", "last_error"):
            value = state.get(name)
            setattr(self, name, value.numpy() if value is not None else np.full(n or 0, np.nan))
        self.epochs_done = list(state.get("epochs_done", []))
        self.history = list(state.get("history", []))
        self.teacher_summary = {**state.get("teacher_summary", {}), **self.teacher_summary}
        batches = state.get("epoch_batches")  # a checkpoint written inside an epoch: its rows so far
        self._batches = [tuple(batches)] if batches else []
        self._resumed_inside_epoch = bool(batches)
