"""What every generator G is to the expansion step: a :class:`BatchGenerator`.

A generator turns a list of inputs (tuples of text segments) into variants, up to ``n`` per input,
reproducibly from a seed and one key per input. Per-input functions (``eda``, ``mlm``, a user's
``package.module:function``) are wrapped in :class:`FunctionGenerator`; a generator that needs more
than one input at a time (``nearest``, which draws rows of the unlabelled pool) subclasses
:class:`BatchGenerator` itself and says so with ``needs_pool``. The registry
(:mod:`agora.method.generators.registry`) maps a recipe's ``agora.generator`` to one of them.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import inspect
import random
from collections.abc import Sequence
from typing import ClassVar

from agora.method.generators.common import Generator, Segments, keep, stable_seed


@dataclasses.dataclass
class GenerationResult:
    """Variants with the position of their source example and rejection counts by reason."""

    variants: list[Segments]
    sources: list[int]
    rejected: dict[str, int]

    def __len__(self) -> int:
        return len(self.variants)

    def __iter__(self):
        """Yield ``(source position, variant)`` pairs."""
        return iter(zip(self.sources, self.variants))


class BatchGenerator(abc.ABC):
    """A generator in the form the expansion step calls: ``prepare`` once per fit (with the unlabelled
    pool where ``needs_pool``), then ``generate`` at every expansion; ``state_dict`` goes into
    checkpoints so a resumed fit draws what the uninterrupted one draws."""

    needs_pool: ClassVar[bool] = False
    """True: :meth:`prepare` must be given the unlabelled pool (``data.unlabelled``) before generating."""
    name: str = "generator"

    def prepare(self, pool=None, default_model: str | None = None, cache_dir=None, teacher=None) -> None:
        """Set-up before the first :meth:`generate` (nothing by default). ``pool``: the unlabelled rows
        (:class:`agora.data.pool.Pool`); ``default_model``: the teacher's path (a model to embed with);
        ``cache_dir``: where to cache what is expensive to recompute; ``teacher``: the teacher S
        (:class:`agora.method.teacher.Teacher`; ``nearest`` keeps its outputs from the pass that embeds the pool)."""

    @abc.abstractmethod
    def generate(self, examples: Sequence[Segments], n: int, seed: int, keys: Sequence | None = None) -> GenerationResult:
        """Up to ``n`` variants of every example, each example seeded from ``(seed, keys[i])``."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (nothing by default)."""


class FunctionGenerator(BatchGenerator):
    """A per-input generator function (``eda``, ``mlm``, an import path) as a :class:`BatchGenerator`."""

    def __init__(self, fn: Generator, settings: dict | None = None, name: str | None = None):
        self.fn, self.settings = fn, dict(settings or {})
        self.name = name or getattr(fn, "__name__", repr(fn))

    def _takes_counter(self) -> bool:
        try:
            return "rejected" in inspect.signature(self.fn).parameters
        except (TypeError, ValueError):
            return False

    def generate(self, examples: Sequence[Segments], n: int, seed: int, keys: Sequence | None = None) -> GenerationResult:
        """Up to ``n`` variants of every example; each example gets its own
        ``random.Random(stable_seed(seed, key))`` (see :func:`agora.method.generators.generate`)."""
        settings = dict(self.settings)
        rejected: collections.Counter = collections.Counter({"band": 0, "duplicate": 0, "identical": 0})
        if self._takes_counter():
            settings["rejected"] = rejected
        result = GenerationResult([], [], {})
        for pos, example in enumerate(examples):
            example = tuple(example)
            rng = random.Random(stable_seed(seed, pos if keys is None else keys[pos]))
            seen: set = set()
            for variant in self.fn(example, rng, n, **settings)[:n]:
                variant = tuple(variant)
                if len(variant) != len(example):
                    raise ValueError(
                        f"generator {self.name!r} returned {len(variant)} segments for an input of {len(example)}"
                    )
                if keep(variant, example, seen, rejected):
                    result.variants.append(variant)
                    result.sources.append(pos)
        result.rejected = dict(rejected)
        return result
