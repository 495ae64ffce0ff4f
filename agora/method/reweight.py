"""Metric-based reweighting: more weight on the examples the student does badly on.

Method card
-----------
What: per-example weights, recomputed each epoch from the student's per-example loss (or 0/1
error) on the previous epoch, with the total weight of generated rows capped. The Agora paper
(de Wynter 2020, arXiv 2010.07990) focuses training on the student's mistakes; the weighting
formula below is our choice (a relative of loss-based selection such as Composer's
``selective_backprop``).

Formula (our choice)::

    s = loss / max(loss)         (kind="loss", s in [0, 1])   or   s = error in {0, 1} (kind="error")
    w = (1 + s) ** gamma         gamma >= 0; gamma = 0 gives uniform weights
    w = w * n / sum(w)           mean weight 1 over all rows
    cap: if sum(w[generated]) > rho * n, scale generated rows by rho * n / G and original rows
         by (1 - rho) * n / (n - G), so generated rows hold exactly rho of the total n

So ``gamma`` is log2 of the largest weight ratio before the cap (gamma = 1: the hardest row
weighs twice the easiest). Rows with an unknown value (NaN, e.g. rows added since the last
epoch) get the mean pre-normalisation weight of the known rows. The cap needs at least one
original row; ``rho = 1`` never caps. Pure numpy and deterministic, so every DDP rank computes
the same weights from the same (gathered) losses.

Hyperparameters: ``gamma`` (strength, e.g. 0..2), ``rho`` in [0, 1] (share of generated rows).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F



def example_weights(
    per_example_loss_or_error: np.ndarray,
    is_generated: np.ndarray,
    gamma: float,
    rho: float,
    kind: str = "loss",
) -> np.ndarray:
    """Per-example weights with mean 1 and generated rows holding at most ``rho`` of the total.

    Args:
        per_example_loss_or_error: ``[n]`` non-negative losses (kind="loss") or 0/1 errors
            (kind="error") from the last epoch; NaN for rows not yet seen.
        is_generated: ``[n]`` bool, true for generated (augmented) rows.
        gamma: strength, >= 0.
        rho: cap on the generated rows' share of the total weight, in [0, 1].
        kind: "loss" or "error".

    Returns:
        float64 ``[n]`` weights.

    The settings (``gamma >= 0``, ``rho`` in [0, 1], ``kind``) are checked once, by the recipe's schema
    (:class:`agora.config.AgoraConfig`), not on every call.

    Raises:
        ValueError: bad shapes, negative or infinite values.

    Example:
        >>> example_weights(np.array([0.1, 2.0, 0.5]), np.array([False, False, True]), gamma=1, rho=0.2).round(3)
        array([0.826, 1.574, 0.6  ])
    """
    values = np.asarray(per_example_loss_or_error, dtype=np.float64).reshape(-1)
    gen = np.asarray(is_generated, dtype=bool).reshape(-1)
    if values.shape != gen.shape:
        raise ValueError(f"example_weights: {values.size} values but {gen.size} is_generated flags")
    n = values.size
    if n == 0:
        return np.zeros(0)
    known = ~np.isnan(values)
    if (values[known] < 0).any():
        raise ValueError("example_weights: losses / errors must be non-negative")
    if np.isinf(values).any():
        raise ValueError(f"example_weights: the last epoch's loss / error of row {int(np.flatnonzero(np.isinf(values))[0])} "
                         "is infinite; no weight is derived from it")
    if kind == "error":
        s = (values[known] > 0).astype(np.float64)
    else:
        top = values[known].max(initial=0.0)
        s = values[known] / top if top > 0 else np.zeros(int(known.sum()))
    w = np.empty(n)
    w[known] = (1.0 + s) ** gamma
    w[~known] = w[known].mean() if known.any() else 1.0
    w *= n / w.sum()
    total_gen = w[gen].sum()
    if total_gen > rho * n and not gen.all():
        w[gen] *= rho * n / total_gen
        w[~gen] *= (1 - rho) * n / (n - total_gen)
    return w


def weight_stats(w: np.ndarray, is_generated: np.ndarray) -> dict[str, float]:
    """Summary for logs: min, max, mean weight and the generated rows' share of the total."""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    gen = np.asarray(is_generated, dtype=bool).reshape(-1)
    total = w.sum()
    return {
        "min": float(w.min()) if w.size else 0.0,
        "max": float(w.max()) if w.size else 0.0,
        "mean": float(w.mean()) if w.size else 0.0,
        "generated_share": float(w[gen].sum() / total) if total > 0 else 0.0,
        "n": int(w.size),
        "n_generated": int(gen.sum()),
    }


def per_example_stats(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, error)`` per row against the hard label, fp32 on the logits' device: CE (squared
    error for regression) and 0/1 (argmax != label; ``|prediction - label| > 0.5`` for regression)."""
    logits = logits.detach().float()
    if regression:
        return (logits[:, 0] - labels.float()) ** 2, ((logits[:, 0] - labels.float()).abs() > 0.5).float()
    return F.cross_entropy(logits, labels.long(), reduction="none"), (logits.argmax(-1) != labels).float()
