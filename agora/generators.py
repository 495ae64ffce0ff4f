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
import functools
import hashlib
import importlib
import inspect
import json
import random
import re
from collections.abc import Callable, Sequence

from agora.errors import ModelError, RecipeError

Segments = tuple[str, ...]
Generator = Callable[..., list[Segments]]

BUILTIN_GENERATORS = ("eda", "mlm")


# --------------------------------------------------------------------------- helpers


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


def stable_seed(*parts) -> int:
    """A 64-bit seed from a JSON-able value; unlike ``hash`` it is not salted per process."""

    def as_plain(o):  # numpy scalars -> Python numbers
        return o.item() if hasattr(o, "item") else str(o)

    digest = hashlib.sha256(json.dumps(parts, default=as_plain).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _perturbed(segments: Segments, perturb_segments: Sequence[int] | None) -> tuple[int, ...]:
    idx = default_perturb_segments(len(segments)) if perturb_segments is None else tuple(perturb_segments)
    for i in idx:
        if not -len(segments) <= i < len(segments):
            raise RecipeError(f"perturb_segments index {i} is out of range for an input of {len(segments)} segments")
    return tuple(sorted({i % len(segments) for i in idx}))


def _keep(variant: Segments, source: Segments, seen: set, rejected) -> bool:
    """Accept a variant unless identical to the source or already produced; count rejections."""
    reason = "identical" if same_text(variant, source) else "duplicate" if variant in seen else None
    if reason is None:
        seen.add(variant)
        return True
    if rejected is not None:
        rejected[reason] += 1
    return False


# --------------------------------------------------------------------------- eda


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
    idx = _perturbed(segments, perturb_segments)
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
        if _keep(variant, segments, seen, rejected):
            out.append(variant)
    return out


# --------------------------------------------------------------------------- mlm


@functools.lru_cache(maxsize=4)
def _load_mlm(model: str, device: str):
    """Load (tokenizer, model, candidate ids mask) once per process for a path or hub id."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from agora.teacher import check_model_path

    check_model_path(model, "mlm generator `model`")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        lm = AutoModelForMaskedLM.from_pretrained(model).to(device).eval().requires_grad_(False)
    except OSError as err:
        raise ModelError(f"mlm generator: cannot load masked LM {model!r}: {err}") from err
    if tokenizer.mask_token is None:
        raise ModelError(f"mlm generator: the tokenizer of {model!r} has no mask token")
    size = lm.get_output_embeddings().weight.shape[0]
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
    # Whole-word candidates only: byte-level BPE ("Ġword") and SentencePiece ("▁word") mark a
    # word start; WordPiece marks a continuation ("##ing").
    markers = ("Ġ", "▁")
    marked = sum(t.startswith(markers) for t in tokens) > 0.2 * len(tokens)
    special = set(tokenizer.all_special_ids)
    ok = torch.zeros(size, dtype=torch.bool)
    for i, tok in enumerate(tokens):
        if i in special or tok is None:
            continue
        if marked:
            if not tok.startswith(markers):
                continue
            tok = tok[1:]
        elif tok.startswith("##"):
            continue
        ok[i] = any(ch.isalnum() for ch in tok)
    return tokenizer, lm, ok.to(device)


_PUNCT = re.compile(r"(\W*)(.*?)(\W*)", re.DOTALL)


def _join(part: tuple[str, str, str], core: str | None = None) -> str:
    """Reassemble a word from (leading punct, core, trailing punct), optionally with a new core."""
    return part[0] + (part[1] if core is None else core) + part[2]


def _refill(texts: list[str], n_masks: list[int], model: str, top_k: int, rng, batch_size, max_length, device):
    """For each masked text, sample one word per mask (in order) from the masked LM's top-k."""
    import torch

    tokenizer, lm, ok = _load_mlm(model, device)
    fills: list[list[str]] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            ids_in = enc["input_ids"]
            is_mask = ids_in == tokenizer.mask_token_id
            logits = lm(**enc).logits[is_mask].float()  # [masks in batch, vocab], row-major order
            logits[:, ~ok] = float("-inf")
            probs, ids = logits.softmax(-1).topk(top_k, dim=-1)
            probs, ids = probs.tolist(), ids.tolist()
            masks_of_row = collections.defaultdict(list)
            for m, row in enumerate(is_mask.nonzero()[:, 0].tolist()):
                masks_of_row[row].append(m)
            for row in range(ids_in.shape[0]):
                words = []
                for m in masks_of_row[row][: n_masks[start + row]]:  # masks cut off by truncation stay unfilled
                    pick = rng.choices(ids[m], weights=probs[m])[0]
                    words.append(tokenizer.decode([pick]).strip())
                fills.append(words)
    return fills


def mlm(
    segments: Segments,
    rng: random.Random,
    n: int,
    *,
    model: str,
    mask_prob: float = 0.15,
    top_k: int = 5,
    min_jaccard: float = 0.6,
    max_jaccard: float = 0.95,
    perturb_segments: Sequence[int] | None = None,
    attempts_per_variant: int = 2,
    max_rounds: int = 3,
    batch_size: int = 32,
    max_length: int = 256,
    device: str = "cpu",
    rejected: collections.Counter | None = None,
) -> list[Segments]:
    """Mask ~``mask_prob`` of the words of each perturbed segment and refill them from a masked LM.

    Args:
        segments: the input, a tuple of text segments.
        rng: the only source of randomness (mask positions and sampling among the top-k).
        n: the number of variants wanted.
        model: local directory or hub id of a masked LM (with its tokenizer).
        mask_prob: fraction of the words of a segment that are masked (at least one).
        top_k: refills are sampled among the LM's top-k whole-word tokens, weighted by probability.
        min_jaccard, max_jaccard: band of accepted token-Jaccard similarity, per perturbed segment.
        perturb_segments: indices of the segments to perturb (see the module docstring).
        attempts_per_variant: candidates drawn per missing variant in each round.
        max_rounds: rounds of drawing before returning fewer than ``n`` variants.
        batch_size, max_length, device: how the masked LM is run (``torch.inference_mode``).
        rejected: optional Counter that receives rejection counts by reason.

    Raises:
        RecipeError (a ValueError): an invalid setting. ModelNotFoundError (a FileNotFoundError):
            ``model`` looks like a local path that does not exist.
    """
    if not 0 < mask_prob <= 1:
        raise RecipeError(f"mlm setting `mask_prob` must be in (0, 1], got {mask_prob}")
    if not 0 <= min_jaccard <= max_jaccard <= 1:
        raise RecipeError(f"mlm settings need 0 <= min_jaccard <= max_jaccard <= 1, got {min_jaccard}, {max_jaccard}")
    if top_k < 1:
        raise RecipeError(f"mlm setting `top_k` must be >= 1, got {top_k}")
    model = str(model)
    tokenizer = _load_mlm(model, device)[0]
    # Words are split into (leading punctuation, core, trailing punctuation); only cores are masked.
    parts = {
        i: [_PUNCT.fullmatch(w).groups() for w in segments[i].split()]
        for i in _perturbed(segments, perturb_segments)
    }
    maskable = {i: [j for j, (_, core, _) in enumerate(p) if core] for i, p in parts.items()}
    idx = [i for i in parts if maskable[i]]
    out: list[Segments] = []
    seen: set = set()
    for _ in range(max_rounds):
        if len(out) >= n or not idx:
            break
        # Draw candidates: for each, a random set of masked word positions per perturbed segment.
        plans, texts, n_masks = [], [], []
        for _ in range((n - len(out)) * attempts_per_variant):
            plan = {}
            for i in idx:
                k = max(1, round(mask_prob * len(parts[i])))
                masked = sorted(rng.sample(maskable[i], min(k, len(maskable[i]))))
                plan[i] = masked
                mask = tokenizer.mask_token
                texts.append(" ".join(_join(p, mask if j in masked else None) for j, p in enumerate(parts[i])))
                n_masks.append(len(masked))
            plans.append(plan)
        fills = iter(_refill(texts, n_masks, model, top_k, rng, batch_size, max_length, device))
        for plan in plans:
            variant, in_band = list(segments), True
            for i in idx:
                new = dict(zip(plan[i], next(fills)))
                variant[i] = " ".join(_join(p, new.get(j)) for j, p in enumerate(parts[i]))
                in_band &= min_jaccard <= token_jaccard(segments[i], variant[i]) <= max_jaccard
            variant = tuple(variant)
            if same_text(variant, segments) or in_band:
                if _keep(variant, segments, seen, rejected) and len(out) < n:
                    out.append(variant)
            elif rejected is not None:
                rejected["band"] += 1
    return out


# --------------------------------------------------------------------------- resolution


def resolve_generator(name: str | Generator) -> Generator:
    """Return the generator called ``name``: ``"eda"``, ``"mlm"``, or an import path.

    Import paths are ``"package.module:function"`` or ``"package.module.function"``.
    A callable is returned unchanged.

    Raises:
        RecipeError (a ValueError): unknown built-in name, or an import path that cannot be imported.
    """
    if callable(name):
        return name
    if name in BUILTIN_GENERATORS:
        return {"eda": eda, "mlm": mlm}[name]
    help_text = (
        f"valid built-in generators are {', '.join(repr(g) for g in BUILTIN_GENERATORS)}; "
        "a custom generator is named by its import path, 'package.module:function' or "
        "'package.module.function'"
    )
    if not isinstance(name, str) or ("." not in name and ":" not in name):
        raise RecipeError(f"unknown generator {name!r}: {help_text}")
    module_name, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise RecipeError(f"cannot import generator {name!r} ({err}): {help_text}") from err
    if not callable(fn):
        raise RecipeError(f"generator {name!r} is not callable: {help_text}")
    return fn


# --------------------------------------------------------------------------- driver


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


def generate(
    examples: Sequence[Segments],
    generator: str | Generator,
    n_per_example: int,
    seed: int,
    keys: Sequence | None = None,
    **settings,
) -> GenerationResult:
    """Apply ``generator`` to every example, ``n_per_example`` variants each (at most).

    Each example gets its own ``random.Random(stable_seed(seed, key))``, where ``key`` is its
    position in ``examples`` (or ``keys[position]``, e.g. a dataset row id, so an example's
    variants do not depend on which other examples are in the list). Output is identical
    across processes and runs. Variants identical to their source or repeated for the same
    source are dropped here as well, whatever the generator does.

    Raises:
        ValueError: a generator returned a variant with a different number of segments.
    """
    fn = resolve_generator(generator)
    if keys is not None and len(keys) != len(examples):
        raise ValueError(f"generate: {len(keys)} keys for {len(examples)} examples")
    rejected: collections.Counter = collections.Counter({"band": 0, "duplicate": 0, "identical": 0})
    try:
        takes_counter = "rejected" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_counter = False
    if takes_counter:
        settings = {**settings, "rejected": rejected}
    result = GenerationResult([], [], {})
    for pos, example in enumerate(examples):
        example = tuple(example)
        key = pos if keys is None else keys[pos]
        rng = random.Random(stable_seed(seed, key))
        seen: set = set()
        for variant in fn(example, rng, n_per_example, **settings)[:n_per_example]:
            variant = tuple(variant)
            if len(variant) != len(example):
                raise ValueError(
                    f"generator {generator!r} returned {len(variant)} segments for an input of {len(example)}"
                )
            if _keep(variant, example, seen, rejected):
                result.variants.append(variant)
                result.sources.append(pos)
    result.rejected = dict(rejected)
    return result
