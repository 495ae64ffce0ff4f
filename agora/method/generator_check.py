"""A user's generator tried on one real row before any work: what it returns must be what Agora reads.

The interface (:mod:`agora.method.generators`): ``fn(segments, rng, n, **settings)`` returns a list of
at most ``n`` variants, each a tuple (or list) of as many strings as ``segments``. A generator that
raises, or returns anything else, would otherwise fail at the end of the first epoch, after a whole
epoch of training; here it is a :class:`~agora.errors.RecipeError` naming the generator, the row and
what was expected, before the run dir exists.
"""

from __future__ import annotations

import random
from typing import Any

from agora.errors import RecipeError

INTERFACE = ("fn(segments: tuple[str, ...], rng: random.Random, n: int, **settings) -> a list of at most n "
             "variants, each a tuple of len(segments) strings")


def check_on_row(generator: Any, segments: tuple[str, ...], n: int, where: str, name: str | None = None) -> None:
    """Call ``generator`` (a function, or a batch generator holding one in ``fn`` with its ``settings``) on
    ``segments`` and check its answer: a list, at most ``n`` variants, each of ``len(segments)`` strings.
    A batch generator without a function (``nearest``: it draws from a pool) is not called here."""
    from agora.method.generators.base import BatchGenerator, FunctionGenerator

    if not isinstance(generator, BatchGenerator):
        generator = FunctionGenerator(generator)
    if not isinstance(generator, FunctionGenerator):
        return
    fn, settings, name = generator.fn, dict(generator.settings), name or generator.name
    head = f"agora.generator {name!r}, called on {where} {segments!r} with n={n}"
    try:
        out = fn(tuple(segments), random.Random(0), n, **settings)
    except Exception as err:
        raise RecipeError(f"{head}, raised {type(err).__name__}: {err}. Fix the generator (or "
                          f"agora.generator_settings); it must be {INTERFACE}") from err
    problem = _problem(out, len(segments), n)
    if problem:
        raise RecipeError(f"{head}, returned {problem}; it must be {INTERFACE}")


def _problem(out: Any, arity: int, n: int) -> str | None:
    """What is wrong with a generator's answer, or None."""
    if not isinstance(out, (list, tuple)):
        return f"a {type(out).__name__} ({_short(out)}), not a list"
    if len(out) > n:
        return f"{len(out)} variants, more than n={n}"
    for i, variant in enumerate(out):
        if not isinstance(variant, (list, tuple)):
            return f"variant {i} as a {type(variant).__name__} ({_short(variant)}), not a tuple of {arity} string(s)"
        if len(variant) != arity:
            return f"variant {i} with {len(variant)} segment(s) for an input of {arity} ({_short(variant)})"
        bad = [j for j, seg in enumerate(variant) if not isinstance(seg, str)]
        if bad:
            return (f"variant {i} whose segment {bad[0]} is a {type(variant[bad[0]]).__name__} "
                    f"({_short(variant[bad[0]])}), not a string")
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_recipe_generators(cfg, card) -> None:
    """Every user generator (an import path in ``agora.generator``) of the recipe, and of every θ of its
    search, tried on the first row of the task's train split (read as the run will read it, cached)."""
    from agora.method.generators import GENERATORS, make_generator

    space = cfg.space
    configs = [cfg] + ([theta.cfg for theta in space.thetas] if space is not None else [])
    wanted: dict[tuple, Any] = {}
    for c in configs:
        acfg = c.agora
        if acfg.enabled and isinstance(acfg.generator, str) and acfg.generator not in GENERATORS:
            key = (acfg.generator, repr(sorted(acfg.generator_settings.items())), acfg.variants_per_source)
            wanted.setdefault(key, acfg)
    if not wanted or not card.train_split:
        return
    segments, where = first_row(cfg, card)
    for (name, _, n), acfg in wanted.items():
        check_on_row(make_generator(name, acfg.generator_settings), segments, n, where, name)


def first_row(cfg, card) -> tuple[tuple[str, ...], str]:
    """The train split's first row as the text segments G reads, and where it comes from."""
    from agora.data.rows import inputs_of
    from agora.data.splits import load_split
    from agora.paths import cache_dir, data_dir

    split = card.train_split
    ds = load_split(card, split, data_dir(cfg.data.dir), cfg.data.source, cache_dir(cfg.data.cache_dir),
                    cfg.data.files.get(split))
    if len(ds) == 0:
        raise RecipeError(f"task {card.name}: the train split is empty; agora.generator has no row to try")
    return inputs_of(card, ds[:1])[0], f"the first row of {card.name}'s {split} split (idx {ds[0]['idx']})"
