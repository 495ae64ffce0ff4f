"""The one registry of generators G: a recipe's ``agora.generator`` name -> how to build it.

A built-in generator is one module in this folder plus one line in :data:`GENERATORS`. Its
``target`` is the import path of either a per-input function ``fn(segments, rng, n, **settings)``
(wrapped in :class:`~agora.method.generators.base.FunctionGenerator`) or a
:class:`~agora.method.generators.base.BatchGenerator` subclass (built with the settings as keyword
arguments). ``needs_pool`` is declared here, so the recipe's schema knows, when the recipe loads,
that ``data.unlabelled`` must be set, without importing the generator. A name that is not
registered is an import path (``package.module:function`` or ``package.module.Class``) and follows
the same two rules. See ``docs/method.md``, "Adding a generator".

This module imports nothing heavy: the recipe's schema (:mod:`agora.config.schema`) consults it,
the one import from the config layer into the method layer (declared in ``.importlinter``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """One registered generator."""

    target: str
    """Import path (``module:attr``) of a per-input function or of a ``BatchGenerator`` subclass."""
    needs_pool: bool = False
    """It draws from the unlabelled pool: the recipe must set ``data.unlabelled``."""
    summary: str = ""


GENERATORS: dict[str, GeneratorSpec] = {
    "eda": GeneratorSpec("agora.method.generators.eda:eda", summary="random word swaps, deletions, duplications"),
    "mlm": GeneratorSpec("agora.method.generators.mlm:mlm", summary="masked words refilled by a masked LM"),
    "nearest": GeneratorSpec("agora.method.generators.nearest:NearestGenerator", needs_pool=True,
                             summary="the unlabelled pool's rows nearest to each source"),
}

HELP = (f"valid built-in generators are {', '.join(repr(g) for g in GENERATORS)}; a custom generator is "
        "named by its import path, 'package.module:function' or 'package.module.function'")


def import_target(path: str, what: str = "generator") -> Callable:
    """The callable at ``package.module:attr`` (or ``package.module.attr``); ValueError naming the path,
    what went wrong, and the valid choices."""
    if not isinstance(path, str) or ("." not in path and ":" not in path):
        raise ValueError(f"unknown {what} {path!r}: {HELP}")
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError) as err:
        raise ValueError(f"cannot import {what} {path!r} ({err}): {HELP}") from err
    except Exception as err:  # the module's own code failed: say so, naming it
        raise ValueError(f"cannot import {what} {path!r}: importing module '{module_name}' raised "
                         f"{type(err).__name__}: {err} (fix that module)") from err
    try:
        obj = getattr(module, attr)
    except AttributeError as err:
        raise ValueError(f"cannot import {what} {path!r} ({err}): {HELP}") from err
    if not callable(obj):
        raise ValueError(f"{what} {path!r} is not callable: {HELP}")
    return obj


def spec_of(name: str) -> GeneratorSpec:
    """The registered spec of ``name``, or one for an import path (imported now: ValueError if it cannot be)."""
    if name in GENERATORS:
        return GENERATORS[name]
    target = import_target(name)
    return GeneratorSpec(name, needs_pool=_is_batch_class(target) and target.needs_pool)


def _is_batch_class(obj) -> bool:
    from agora.method.generators.base import BatchGenerator

    return inspect.isclass(obj) and issubclass(obj, BatchGenerator)


def build(name, settings: dict | None = None):
    """The :class:`~agora.method.generators.base.BatchGenerator` a recipe names (``agora.generator``, with
    ``agora.generator_settings``). A ``BatchGenerator`` instance (from code) is returned as it is; a
    plain function is wrapped."""
    from agora.errors import RecipeError
    from agora.method.generators.base import BatchGenerator, FunctionGenerator

    if isinstance(name, BatchGenerator):
        return name
    if callable(name):
        return FunctionGenerator(name, settings)
    try:
        target = import_target(spec_of(name).target)
    except ValueError as err:
        raise RecipeError(f"agora.generator: {err}") from None
    if _is_batch_class(target):
        return target(**(settings or {}))
    return FunctionGenerator(target, settings, name)
