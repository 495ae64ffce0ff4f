"""Generating functions G: an example input -> new inputs that are similar but not identical.

Method card
-----------
What: Agora grows the training set with variants of existing inputs (de Wynter 2020,
arXiv 2010.07990, the generating function G; labels come later from the teacher S).
An input is a tuple of text segments: ``(text_a,)``, ``(text_a, text_b)``, or for
multiple choice ``(context, question, option_1, ..., option_k)``.

Interface (any importable callable can be used in a recipe)::

    fn(segments: tuple[str, ...], rng: random.Random, n: int, **settings)
        -> list[tuple[str, ...]]   # up to n variants, same arity, none identical, no duplicates

A generator that declares a ``rejected`` keyword receives a ``collections.Counter`` to count
the candidates it threw away, by reason.

Built-ins:

- ``eda`` (model-free; our choice, after Wei & Zou 2019 "EDA" without a thesaurus): per
  perturbed segment, ``max(1, round(p * words))`` random edits, each a swap of two words, a
  deletion, or a duplication of a word at a random position. Settings: ``p`` (default 0.1).
- ``mlm`` (our choice, in the spirit of TinyBERT's augmentation, Jiao et al. 2020): mask
  ``max(1, round(mask_prob * words))`` words (default 15%) of each perturbed segment
  (punctuation attached to a word is kept), refill every mask in one forward pass of a masked
  LM, sampling among its ``top_k`` (default 5) whole-word candidates in proportion to their
  probability. A variant is rejected when any
  perturbed segment's token-Jaccard similarity to its source (lowercase whitespace tokens, as
  sets) lies outside ``[min_jaccard, max_jaccard]`` (default 0.6..0.95). Setting ``model``: a
  local directory or hub id (``AutoModelForMaskedLM`` + ``AutoTokenizer``), loaded once per
  process.

Both accept ``perturb_segments`` (indices of the segments to perturb). Default: every segment
for single sentences and pairs (each segment perturbed independently); only the context
(segment 0) when there are more than two segments (multiple choice).

``generate`` applies a generator to a list of examples with one ``random.Random`` per example,
seeded from a stable hash of ``(seed, position)`` (or of ``(seed, key)``), so results are identical across processes
and runs, and counts rejected variants by reason (``band``, ``duplicate``, ``identical``).
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import random
from collections.abc import Sequence

from agora.config.space import BUILTIN_GENERATORS, import_object
from agora.errors import RecipeError
from agora.method.generators.common import (Generator, Segments, default_perturb_segments, keep, same_text,
                                            stable_seed, token_jaccard)
from agora.method.generators.eda import eda
from agora.method.generators.mlm import mlm

__all__ = ["BUILTIN_GENERATORS", "FunctionGenerator", "GenerationResult", "Generator", "Segments",
           "default_perturb_segments", "eda", "generate", "make_generator", "mlm", "resolve_generator", "same_text",
           "stable_seed", "token_jaccard"]


def resolve_generator(name: str | Generator) -> Generator:
    """Return the generator called ``name``: ``"eda"``, ``"mlm"``, or an import path.

    Import paths are ``"package.module:function"`` or ``"package.module.function"``.
    A callable is returned unchanged.

    Raises:
        RecipeError (a ValueError): unknown built-in name, or an import path that cannot be imported.
    """
    if callable(name):
        return name
    if name in ("eda", "mlm"):
        return {"eda": eda, "mlm": mlm}[name]
    if name in BUILTIN_GENERATORS:
        raise RecipeError(f"generator {name!r} draws from the unlabelled pool: use make_generator({name!r}) and "
                          "prepare it with the pool (agora.method.expand.Expander does)")
    from agora.config.space import check_generator

    try:
        check_generator(name)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    return import_object(name, "generator")


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


class FunctionGenerator:
    """A generator function (``eda``, ``mlm``, an import path) in the batch form every generator has:
    ``prepare(pool, ...)`` (nothing to do for a function) then ``generate(rows, n, seed, keys)``."""

    needs_pool = False

    def __init__(self, fn: Generator, settings: dict | None = None, name: str | None = None):
        self.fn, self.settings = fn, dict(settings or {})
        self.name = name or getattr(fn, "__name__", repr(fn))

    def prepare(self, pool=None, **context) -> None:
        """Functions need no set-up."""

    def generate(self, examples: Sequence[Segments], n: int, seed: int, keys: Sequence | None = None) -> GenerationResult:
        """Up to ``n`` variants of every example; each example gets its own
        ``random.Random(stable_seed(seed, key))`` (see :func:`generate`)."""
        settings = dict(self.settings)
        rejected: collections.Counter = collections.Counter({"band": 0, "duplicate": 0, "identical": 0})
        try:
            takes_counter = "rejected" in inspect.signature(self.fn).parameters
        except (TypeError, ValueError):
            takes_counter = False
        if takes_counter:
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

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Functions keep no state."""


def make_generator(name, settings: dict | None = None):
    """The generator a recipe names (``agora.generator`` with ``agora.generator_settings``), in its batch
    form: :class:`FunctionGenerator` for functions, :class:`~agora.method.generators.nearest.NearestGenerator`
    for ``nearest`` (it must be prepared with the unlabelled pool before it generates)."""
    if name == "nearest":
        from agora.method.generators.nearest import NearestGenerator

        return NearestGenerator(**(settings or {}))
    if hasattr(name, "generate") and hasattr(name, "prepare"):
        return name
    return FunctionGenerator(resolve_generator(name), settings, name if isinstance(name, str) else None)


def generate(
    examples: Sequence[Segments],
    generator,
    n_per_example: int,
    seed: int,
    keys: Sequence | None = None,
    **settings,
) -> GenerationResult:
    """Apply ``generator`` (a name, a function, or a prepared batch generator) to every example,
    ``n_per_example`` variants each (at most).

    Each example gets its own ``random.Random(stable_seed(seed, key))``, where ``key`` is its
    position in ``examples`` (or ``keys[position]``, e.g. a dataset row id, so an example's
    variants do not depend on which other examples are in the list). Output is identical
    across processes and runs. Variants identical to their source or repeated for the same
    source are dropped here as well, whatever the generator does.

    Raises:
        ValueError: a generator returned a variant with a different number of segments.
    """
    if keys is not None and len(keys) != len(examples):
        raise ValueError(f"generate: {len(keys)} keys for {len(examples)} examples")
    return make_generator(generator, settings).generate(examples, n_per_example, seed, keys)
