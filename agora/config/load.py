"""Where a recipe enters: read, overridden, validated once, Θ built.

A recipe is validated before any work starts. An unknown or mistyped key fails with a
:class:`~agora.errors.RecipeError` that names the file, the dotted key and what was expected.
Command-line and Python overrides use dotted keys (``trainer.max_epochs=3``, or
``trainer__max_epochs=3`` from Python); values are parsed and merged by OmegaConf. With a
``search:`` section, every θ's recipe is validated here too (:mod:`agora.config.space`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agora.config.messages import format_error
from agora.config.schema import RunConfig
from agora.config.space import Space, Theta, describe, thetas, trial_base
from agora.errors import RecipeError
from agora.files import DuplicateKeyError, read_yaml
from agora.paths import RECIPES_DIR

DEFAULT_TRAINER = {
    "max_epochs": 3,
    "precision": "auto",  # resolved per machine at the start of a run (agora.fit.precision)
    "gradient_clip_val": 1.0,
    "accelerator": "auto",
    "devices": "auto",
}


def resolve_recipe_path(path_or_name: str | os.PathLike) -> Path:
    """A recipe path, or the bare name of a shipped recipe (``rte`` -> recipes/rte.yaml)."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    name = str(path_or_name)
    shipped = RECIPES_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if "/" not in name and shipped.is_file():
        return shipped
    available = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    raise RecipeError(
        f"recipe '{name}' not found: no such file, and not a shipped recipe name. "
        f"Shipped recipes: {', '.join(available)}"
    )


def parse_override(text: str) -> tuple[str, Any]:
    """``trainer.max_epochs=3`` -> ("trainer.max_epochs", 3), the value parsed by OmegaConf
    (``2e-5`` is a float, ``null`` is None, ``[1, 2]`` a list)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if "=" not in text:
        raise RecipeError(f"override '{text}' must look like key.subkey=value")
    key = text.split("=", 1)[0].strip().lstrip("-")
    if not key:
        raise RecipeError(f"override '{text}' has no key (key.subkey=value)")
    try:
        parsed = OmegaConf.from_dotlist([f"{key}={text.split('=', 1)[1]}"])
        value = OmegaConf.to_container(parsed, resolve=False)
    except OmegaConfBaseException as err:
        raise RecipeError(f"override '{text}': {str(err).splitlines()[0]}") from None
    for part in key.split("."):
        value = value[part]
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with dotted (or ``__``-separated) keys set; a mapping value is merged into
    the section it names."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    conf = OmegaConf.create(data)
    for key, value in overrides.items():
        dotted = key.replace("__", ".")
        parent = OmegaConf.select(conf, dotted.rpartition(".")[0]) if "." in dotted else conf
        if "." in dotted and parent is not None and not OmegaConf.is_dict(parent):
            raise RecipeError(f"override '{key}': '{dotted.rpartition('.')[0]}' is a value, not a section")
        try:
            OmegaConf.update(conf, dotted, value, merge=True, force_add=True)
        except OmegaConfBaseException as err:
            raise RecipeError(f"override '{key}': {str(err).splitlines()[0]}") from None
    return OmegaConf.to_container(conf, resolve=False)


def _validate_one(data: dict[str, Any], source: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping of sections, got {type(data).__name__}")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_error(source, err, overrides)) from None
    cfg.trainer = {**DEFAULT_TRAINER, **cfg.trainer}
    return cfg


def build_space(data: dict[str, Any], cfg: RunConfig, source: str) -> Space:
    """Θ of a validated recipe (its dict ``data``), every θ's recipe validated."""
    s = cfg.search
    names, values, grid_size = thetas(s, cfg.seed)
    base = trial_base(data)
    out = []
    for i, theta in enumerate(values):
        where = f"{source} (search θ {describe(names, theta)})"
        try:
            theta_cfg = _validate_one(apply_overrides(base, dict(zip(names, theta))), where)
        except RecipeError as err:
            raise RecipeError(f"{err}\n  fix the value in search.{'space' if s.space else 'trials'}") from None
        out.append(Theta(i, tuple(theta), theta_cfg))
    return Space(names, out, grid_size)


def validate_recipe(data: dict[str, Any], source: str = "<recipe>", overrides: dict[str, Any] | None = None) -> RunConfig:
    """A typed, validated recipe; with ``search:``, its Θ (``cfg.space``) with every θ validated.
    ``overrides``: what was applied to the file's values (an error they cause names them, not the file)."""
    cfg = _validate_one(data, source, overrides)
    if cfg.search is not None:
        cfg._space = build_space(data, cfg, source)
    return cfg


def load_recipe(path_or_name: str | os.PathLike, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read, override and validate a recipe. Raises :class:`RecipeError` naming file and key."""
    path = resolve_recipe_path(path_or_name)
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as err:
        raise RecipeError(f"{path}, {err}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty; it needs at least 'task:'")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of sections, got {type(data).__name__}")
    data = apply_overrides(data, overrides or {})
    return validate_recipe(data, source=str(path), overrides=overrides)
