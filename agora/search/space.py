"""Θ, the hyperparameter space of Agora's rounds, and the pruning rule (pure functions).

Method card
-----------
What: Agora trains one student per hyperparameter set θ of a finite Θ, then prunes Θ after every
round (de Wynter 2020, arXiv 2010.07990, and AGORA.md "The loop", "Pruning").

- **θ** is an ordered tuple of recipe values, one per searched key, in the order the recipe
  gives (most influential first). Θ is the grid of ``search.space`` or the explicit list
  ``search.trials``; ``search.budget.max_thetas`` thins a larger Θ to a seeded sample, kept in
  Θ's order (our choice).
- **Pruning** (:func:`prune`): remove the worst θ and every θ whose common prefix with it is the
  longest found (a prefix of length 0 is no kinship: then only the worst goes). Safeguard: at
  least ``min_prune_fraction`` of Θ goes (rounded up), next-worst first. A θ whose fit failed
  (diverged) is removed with its reason; in a round with failures the prefix rule does not fire
  (our choice: the failed θs are the worst). Ties in score go against the later θ in Θ's order.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
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


def overrides(names: list[str], theta: tuple) -> dict[str, Any]:
    return dict(zip(names, theta))


def describe(names: list[str], theta: tuple) -> str:
    return ", ".join(f"{n.split('.')[-1]}={v}" for n, v in zip(names, theta))


@dataclasses.dataclass
class Pruning:
    """Which θs (positions in the ranked Θ) go, and why."""

    removed: list[int]
    reasons: dict[int, str]
    rule: str
    """``prefix``, ``prefix+safeguard``, ``failed``, ``failed+safeguard``."""


def common_prefix(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prune(theta_list: list[tuple], scores: list[float | None], min_fraction: float = 0.25) -> Pruning:
    """Pruning after a round (AGORA.md, "Pruning").

    Args:
        theta_list: Θ in its order (ordered tuples, most influential value first).
        scores: E_sel score of each θ (higher is better); None for a failed fit.
        min_fraction: safeguard, the least share of Θ removed (rounded up, at least one θ).

    Returns:
        A :class:`Pruning` of positions into ``theta_list``.

    Example:
        >>> p = prune([(1, 0), (1, 1), (2, 0), (2, 1)], [0.9, 0.8, 0.5, 0.7], 0.25)
        >>> p.removed, p.rule
        ([2, 3], 'prefix')
    """
    n = len(theta_list)
    if n == 0:
        return Pruning([], {}, "empty")
    # rank worst first; a failed fit is worst; ties: the later θ is worse
    order = sorted(range(n), key=lambda i: (-math.inf if scores[i] is None else scores[i], -i))
    reasons: dict[int, str] = {}
    failed = [i for i in range(n) if scores[i] is None]
    if failed:
        rule = "failed"
        for i in failed:
            reasons[i] = "failed fit"
    else:
        rule = "prefix"
        worst = order[0]
        reasons[worst] = "worst score"
        lengths = {i: common_prefix(theta_list[i], theta_list[worst]) for i in range(n) if i != worst}
        longest = max(lengths.values(), default=0)
        if longest > 0:
            for i, length in lengths.items():
                if length == longest:
                    reasons[i] = f"shares the first {longest} value(s) with the worst θ"
    need = min(n, max(1, math.ceil(min_fraction * n - 1e-9)))
    for i in order:
        if len(reasons) >= need:
            break
        if i not in reasons:
            reasons[i] = f"safeguard: at least {min_fraction:g} of Θ goes"
            rule = rule.split("+")[0] + "+safeguard"
    return Pruning(sorted(reasons), reasons, rule)


def max_fits(n_thetas: int, min_fraction: float, max_replays: int, max_rounds: int | None = None) -> int:
    """The most fits a search can make (every round replayed the most, the least pruned)."""
    total, n, rounds = 0, n_thetas, 0
    while n > 0 and (max_rounds is None or rounds < max_rounds):
        for _ in range(1 + max_replays):
            if max_rounds is not None and rounds >= max_rounds:
                break
            total += n
            rounds += 1
        n -= min(n, max(1, math.ceil(min_fraction * n - 1e-9)))
    return total
