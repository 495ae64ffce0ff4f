"""Θ, the hyperparameter space of Agora's rounds, as the recipe states it, and the recipe's other
checks that reach beyond one field (searched keys).

Method card
-----------
**θ** is an ordered tuple of recipe values, one per searched key, in the order the recipe gives
(most influential first: pruning compares θs by common prefix, see :mod:`agora.search.pruning`).
Θ is the grid of ``search.space`` or the explicit list ``search.trials``;
``search.budget.max_thetas`` thins a larger Θ to a seeded sample (the recipe's seed), kept in Θ's
order (our choice). Every θ's recipe (θ applied, ``search`` removed, trial output settings) is
validated when the recipe enters (:func:`build_space`), so a bad value fails before any work,
and the search runs those typed recipes without validating them again.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np


FORBIDDEN = ("task", "output", "search")
"""Top-level sections a search may not vary (they name the run, not a hyperparameter)."""


def check_space(space: dict[str, list], trials: list[dict]) -> None:
    """Θ's shape: a grid or a list (not both, not neither), no empty value list, same keys per trial."""
    if space and trials:
        raise ValueError("give either search.space (a grid) or search.trials (an explicit list), not both")
    if not space and not trials:
        raise ValueError("search needs a space: search.space (key -> list of values) or search.trials "
                         "(a list of {key: value} mappings)")
    for key, values in space.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"search.space.{key}: give a non-empty list of values (got {values!r})")
    if trials:
        keys = list(trials[0])
        if not keys:
            raise ValueError("search.trials[0] is empty: each trial maps recipe keys to values")
        for i, trial in enumerate(trials):
            if set(trial) != set(keys):
                raise ValueError(f"search.trials[{i}] has keys {sorted(trial)}; every trial needs exactly "
                                 f"the keys of the first: {keys}")


def space_names(search) -> list[str]:
    return list(search.space) if search.space else list(search.trials[0])


def check_keys(cfg, search) -> None:
    """Every searched key is a field of the recipe (``optim.lr``, ``seed``, ``trainer.max_epochs``)."""
    from pydantic import BaseModel

    for key in space_names(search):
        parts = key.split(".")
        where = f"search.space.{key}" if search.space else f"search.trials key '{key}'"
        if parts[0] in FORBIDDEN:
            raise ValueError(f"{where}: '{parts[0]}' cannot be searched (it names the run, not a hyperparameter)")
        node: Any = cfg
        for i, part in enumerate(parts):
            if isinstance(node, BaseModel):
                if part not in type(node).model_fields:
                    known = ", ".join(sorted(type(node).model_fields))
                    raise ValueError(f"{where}: unknown key '{'.'.join(parts[: i + 1])}' (known here: {known})")
                node = getattr(node, part)
            elif isinstance(node, dict):
                break  # free-form sections (trainer, generator_settings) are checked when θ is applied
            else:
                raise ValueError(f"{where}: '{'.'.join(parts[:i])}' is a value, not a section")
        else:
            if isinstance(node, BaseModel):
                raise ValueError(f"{where}: '{key}' is a section; search one of its keys "
                                 f"(e.g. {key}.{next(iter(type(node).model_fields))})")


def thetas(search, seed: int = 0) -> tuple[list[str], list[tuple], int]:
    """``(names, Θ, size before the budget)``: the ordered keys and the θ tuples, thinned to
    ``budget.max_thetas`` by a sample seeded with the recipe's seed (kept in Θ's order)."""
    names = space_names(search)
    if search.space:
        full = list(itertools.product(*(search.space[n] for n in names)))
    else:
        full = [tuple(trial[n] for n in names) for trial in search.trials]
    cap = search.budget.max_thetas
    if cap is None or cap >= len(full):
        return names, full, len(full)
    keep = np.sort(np.random.default_rng(seed).choice(len(full), size=cap, replace=False))
    return names, [full[i] for i in keep], len(full)


def describe(names: list[str], theta: tuple) -> str:
    return ", ".join(f"{n.split('.')[-1]}={v}" for n, v in zip(names, theta))


@dataclasses.dataclass(frozen=True)
class Theta:
    id: int
    values: tuple
    cfg: Any
    """The recipe of this θ's fits (:class:`agora.config.schema.RunConfig`): θ applied, no ``search``,
    no checkpoints but the export; the search sets each fit's seed, output dir and ``trial``."""


@dataclasses.dataclass(frozen=True)
class Space:
    names: list[str]
    thetas: list[Theta]
    grid_size: int
    """Θ's size before ``budget.max_thetas``."""


def trial_base(data: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict as one fit of its search runs it: no ``search``, the export kept, no checkpoints."""
    data = {k: v for k, v in data.items() if k != "search"}
    data["output"] = {**(data.get("output") or {}), "save_checkpoints": False, "resume_from": None, "overwrite": False,
                      "export": True}
    return data
