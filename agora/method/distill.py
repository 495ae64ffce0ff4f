"""Distillation losses: hard labels mixed with the teacher's soft targets.

Method card
-----------
What: per example, ``(1 - alpha) * CE(student, gold) + alpha * T^2 * KL(teacher_T || student_T)``
(Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"; the T^2 factor keeps the
soft term's gradient scale independent of T). Agora's paper appends the teacher's hard labels
(de Wynter 2020, arXiv 2010.07990); training on the teacher's probabilities is our choice,
measured to be what moves the student (docs/method.md, "Distil").

- Rows without teacher probabilities (``has_teacher`` false) get plain CE.
- Rows with ``soft_only`` true (generated rows with ``generated_targets: soft``) get the KL term
  alone at full weight; ``soft_only`` only applies where ``has_teacher`` is true.
- Teacher probabilities are stored at temperature 1. They are softened as ``p^(1/T)``
  renormalised, which equals ``softmax(teacher_logits / T)``.
- Everything is computed in fp32, whatever the dtype of the logits.
- Optional per-example weights give the weighted mean ``sum(w * l) / sum(w)``.

Hyperparameters: ``alpha`` in [0, 1] (0 = plain fine-tuning), ``temperature`` > 0 (T = 2 helped
in our measurements). Regression (STS-B): ``(1 - alpha) * MSE(gold) + alpha * MSE(teacher score)``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from agora.fit.module import HardLabelLoss


def _masks(n: int, device, has_teacher, soft_only):
    has = torch.ones(n, dtype=torch.bool, device=device) if has_teacher is None else has_teacher.to(device, torch.bool)
    soft = torch.zeros(n, dtype=torch.bool, device=device) if soft_only is None else soft_only.to(device, torch.bool)
    return has, soft & has


def _reduce(per_example: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_example.mean()
    w = weights.to(per_example.device, torch.float32)
    return (w * per_example).sum() / w.sum().clamp_min(torch.finfo(torch.float32).tiny)


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_probs: torch.Tensor | None,
    has_teacher: torch.Tensor | None,
    alpha: float,
    temperature: float,
    weights: torch.Tensor | None = None,
    soft_only: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed hard-label / soft-target loss for classification (and multiple choice).

    Args:
        student_logits: ``[B, C]`` logits, any float dtype (cast to fp32).
        labels: ``[B]`` gold class indices (ignored where ``soft_only``).
        teacher_probs: ``[B, C]`` teacher probabilities at T = 1; rows where ``has_teacher`` is
            false may hold anything (NaN included). None: no teacher at all (plain CE).
        has_teacher: ``[B]`` bool; None means every row has teacher probabilities.
        alpha: weight of the soft term, in [0, 1].
        temperature: softening temperature T > 0.
        weights: optional ``[B]`` per-example weights.
        soft_only: optional ``[B]`` bool; those rows train on the soft term alone.

    Returns:
        ``(loss, per_example)``: the (weighted) mean, and the ``[B]`` fp32 per-example losses.

    Example:
        >>> logits, gold, teacher = torch.tensor([[2.0, 0.0]]), torch.tensor([0]), torch.tensor([[0.9, 0.1]])
        >>> loss, per = distillation_loss(logits, gold, teacher, None, alpha=0.5, temperature=2.0)
        >>> round(loss.item(), 4)
        0.0653
    """
    logits = student_logits.float()
    n, device = logits.shape[0], logits.device
    if teacher_probs is None:
        has, soft = torch.zeros(n, dtype=torch.bool, device=device), torch.zeros(n, dtype=torch.bool, device=device)
    else:
        has, soft = _masks(n, device, has_teacher, soft_only)
    labels = torch.where(soft, torch.zeros_like(labels), labels.to(device))
    ce = F.cross_entropy(logits, labels.long(), reduction="none")
    if teacher_probs is None:
        return _reduce(ce, weights), ce
    if teacher_probs.shape != logits.shape:
        raise ValueError(f"teacher_probs shape {tuple(teacher_probs.shape)} != student logits {tuple(logits.shape)}")
    t = float(temperature)
    # Rows without a teacher get a uniform placeholder so NaNs never reach the gradient.
    uniform = torch.full_like(logits, 1.0 / logits.shape[1])
    p = torch.where(has[:, None], teacher_probs.to(device, torch.float32), uniform)
    p_t = torch.softmax(torch.log(p) / t, dim=-1)  # p^(1/T) renormalised == softmax(teacher_logits / T)
    log_q = F.log_softmax(logits / t, dim=-1)
    kl = (torch.xlogy(p_t, p_t) - p_t * log_q).sum(-1) * (t * t)
    a = float(alpha)
    per_example = torch.where(has, torch.where(soft, kl, (1 - a) * ce + a * kl), ce)
    return _reduce(per_example, weights), per_example


def regression_distillation_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    teacher_score: torch.Tensor | None,
    has_teacher: torch.Tensor | None,
    alpha: float,
    weights: torch.Tensor | None = None,
    soft_only: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 - alpha) * MSE(pred, gold) + alpha * MSE(pred, teacher score)`` per example, in fp32.

    Shapes ``[B]`` or ``[B, 1]``. Rows without a teacher get the gold MSE alone; ``soft_only``
    rows (with a teacher) get the teacher MSE alone. Returns ``(loss, per_example)``.
    """
    pred = pred.float().reshape(-1)
    n, device = pred.shape[0], pred.device
    target = target.to(device, torch.float32).reshape(-1)
    if teacher_score is None:
        gold = (pred - target) ** 2
        return _reduce(gold, weights), gold
    has, soft = _masks(n, device, has_teacher, soft_only)
    # Placeholders (NaN gold on soft rows, NaN teacher where absent) never reach the gradient.
    gold = (pred - torch.where(soft, pred.detach(), target)) ** 2
    soft_term = (pred - torch.where(has, teacher_score.to(device, torch.float32).reshape(-1), pred.detach())) ** 2
    a = float(alpha)
    per_example = torch.where(has, torch.where(soft, soft_term, (1 - a) * gold + a * soft_term), gold)
    return _reduce(per_example, weights), per_example


@dataclasses.dataclass(frozen=True)
class DistillSpec:
    """How a fit distils (``agora.alpha``, ``agora.temperature``, ``agora.generated_targets``)."""

    alpha: float
    temperature: float
    generated_targets: str = "soft"

    @classmethod
    def of(cls, acfg) -> "DistillSpec":
        return cls(acfg.alpha, acfg.temperature, acfg.generated_targets)


class DistillationLoss:
    """The training loss of a fit with Agora (the module's ``loss``): on rows with teacher probabilities
    (the batch's ``teacher_probs`` column, NaN where a row has none) the distillation loss above,
    generated rows (``is_generated``) on the soft term alone with ``generated_targets: soft``; weighted
    by the ``weight`` column; hard labels alone where the batch has no teacher column."""

    def __init__(self, spec: DistillSpec, regression: bool):
        self.spec, self.regression = spec, regression
        self.hard = HardLabelLoss(regression)

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        weight, teacher = batch.get("weight"), batch.get("teacher_probs")
        if teacher is None:
            return self.hard(logits, batch)
        spec = self.spec
        has = ~torch.isnan(teacher).any(-1)
        soft = batch["is_generated"] & has if spec.generated_targets == "soft" and "is_generated" in batch else None
        if self.regression:
            return regression_distillation_loss(logits[:, 0], batch["labels"], teacher[:, 0], has, spec.alpha,
                                                weight, soft)
        return distillation_loss(logits, batch["labels"], teacher, has, spec.alpha, spec.temperature, weight, soft)
