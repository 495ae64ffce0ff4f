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

from collections.abc import Sequence

from agora.errors import RecipeError
from agora.method.generators.base import BatchGenerator, FunctionGenerator, GenerationResult
from agora.method.generators.common import (Generator, Segments, default_perturb_segments, same_text, stable_seed,
                                            token_jaccard)
from agora.method.generators.eda import eda
from agora.method.generators.mlm import mlm
from agora.method.generators.registry import GENERATORS, build, import_target, spec_of

__all__ = ["GENERATORS", "BatchGenerator", "FunctionGenerator", "GenerationResult", "Generator", "Segments",
           "default_perturb_segments", "eda", "generate", "make_generator", "mlm", "resolve_generator", "same_text",
           "stable_seed", "token_jaccard"]


def resolve_generator(name: str | Generator) -> Generator:
    """The per-input function a name stands for: a registered one (``"eda"``, ``"mlm"``) or an import path
    (``"package.module:function"`` or ``"package.module.function"``); a callable is returned unchanged.

    Raises:
        RecipeError (a ValueError): an unknown name, an import path that cannot be imported, or a
        generator that is not a per-input function (``nearest`` works on the pool: use
        :func:`make_generator`).
    """
    if callable(name):
        return name
    try:
        spec = spec_of(name)
        target = import_target(spec.target)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    if spec.needs_pool or isinstance(target, type):
        raise RecipeError(f"generator {name!r} is not a per-input function: use make_generator({name!r}) and "
                          "prepare it (agora.method.expand.Expander does)")
    return target


def make_generator(name, settings: dict | None = None) -> BatchGenerator:
    """The generator a recipe names (``agora.generator`` with ``agora.generator_settings``), as a
    :class:`BatchGenerator` (see :func:`agora.method.generators.registry.build`); one that
    ``needs_pool`` must be prepared with the unlabelled pool before it generates."""
    return build(name, settings)


def generate(
    examples: Sequence[Segments],
    generator,
    variants_per_source: int,
    seed: int,
    keys: Sequence | None = None,
    **settings,
) -> GenerationResult:
    """Apply ``generator`` (a name, a function, or a prepared batch generator) to every example,
    ``variants_per_source`` variants each (at most).

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
    return make_generator(generator, settings).generate(examples, variants_per_source, seed, keys)
