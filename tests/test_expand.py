"""The expansion step and E's split as pure functions: no Trainer, a fake teacher."""

import warnings
import zlib

import numpy as np
import pytest

from agora.errors import RecipeError
from agora.data.evalset import default_e_size, split_e
from agora.method.expand import AgoraWarning, balance_mask, expand, find_mistakes

SOURCES = [("the cat sat on the mat today", "a cat sat"), ("dogs bark at night in the town", "dogs are loud"),
           ("rain fell all day long here", "it was wet"), ("she reads a book every evening", "she reads")]
NAMES = ["entailment", "not_entailment"]


class FakeTeacher:
    """Scores by word count parity (class) and length (confidence); counts the inputs it scores."""

    def __init__(self):
        self.scored = []

    def __call__(self, inputs):
        self.scored += inputs
        out = []
        for seg in inputs:
            words = sum(len(s.split()) for s in seg)
            confidence = 0.5 + min(words, 20) / 42
            out.append([confidence, 1 - confidence] if words % 2 == 0 else [1 - confidence, confidence])
        return np.array(out, dtype=np.float32)


def _expand(**kw):
    teacher = kw.pop("teacher", FakeTeacher())
    args = dict(generator="eda", variants_per_source=4, seed=0, key=1, label_names=NAMES)
    args.update(kw)
    return expand(SOURCES, [10, 11, 12, 13], [0, 1, 0, 1], teacher, **args), teacher


def test_find_mistakes_classification_and_regression():
    assert find_mistakes(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([1, 1]), False).tolist() == [True, False]
    assert find_mistakes(np.array([[0.2], [3.0]]), np.array([0.9, 3.4]), True).tolist() == [True, False]


def test_balance_mask_follows_the_prior_most_confident_first():
    labels, conf = np.array([0, 0, 0, 0, 1, 1]), np.array([0.6, 0.9, 0.7, 0.8, 0.55, 0.65])
    keep = balance_mask(labels, conf, np.array([0.5, 0.5]))
    assert keep.tolist() == [False, True, False, True, True, True]
    assert balance_mask(labels, conf, np.array([0.0, 1.0])).tolist() == [False] * 4 + [True, True]


def test_expand_is_deterministic_and_keys_change_variants():
    a, _ = _expand()
    b, _ = _expand()
    c, _ = _expand(key=2)
    assert a.variants == b.variants and np.array_equal(a.probs, b.probs) and a.variants != c.variants
    assert all(len(v) == 2 for v in a.variants)  # pairs stay pairs
    assert set(a.source_ids.tolist()) <= {10, 11, 12, 13}


def test_expand_counts_every_variant_once_and_scores_each_once():
    out, teacher = _expand(seen={SOURCES[0]})
    s = out.stats
    assert s.sources == 4 and s.variants == 16 and s.scored == len(teacher.scored) == 16
    assert len(set(teacher.scored)) == len(teacher.scored)  # distinct inputs only
    assert s.kept == len(out.variants) == 16 and sum(s.label_balance.values()) == 16
    assert out.labels.tolist() == out.probs.argmax(-1).tolist()
    gold = {10: 0, 11: 1, 12: 0, 13: 1}
    agree = np.mean([label == gold[src] for label, src in zip(out.labels, out.source_ids)])
    assert s.agreement == pytest.approx(agree) and s.agreement_kept == pytest.approx(agree)


def test_seen_inputs_are_dropped_before_the_teacher():
    first, _ = _expand()
    again, teacher = _expand(seen=set(first.variants[:5]))
    assert again.stats.rejected["seen"] == 5 and len(teacher.scored) == 11
    assert not set(again.variants) & set(first.variants[:5])


def test_confidence_filter_and_balance():
    out, _ = _expand(min_confidence=0.75)
    assert out.stats.rejected["confidence"] > 0 and (out.probs.max(-1) >= 0.75).all()
    assert out.stats.kept + out.stats.rejected["confidence"] == out.stats.scored
    balanced, _ = _expand(class_prior=np.array([0.5, 0.5]))
    counts = balanced.stats.label_balance
    assert abs(counts["entailment"] - counts["not_entailment"]) <= 1
    assert balanced.stats.kept + balanced.stats.rejected["balance"] == balanced.stats.scored


def test_require_agreement_drops_the_teachers_disagreements():
    plain, _ = _expand()
    gold = {10: 0, 11: 1, 12: 0, 13: 1}
    disagree = sum(label != gold[src] for label, src in zip(plain.labels, plain.source_ids))
    assert 0 < disagree < plain.stats.kept  # the fake teacher disagrees with some sources, not all
    out, _ = _expand(require_agreement=True)
    assert out.stats.rejected["disagree"] == disagree and out.stats.kept == plain.stats.kept - disagree
    assert all(label == gold[src] for label, src in zip(out.labels, out.source_ids))
    assert out.stats.agreement_kept == 1.0 and out.stats.agreement == plain.stats.agreement
    both, _ = _expand(require_agreement=True, min_confidence=0.75)  # counted once, under the first filter
    assert both.stats.kept + both.stats.rejected["confidence"] + both.stats.rejected["disagree"] == both.stats.scored


def test_require_agreement_for_regression_keeps_scores_within_half_a_point():
    def score(inputs):
        return np.array([[len(seg[0].split()) / 2.0] for seg in inputs], dtype=np.float32)

    gold = [3.5, 3.0, 2.0, 3.0]  # source 2's variants score 2.5 and 3.5: one within half a point
    out = expand(SOURCES, [0, 1, 2, 3], gold, score, generator="eda", variants_per_source=2, seed=0,
                 regression=True, require_agreement=True)
    assert out.stats.rejected["disagree"] == 1 and out.stats.kept == out.stats.scored - 1 == 7
    assert all(abs(label - gold[src]) <= 0.5 for label, src in zip(out.labels, out.source_ids))


def test_regression_keeps_scores_and_skips_the_filters():
    def score(inputs):
        return np.array([[len(seg[0].split()) / 2.0] for seg in inputs], dtype=np.float32)

    out = expand(SOURCES, [0, 1, 2, 3], [3.5, 3.0, 3.0, 3.0], score, generator="eda", variants_per_source=2, seed=0,
                 regression=True, min_confidence=0.99)
    assert out.labels.dtype == np.float32 and np.allclose(out.labels, out.probs[:, 0])
    assert out.stats.kept == out.stats.scored and out.stats.label_balance is None


def test_a_generator_returning_nothing_warns_and_adds_nothing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, teacher = _expand(generator=lambda seg, rng, n, **kw: [])
    assert [w.category for w in caught] == [AgoraWarning] and "returned no variant" in str(caught[0].message)
    assert out.variants == [] and out.probs.shape == (0, 2) and teacher.scored == []


def test_split_e_partitions_stratifies_and_is_seeded():
    labels = np.array([0] * 60 + [1] * 40)
    d, gen, sel = split_e(labels, size=20, seed=3)
    assert sorted(np.concatenate([d, gen, sel]).tolist()) == list(range(100))
    assert len(gen) == len(sel) == 10 and len(d) == 80
    assert (labels[gen] == 0).sum() == (labels[sel] == 0).sum() == 6  # both halves keep the 60/40 balance
    again = split_e(labels, size=20, seed=3)
    other = split_e(labels, size=20, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip((d, gen, sel), again))
    assert not np.array_equal(gen, other[1])


def test_split_e_regression_sizes_and_errors():
    scores = np.linspace(0, 5, 50)
    d, gen, sel = split_e(scores, size=11, seed=0, regression=True)
    assert (len(d), len(gen), len(sel)) == (39, 6, 5)
    assert default_e_size(1000, 277) == 200 and default_e_size(1000, 100) == 100 and default_e_size(5, 100) == 2
    with pytest.raises(RecipeError, match="agora.e_size"):
        split_e(np.array([0, 1, 0]), size=3, seed=0)


class SkewedTeacher:
    """The situation of a student's mistakes: sources of class 0 (the class it misses); the teacher gives
    class 0 to most variants (agreeing) and class 1 to a few (every one a disagreement)."""

    def __call__(self, inputs):
        out = []
        for seg in inputs:
            one = zlib.crc32(" | ".join(seg).encode()) % 5 == 0  # about a fifth of the variants (stable)
            out.append([0.3, 0.7] if one else [0.8, 0.2])
        return np.array(out, dtype=np.float32)


def test_balancing_without_the_agreement_check_keeps_the_disagreeing_rows():
    """Issue 7 of the evidence: balance to D's 50/50 caps the agreeing class down to the disagreeing one."""
    common = dict(teacher=SkewedTeacher(), variants_per_source=8, class_prior=np.array([0.5, 0.5]))
    labels0 = [0, 0, 0, 0]
    balanced, _ = _expand_with(labels0, **common)
    stats = balanced.stats
    scored, agreeing = stats.agreement_by_label["not_entailment"]
    assert agreeing == 0 and scored > 0  # every class-1 variant disagrees with its class-0 source
    assert stats.agreement > 0.6 and stats.agreement_kept == pytest.approx(0.5)  # half of what is kept
    first, _ = _expand_with(labels0, require_agreement=True, **common)  # the default order: agreement, then balance
    assert first.stats.agreement_kept == 1.0 and first.stats.rejected["balance"] == 0
    late, _ = _expand_with(labels0, require_agreement=True, balance_first=True, **common)
    assert late.stats.agreement_kept == 1.0 and len(late.variants) < len(first.variants)


def _expand_with(labels, **kw):
    teacher = kw.pop("teacher")
    args = dict(generator="eda", seed=0, key=1, label_names=NAMES)
    args.update(kw)
    return expand(SOURCES, [10, 11, 12, 13], labels, teacher, **args), teacher


def test_split_e_with_an_e_gen_size():
    labels = np.array([0] * 60 + [1] * 40)
    d, gen, sel = split_e(labels, 50, seed=3, gen_size=10)
    assert (len(d), len(gen), len(sel)) == (50, 10, 40)
    assert np.bincount(labels[gen]).tolist() == [6, 4] and np.bincount(labels[sel]).tolist() == [24, 16]
    assert not set(gen) & set(sel) and sorted({*d, *gen, *sel}) == list(range(100))
    with pytest.raises(RecipeError, match="e_gen_size"):
        split_e(labels, 50, seed=3, gen_size=50)


def test_balance_by_source_balances_before_the_teacher_pays():
    """``balance_by: source``: the variants are capped per source gold class before scoring, so every row
    the teacher scores is kept (no confidence filter here); ``teacher`` balances after paying."""
    prior = np.array([0.5, 0.5])
    gold = [0, 0, 0, 1]  # three sources of class 0, one of class 1
    teacher = FakeTeacher()
    out = expand(SOURCES, [10, 11, 12, 13], gold, teacher, generator="eda", variants_per_source=4, seed=0, key=1,
                 label_names=NAMES, class_prior=prior, balance_by="source")
    by_source = {0: 0, 1: 0}
    for sid in out.source_ids.tolist():
        by_source[gold[sid - 10]] += 1
    assert by_source[0] == by_source[1] == 4  # capped to the rare class's 4 variants
    assert len(teacher.scored) == out.stats.scored == out.stats.kept == 8 and out.stats.rejected["balance"] == 8
    late = FakeTeacher()
    paid = expand(SOURCES, [10, 11, 12, 13], gold, late, generator="eda", variants_per_source=4, seed=0, key=1,
                  label_names=NAMES, class_prior=prior)
    assert len(late.scored) == 16 > paid.stats.kept  # balancing on the teacher's labels scores every variant
