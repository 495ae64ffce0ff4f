"""Agora in one fit: what it adds to :func:`agora.fit.run.run_fit` (callback, loss, report).

With ``agora.enabled: false`` the fit is plain fine-tuning (nothing added; ``metrics.json`` says
``agora: {enabled: false}``). With Agora on: :class:`agora.method.callback.AgoraCallback` (expand,
reweight, the teacher's targets), :class:`agora.method.distill.DistillationLoss` as the training
loss, and loaders rebuilt every epoch (the training rows grow between epochs).
"""

from __future__ import annotations

from pathlib import Path

from agora.config import RunConfig
from agora.data.cards import TaskCard
from agora.fit.run import Extension
from agora.method.callback import AgoraCallback
from agora.method.distill import DistillationLoss, DistillSpec


def agora_extension(cfg: RunConfig, card: TaskCard, run_dir: Path) -> Extension:
    """The ``extend`` of :func:`agora.fit.run.run_fit` for a recipe; checks the teacher (path, labels) now."""
    if not cfg.agora.enabled:
        return Extension("agora", report=lambda: {"enabled": False})
    callback = AgoraCallback(cfg, card, output_dir=run_dir)
    return Extension("agora", callbacks=[callback], report=callback.report,
                     loss=DistillationLoss(DistillSpec.of(cfg.agora), card.format == "regression"),
                     trainer_kwargs={"reload_dataloaders_every_n_epochs": 1})
