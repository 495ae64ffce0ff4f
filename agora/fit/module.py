"""The LightningModule: loss, optimiser and schedule, exact metrics, predictions by example idx.

Optimiser (our choice; docs/method.md, "Other decisions where the papers are silent"): AdamW with
decoupled, lr-scaled weight decay (torch's AdamW multiplies weights by ``1 - lr * weight_decay``
each step, the BERTAdam semantics), no decay on LayerNorm weights and biases, eps 1e-6, linear
warmup then linear decay over the whole run.
Gradient clipping (1.0) is a Trainer flag set in every recipe.

Evaluation gathers ``(idx, logits, label)`` from every rank at the end of the epoch, keeps one row
per idx, and computes the task's official metrics on exactly the split, so scores under DDP equal
single-process scores.

What a method (Agora, :mod:`agora.method`) can rely on, and nothing else:

- the training loss is ``loss(logits, batch) -> (loss, per_example)``, given to the module
  (default :class:`HardLabelLoss`: cross-entropy, MSE for regression, weighted by the batch's
  ``weight`` column where the training rows carry one);
- ``training_step`` returns ``{"loss", "logits"}`` (the logits detached: per-row statistics);
- ``last_eval[split]`` holds the gathered ``idx``, ``logits`` and ``labels`` of every evaluated
  split after each validation (``meta`` too where the format needs it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from agora.config import RunConfig
from agora.data.cards import TaskCard
from agora.data.datamodule import TaskDataModule
from agora.data.formats import format_of, log_likelihood
from agora.fit.finite import check_loss

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm.weight", "layernorm.weight")


def gather_objects(obj):
    """Every rank's ``obj`` as a list (``[obj]`` outside distributed runs)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def merge_by_idx(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-rank arrays, keep the first row of every idx, order by idx."""
    parts = [p for p in parts if p and len(p["idx"])]
    if not parts:
        return {}
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    _, first = np.unique(merged["idx"], return_index=True)  # np.unique sorts by idx
    return {k: v[first] for k, v in merged.items()}


def score(card: TaskCard, logits: np.ndarray, labels: np.ndarray, meta: dict | None = None) -> dict[str, float]:
    """The card's metrics; ``meta`` holds the row columns grouped formats need (MultiRC, ReCoRD, RACE)."""
    return format_of(card).score(card, logits, labels, meta)


Loss = Callable[[torch.Tensor, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]
"""``loss(logits, batch) -> (loss, per_example)``; the per-example losses are fp32."""


class HardLabelLoss:
    """Cross-entropy (MSE for regression) per example in fp32; the weighted mean where the batch has a
    ``weight`` column (``sum(w * l) / sum(w)``), else the mean."""

    def __init__(self, regression: bool):
        self.regression = regression

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.float()
        if self.regression:
            losses = F.mse_loss(logits[:, 0], batch["labels"].float(), reduction="none")
        else:
            losses = F.cross_entropy(logits, batch["labels"], reduction="none")
        weight = batch.get("weight")
        loss = losses.mean() if weight is None else (losses * weight).sum() / weight.sum().clamp_min(1e-12)
        return loss, losses


class TaskModule(L.LightningModule):
    """Wraps a Hugging Face encoder with a task head (BORT or any other).

    Args:
        model: an ``AutoModelFor...`` instance (see :func:`agora.fit.model.build_model`).
        card: the task card (labels, format, metrics).
        cfg: the resolved recipe; saved inside every checkpoint.
        eval_names / predict_names: the dataloader order of validation and predict splits.
        epoch_eval_names: the validation splits while fitting (default ``eval_names``; ``data.eval_dev:
            at_end`` leaves the dev splits to the final validation).
        loss: the training loss (default :class:`HardLabelLoss`; Agora gives its distillation loss).
        select_name: the split whose main metric is ``val_score`` (picks the best checkpoint).
        tiebreak_name: a split whose mean log-likelihood of the gold labels is logged too
            (``val/<split>/loglik``: what breaks ties between equal scores; E_sel in a search's fit).
    """

    def __init__(self, model, card: TaskCard, cfg: RunConfig, eval_names=(), predict_names=(),
                 loss: Loss | None = None, select_name: str | None = None, epoch_eval_names=None,
                 tiebreak_name: str | None = None):
        super().__init__()
        self.model, self.card, self.cfg = model, card, cfg
        self.loss = loss or HardLabelLoss(card.format == "regression")
        self.eval_names, self.predict_names = list(eval_names), list(predict_names)
        self.epoch_eval_names = list(eval_names if epoch_eval_names is None else epoch_eval_names)
        self.history: list[dict] = []
        self.last_eval: dict[str, dict[str, np.ndarray]] = {}
        self.predictions: dict[str, dict[str, np.ndarray]] = {}
        self._buffers: dict[str, list] = defaultdict(list)
        self._train_loss = [0.0, 0]
        self.last_scores: dict[str, float] = {}
        self.select_name = select_name or card.select_split
        self.tiebreak_name = tiebreak_name

    # -- forward and loss ----------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        return self.model(**inputs).logits

    def training_step(self, batch, batch_idx):
        logits = self(batch)
        loss, losses = self.loss(logits, batch)
        check_loss(self, loss, logits, batch, batch_idx)  # NaN / inf stops the fit before the backward pass
        self._train_loss[0] += float(loss.detach())
        self._train_loss[1] += 1
        self.log("train/loss", loss, prog_bar=True, batch_size=len(losses))
        return {"loss": loss, "logits": logits.detach()}  # logits: per-row statistics for a method's callback

    # -- evaluation -----------------------------------------------------------------------
    def _collect(self, key: str, batch, logits: torch.Tensor) -> None:
        self._buffers[key].append(
            (batch["idx"].cpu().numpy(), logits.float().cpu().numpy(), batch["labels"].float().cpu().numpy())
        )

    def _gathered(self, key: str) -> dict[str, np.ndarray]:
        chunks = self._buffers.pop(key, [])
        local = (
            {"idx": np.concatenate([c[0] for c in chunks]), "logits": np.concatenate([c[1] for c in chunks]),
             "labels": np.concatenate([c[2] for c in chunks])}
            if chunks else {}
        )
        out = merge_by_idx(gather_objects(local))
        name = key.split(":", 1)[1]
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if out and isinstance(datamodule, TaskDataModule):  # columns a format scores or writes with (by idx)
            meta = datamodule.meta(name, out["idx"])
            if meta is not None:
                out["meta"] = meta
        return out

    @property
    def _scored_names(self) -> list[str]:
        """The validation splits of the running loop, in dataloader order."""
        return self.epoch_eval_names if self.trainer.state.fn == "fit" else self.eval_names

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._collect(f"val:{self._scored_names[dataloader_idx]}", batch, self(batch))

    def on_validation_epoch_end(self) -> None:
        results: dict[str, float] = {}
        for name in self._scored_names:
            out = self._gathered(f"val:{name}")
            if not out:
                continue
            self.last_eval[name] = out
            for metric, value in score(self.card, out["logits"], out["labels"], out.get("meta")).items():
                results[f"val/{name}/{metric}"] = value
            if name == self.tiebreak_name:  # the search breaks ties between θs with it
                results[f"val/{name}/loglik"] = log_likelihood(out["logits"], out["labels"], self.card.format == "regression")
        if self.trainer.sanity_checking or not results:
            return
        main = results.get(f"val/{self.select_name}/{self.card.main_metric}", float("nan"))
        results["val_score"] = main
        self.last_scores = dict(results)
        self.log_dict({k: v for k, v in results.items() if k != "val_score"})
        self.log("val_score", main, prog_bar=True)
        if self.trainer.state.fn == "fit":
            loss_sum, steps = self._train_loss
            self.history.append({"epoch": self.current_epoch, "step": self.global_step,
                                 "train_loss": loss_sum / steps if steps else None, **results})
            self._train_loss = [0.0, 0]

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        logits = self(batch)
        self._collect(f"pred:{self.predict_names[dataloader_idx]}", batch, logits)
        return None

    def on_predict_epoch_end(self) -> None:
        for name in self.predict_names:
            self.predictions[name] = self._gathered(f"pred:{name}")

    def logits_of(self, rows, batch_size: int = 128) -> np.ndarray:
        """The model's logits for tokenized ``rows`` (a Dataset with the token columns), in their order, in
        eval mode and fp32 without gradients (a method scoring candidate rows); train mode is restored."""
        from agora.data.batches import BatchView, Collator

        lengths = np.asarray(rows.with_format("numpy")["length"])
        order = np.argsort(lengths, kind="stable")
        collate = Collator(self.model.config.pad_token_id or 0, self.card.format == "regression")
        view, out, training = BatchView(rows), [None] * len(order), self.training
        self.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size].tolist()
                    batch = {k: v.to(self.device) for k, v in collate(view.__getitems__(chunk)).items()}
                    for pos, row in zip(chunk, self(batch).float().cpu().numpy()):
                        out[pos] = row
        finally:
            self.train(training)
        return np.stack(out) if out else np.zeros((0, 1), np.float32)

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self):
        opt = self.cfg.optim
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (no_decay if any(k in name for k in NO_DECAY) else decay).append(param)
        # fused: one kernel for every parameter (10x faster than the per-tensor loop for BORT's 56M on a CPU);
        # not with a gradient scaler (16-mixed), whose unscaling must come before clipping
        scaler = getattr(getattr(self.trainer, "precision_plugin", None), "scaler", None)
        fused = self.device.type in ("cpu", "cuda") and scaler is None
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=opt.lr, eps=opt.eps, betas=opt.betas, fused=fused or None,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(opt.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's mixed-precision plugin refuses to clip for a fused optimizer, in case a scaler
        unscales inside ``step``; the optimizer is fused only without a scaler, so clip as usual."""
        if gradient_clip_val and optimizer.defaults.get("fused"):
            from lightning.pytorch.plugins.precision import Precision

            Precision.clip_gradients(self.trainer.precision_plugin, optimizer, gradient_clip_val,
                                     gradient_clip_algorithm or "norm")
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["agora_recipe"] = self.cfg.to_dict()
        checkpoint["agora_history"] = list(self.history)
        checkpoint["agora_train_loss"] = list(self._train_loss)  # of the epoch in progress (a checkpoint inside it)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("agora_history", []))
        self._train_loss = list(checkpoint.get("agora_train_loss", [0.0, 0]))
