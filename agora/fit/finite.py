"""A non-finite training loss stops the fit: an error naming the epoch, the step and the likeliest cause.

Checked on every training step, before the backward pass, so the weights never take a NaN step. Under
DDP the ranks decide together (one ``reduce_boolean_decision`` per step): all stop at the same step.
The error is raised before anything is exported or reported as final; the run dir keeps what it had
(``checkpoints/last.ckpt`` from the last finished epoch when checkpoints are on: ``output.resume_from:
last`` continues from it once the cause is fixed).
"""

from __future__ import annotations

from pathlib import Path

import torch

from agora.errors import AgoraError


class NonFiniteLoss(AgoraError, FloatingPointError):
    """The training loss became NaN or infinite; the fit stopped."""


def _first_bad(batch: dict, key: str) -> str | None:
    """``idx 12: inf`` for the first row of ``batch[key]`` holding a non-finite value, else None."""
    values = batch.get(key)
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        return None
    rows = values.detach().float().reshape(len(values), -1)
    if key == "teacher_probs":  # rows without a teacher are NaN on purpose
        rows = rows[~torch.isnan(rows).all(dim=1)] if len(rows) else rows
    bad = (~torch.isfinite(rows)).any(dim=1).nonzero().flatten()
    if not len(bad):
        return None
    i = int(bad[0])
    idx = batch.get("idx")
    name = f"idx {int(idx[i])}" if isinstance(idx, torch.Tensor) and key != "teacher_probs" else f"row {i}"
    return f"{name}: {rows[i].tolist() if rows.shape[1] > 1 else float(rows[i, 0])}"


def causes(batch: dict, logits: torch.Tensor, lr: float, precision: str) -> list[str]:
    """The likeliest causes, most specific first: a non-finite input in the batch, then the outputs."""
    found = []
    for key, what in (("labels", "a non-finite label"), ("weight", "a non-finite row weight"),
                      ("teacher_probs", "a non-finite teacher output")):
        where = _first_bad(batch, key)
        if where is not None:
            found.append(f"the batch holds {what} ({where}): fix the data, or the source that made it")
    if not torch.isfinite(logits.detach().float()).all():
        found.append(f"the model's outputs are not finite: its weights diverged (optim.lr {lr:g} may be too high; "
                     "lower it or raise optim.warmup_ratio)")
        if "16" in precision:
            found.append(f"trainer.precision {precision} overflowed (its range ends at 65504): try bf16-mixed or "
                         "32-true")
    if not found:
        found.append(f"optim.lr {lr:g} too high (lower it), or trainer.precision {precision} overflowing "
                     "(try 32-true), or a non-finite label in the training data")
    return found


def check_loss(module, loss: torch.Tensor, logits: torch.Tensor, batch: dict, batch_idx: int) -> None:
    """Raise :class:`NonFiniteLoss` when the step's loss is NaN or infinite (on any rank, under DDP)."""
    bad = not bool(torch.isfinite(loss.detach()).all())
    trainer = module.trainer
    if trainer.world_size > 1:
        bad = bool(trainer.strategy.reduce_boolean_decision(bad, all=False))
    if not bad:
        return
    cfg = module.cfg
    here = causes(batch, logits, cfg.optim.lr, str(trainer.precision))
    run_dir = Path(trainer.default_root_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    after = (f"{last} (the last finished epoch) stays: fix the cause, then continue it with "
             "output.resume_from: last" if last.is_file() else
             "no checkpoint to continue from (output.save_checkpoints is off, or no epoch finished): fix the "
             "cause and start again")
    value = float(loss.detach())
    what = f"the training loss is {value}" if value != value or abs(value) == float("inf") else \
        "the training loss is not finite on another rank"
    raise NonFiniteLoss(
        f"{what} at epoch {trainer.current_epoch}, step {trainer.global_step} "
        f"(batch {batch_idx} of the epoch): the fit stops; nothing is exported or reported as final. Likeliest "
        f"causes: {'; '.join(here)}. In {run_dir}: {after}")


def diverged(fit, job) -> str | None:
    """``fit(job)``; None when it finished, ``"diverged: ..."`` when its loss went NaN or infinite (a search
    records that fit as failed and goes on)."""
    try:
        fit(job)
    except NonFiniteLoss as err:
        return f"diverged: {str(err).split(': the fit stops')[0]}"
    return None
