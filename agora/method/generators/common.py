"""What every generator shares: the input type, text comparisons, stable seeds, the segments to perturb."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agora.errors import RecipeError
from agora.fit.seeds import stable_seed  # noqa: F401  (re-exported: G's seeds and the fit's are one function)

Segments = tuple[str, ...]
Generator = Callable[..., list[Segments]]


def default_perturb_segments(num_segments: int) -> tuple[int, ...]:
    """All segments for single inputs and pairs; only the context (0) for multiple choice."""
    return tuple(range(num_segments)) if num_segments <= 2 else (0,)


def same_text(a: Segments, b: Segments) -> bool:
    """True when two inputs have the same words in every segment (whitespace ignored)."""
    return len(a) == len(b) and all(x.split() == y.split() for x, y in zip(a, b))


def token_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the sets of lowercase whitespace tokens of two texts."""
    sa, sb = set(a.lower().split()), set(b.lower().split())
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def perturbed(segments: Segments, perturb_segments: Sequence[int] | None) -> tuple[int, ...]:
    idx = default_perturb_segments(len(segments)) if perturb_segments is None else tuple(perturb_segments)
    for i in idx:
        if not -len(segments) <= i < len(segments):
            raise RecipeError(f"perturb_segments index {i} is out of range for an input of {len(segments)} segments")
    return tuple(sorted({i % len(segments) for i in idx}))


def keep(variant: Segments, source: Segments, seen: set, rejected) -> bool:
    """Accept a variant unless identical to the source or already produced; count rejections."""
    reason = "identical" if same_text(variant, source) else "duplicate" if variant in seen else None
    if reason is None:
        seen.add(variant)
        return True
    if rejected is not None:
        rejected[reason] += 1
    return False
