"""``mlm``: words masked and refilled from a masked LM's top-k (see :mod:`agora.method.generators`)."""

from __future__ import annotations

import collections
import functools
import random
import re
from collections.abc import Sequence

from agora.errors import ModelError, RecipeError
from agora.method.generators.common import Segments, keep, perturbed, same_text, token_jaccard


@functools.lru_cache(maxsize=4)
def _load_mlm(model: str, device: str):
    """Load (tokenizer, model, candidate ids mask) once per process for a path or hub id."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from agora.method.teacher import check_model_path
    from agora.fit.model import resolve_location

    model = resolve_location(model, "agora.generator_settings.model (mlm)")
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
        model: local directory, hub id or ``pkg:<package>/<folder>`` of a masked LM (with its tokenizer).
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
    _check_settings(mask_prob, min_jaccard, max_jaccard, top_k)
    model = str(model)
    mask = _load_mlm(model, device)[0].mask_token
    parts, maskable = _words(segments, perturb_segments)
    out: list[Segments] = []
    seen: set = set()
    for _ in range(max_rounds):
        if len(out) >= n or not maskable:
            break
        plans, texts, n_masks = _draw_masks(parts, maskable, (n - len(out)) * attempts_per_variant, mask_prob, mask, rng)
        fills = iter(_refill(texts, n_masks, model, top_k, rng, batch_size, max_length, device))
        for plan in plans:
            variant = _filled(segments, parts, plan, fills)
            in_band = all(min_jaccard <= token_jaccard(segments[i], variant[i]) <= max_jaccard for i in plan)
            if same_text(variant, segments) or in_band:
                if keep(variant, segments, seen, rejected) and len(out) < n:
                    out.append(variant)
            elif rejected is not None:
                rejected["band"] += 1
    return out


def _check_settings(mask_prob: float, min_jaccard: float, max_jaccard: float, top_k: int) -> None:
    if not 0 < mask_prob <= 1:
        raise RecipeError(f"mlm setting `mask_prob` must be in (0, 1], got {mask_prob}")
    if not 0 <= min_jaccard <= max_jaccard <= 1:
        raise RecipeError(f"mlm settings need 0 <= min_jaccard <= max_jaccard <= 1, got {min_jaccard}, {max_jaccard}")
    if top_k < 1:
        raise RecipeError(f"mlm setting `top_k` must be >= 1, got {top_k}")


def _words(segments: Segments, perturb_segments: Sequence[int] | None):
    """The perturbed segments' words as (leading punctuation, core, trailing punctuation), and per segment
    with a word to mask, the positions of its words with a core (only cores are masked)."""
    parts = {
        i: [_PUNCT.fullmatch(w).groups() for w in segments[i].split()]
        for i in perturbed(segments, perturb_segments)
    }
    maskable = {i: [j for j, (_, core, _) in enumerate(p) if core] for i, p in parts.items()}
    return parts, {i: positions for i, positions in maskable.items() if positions}


def _draw_masks(parts: dict, maskable: dict[int, list[int]], count: int, mask_prob: float, mask: str, rng):
    """``count`` candidates, each a random set of masked word positions per segment (``mask_prob`` of its
    words, at least one): ``(plans, masked texts, masks per text)``."""
    plans, texts, n_masks = [], [], []
    for _ in range(count):
        plan = {}
        for i, positions in maskable.items():
            k = max(1, round(mask_prob * len(parts[i])))
            masked = sorted(rng.sample(positions, min(k, len(positions))))
            plan[i] = masked
            texts.append(" ".join(_join(p, mask if j in masked else None) for j, p in enumerate(parts[i])))
            n_masks.append(len(masked))
        plans.append(plan)
    return plans, texts, n_masks


def _filled(segments: Segments, parts: dict, plan: dict[int, list[int]], fills) -> Segments:
    """The variant of ``segments`` whose masked words (``plan``) take the next refills, in order."""
    variant = list(segments)
    for i, masked in plan.items():
        new = dict(zip(masked, next(fills)))
        variant[i] = " ".join(_join(p, new.get(j)) for j, p in enumerate(parts[i]))
    return tuple(variant)
