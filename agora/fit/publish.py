"""What a finished run does once its ``metrics.json`` is written (rank 0): the model card in ``best/``
(:mod:`agora.fit.model_card`), the trackers' final scores and their closing (:mod:`agora.fit.trackers`), and
the upload of ``output.push_to_hub`` (:mod:`agora.fit.hub`; a search pushes its returned student, its fits
never do)."""

from __future__ import annotations

import json
from pathlib import Path

from agora.config import RunConfig
from agora.data.cards import TaskCard
from agora.fit import hub, model_card, trackers


def after_run(run_dir: Path, cfg: RunConfig, task: TaskCard, loggers=(), step: int = 0, search: bool = False) -> None:
    """Card, trackers and upload of a finished fit (``loggers``: its trackers; ``step``: its last) or search."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    best = run_dir / "best"
    if (best / "config.json").is_file():
        model_card.write(best, cfg.to_dict(), task, metrics)
    if search:
        trackers.close_search(cfg, run_dir, metrics)
    else:
        trackers.finish(list(loggers), metrics, step)
    if cfg.output.push_to_hub and cfg.trial is None:
        hub.push(run_dir, cfg.output.push_to_hub, private=cfg.output.hub_private)
