"""``eda``: model-free random swap, deletion and duplication of words (see :mod:`agora.method.generators`)."""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence

from agora.errors import RecipeError
from agora.method.generators.common import Segments, keep, perturbed


def _eda_words(words: list[str], rng: random.Random, n_edits: int) -> list[str]:
    words = list(words)
    for _ in range(n_edits):
        ops = ["swap", "delete", "duplicate"] if len(words) >= 2 else ["duplicate"]
        op = rng.choice(ops)
        if op == "swap":
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
        elif op == "delete":
            del words[rng.randrange(len(words))]
        else:
            words.insert(rng.randrange(len(words) + 1), words[rng.randrange(len(words))])
    return words


def eda(
    segments: Segments,
    rng: random.Random,
    n: int,
    *,
    p: float = 0.1,
    perturb_segments: Sequence[int] | None = None,
    max_tries_per_variant: int = 5,
    rejected: collections.Counter | None = None,
) -> list[Segments]:
    """Random swap / deletion / duplication of words, at least one edit per perturbed segment.

    Args:
        segments: the input, a tuple of text segments.
        rng: the only source of randomness.
        n: the number of variants wanted.
        p: fraction of the words of a segment that are edited (at least one edit).
        perturb_segments: indices of the segments to edit (see the module docstring).
        max_tries_per_variant: attempts per wanted variant before giving up.
        rejected: optional Counter that receives rejection counts by reason.

    Returns:
        Up to ``n`` distinct variants, none identical to ``segments``; empty segments stay empty.

    Example:
        >>> eda(("the cat sat on the mat",), random.Random(0), 2)
        [('the cat sat the mat',), ('the cat the on sat mat',)]
    """
    if not 0 <= p <= 1:
        raise RecipeError(f"eda setting `p` must be in [0, 1], got {p}")
    idx = perturbed(segments, perturb_segments)
    out: list[Segments] = []
    seen: set = set()
    for _ in range(max(0, n) * max_tries_per_variant):
        if len(out) >= n:
            break
        variant = list(segments)
        for i in idx:
            words = segments[i].split()
            if words:
                variant[i] = " ".join(_eda_words(words, rng, max(1, round(p * len(words)))))
        variant = tuple(variant)
        if keep(variant, segments, seen, rejected):
            out.append(variant)
    return out
