"""What a run leaves behind, written atomically by rank 0.

```
<run>/config.yaml           the fully resolved recipe
<run>/metrics.json          per-epoch and final scores, the best checkpoint, the paths
<run>/predictions/<split>.jsonl   {"idx", "label", ...} ordered by idx (dev splits carry "gold")
<run>/mistakes.json         per evaluated split: its row count and the idx of the rows the model gets wrong
<run>/best/                 save_pretrained export: model + tokenizer + label names
<run>/checkpoints/          Lightning checkpoints (the recipe is inside each)
<run>/logs/                 CSV logs of every logged value
```
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agora.data.cards import TaskCard
from agora.data.formats import find_mistakes, format_of
from agora.files import atomic_write, write_json, write_jsonl


def resolve_run_dir(configured: str | None, task: str) -> Path:
    """The run dir; every DDP rank agrees on it (the first process exports it to its children)."""
    if configured:
        path = Path(configured)
    elif os.environ.get("AGORA_RUN_DIR"):
        path = Path(os.environ["AGORA_RUN_DIR"])
    else:
        path = Path("runs") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.environ["AGORA_RUN_DIR"] = str(path)
    return path


def write_config(run_dir: Path, cfg_dict: dict[str, Any], header: str = "") -> None:
    text = yaml.safe_dump(cfg_dict, sort_keys=False)
    atomic_write(run_dir / "config.yaml", (header + "\n" if header else "") + text)


def write_mistakes(run_dir: Path, card: TaskCard, evaluated: dict[str, dict[str, np.ndarray]]) -> None:
    """``{split: {"rows": n, "mistakes": [idx, ...]}}`` over the model's rows (one per MultiRC answer,
    ReCoRD candidate, RACE question), whatever shape the prediction files take; Agora's rounds read
    E_gen's mistakes from it (argmax != gold; ``|score - gold| > 0.5`` for regression)."""
    regression = card.format == "regression"
    report = {name: {"rows": int(len(out["idx"])),
                     "mistakes": np.asarray(out["idx"])[find_mistakes(out["logits"], out["labels"], regression)].tolist()}
              for name, out in evaluated.items() if len(out.get("idx", ()))}
    write_json(run_dir / "mistakes.json", report, indent=None)


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(run_dir / "metrics.json", metrics)


def prediction_rows(card: TaskCard, out: dict[str, np.ndarray], with_gold: bool) -> list[dict]:
    """One JSON-able dict per example (per paragraph for MultiRC, per query for ReCoRD), ordered by
    idx: label name (or score) and probabilities; the shapes per format are in :mod:`agora.data.formats`.
    ``out`` is a gathered split (``idx``, ``logits``, ``labels``, and ``meta`` where the format needs it)."""
    return format_of(card).prediction_rows(card, out, out.get("meta"), with_gold)


def write_predictions(path: Path, rows: list[dict]) -> None:
    write_jsonl(path, rows)


def summary_table(task: str, scores: dict[str, float], run_dir: Path, best_dir: Path | None, extra: dict[str, str] | None = None) -> str:
    """A plain-text table of the final scores and where everything is."""
    def shown(key: str, value) -> str:  # scores x100; the log-likelihood (a tie-breaker) as it is
        if not isinstance(value, float):
            return str(value)
        return f"{value:.4f}" if key.endswith("/loglik") else f"{value * 100:.2f}"

    rows = [(k.removeprefix("val/"), shown(k, v)) for k, v in scores.items() if k != "val_score"]
    rows += [("run dir", str(run_dir))]
    if best_dir is not None:
        rows.append(("exported model", str(best_dir)))
    rows += list((extra or {}).items())
    width = max(len(k) for k, _ in rows)
    value_width = max(len(v) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (value_width + 2) + "+"
    title = f" {task}: final scores on the best checkpoint (x100) "
    out = [title.center(len(line), "="), line]
    out += [f"| {k.ljust(width)} | {v.ljust(value_width)} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)
