"""Where shipped task cards and recipes live, in a checkout and in an installed wheel; where data and caches
live."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    # Installed wheel: agora/tasks, agora/recipes. Checkout (editable or PYTHONPATH): ../tasks.
    inside = _PACKAGE / name
    return inside if inside.is_dir() else _PACKAGE.parent / name


TASKS_DIR = _shipped("tasks")
RECIPES_DIR = _shipped("recipes")


def data_dir(configured: str | None = None) -> Path | None:
    """The benchmark data root: the recipe's ``data.dir``, else ``$AGORA_DATA_DIR``."""
    value = configured or os.environ.get("AGORA_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_dir(configured: str | None = None) -> Path:
    value = configured or os.environ.get("AGORA_CACHE_DIR") or Path.home() / ".cache" / "agora"
    return Path(value).expanduser()
