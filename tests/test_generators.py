"""Generators G: eda and mlm, the generate driver, and resolving generators by name."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SENTENCES
from agora.method.generators import (
    GenerationResult,
    eda,
    generate,
    mlm,
    resolve_generator,
    same_text,
    token_jaccard,
)

DATA = os.environ.get("AGORA_DATA_DIR")

PAIRS = [
    ("the quick brown fox jumps over the lazy dog today", "a fast fox leaps over a sleepy dog"),
    ("rain is expected across the north of the country tomorrow", "it will rain tomorrow"),
    ("the committee approved the new budget after a long debate", "the budget was approved"),
]


def rte_pairs(n=20):
    """RTE dev pairs from the data dir; without it, pairs of :data:`conftest.SENTENCES`."""
    if not DATA:
        k = len(SENTENCES)
        return [(SENTENCES[i % k], SENTENCES[(i + 1 + i // k) % k]) for i in range(n)]
    with open(Path(DATA) / "glue/RTE/dev.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar=None))[1 : n + 1]
    return [(r[1], r[2]) for r in rows]


# ------------------------------------------------------------------ eda


def test_eda_deterministic_given_seed():
    a = generate(PAIRS, "eda", 4, seed=7)
    b = generate(PAIRS, "eda", 4, seed=7)
    c = generate(PAIRS, "eda", 4, seed=8)
    assert a.variants == b.variants and a.sources == b.sources
    assert a.variants != c.variants


def test_eda_same_output_in_another_process():
    """Seeds come from a stable hash, not Python's per-process salted ``hash``."""
    code = (
        "import json, sys; from agora.method.generators import generate; "
        f"print(json.dumps(generate({PAIRS!r}, 'eda', 3, seed=11).variants))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert [tuple(v) for v in json.loads(out)] == generate(PAIRS, "eda", 3, seed=11).variants


def test_eda_never_identical_no_duplicates_and_pairs_stay_pairs():
    result = generate(PAIRS, "eda", 6, seed=0)
    assert isinstance(result, GenerationResult) and len(result) > 0
    for src, variant in result:
        assert len(variant) == 2 and not same_text(variant, PAIRS[src])
    for src in set(result.sources):
        mine = [v for s, v in result if s == src]
        assert len(mine) == len(set(mine)) <= 6
    assert set(result.rejected) == {"band", "duplicate", "identical"}


def test_eda_perturbs_pair_segments_independently():
    text = "one two three four five six seven eight nine ten"
    variants = eda((text, text), random.Random(0), 8)
    assert len(variants) == 8
    assert all(a != text and b != text for a, b in variants)  # at least one edit per segment
    assert any(a != b for a, b in variants)  # not the same edit copied to both


def test_eda_multiple_choice_only_perturbs_context():
    example = ("the article text goes on for a while here", "what is it about?", "cats", "dogs", "birds")
    variants = eda(example, random.Random(1), 5)
    assert len(variants) == 5
    for v in variants:
        assert len(v) == 5 and v[1:] == example[1:] and v[0] != example[0]
    # explicit perturb_segments overrides the default
    assert all(v[0] == example[0] for v in eda(example, random.Random(1), 3, perturb_segments=[1]))


def test_eda_counts_identical_rejections():
    # One word: the only edit is duplication, so variants exist; "a a" swaps give identical text.
    result = generate([("a a",)], "eda", 5, seed=0)
    assert all(not same_text(v, ("a a",)) for v in result.variants)
    assert result.rejected["identical"] + result.rejected["duplicate"] > 0


def test_generate_keys_make_variants_independent_of_list_order():
    forward = generate(PAIRS, "eda", 2, seed=3, keys=["a", "b", "c"])
    backward = generate(PAIRS[::-1], "eda", 2, seed=3, keys=["c", "b", "a"])
    by_src = lambda r, ex: {ex[s]: [v for t, v in r if t == s] for s in set(r.sources)}  # noqa: E731
    assert by_src(forward, PAIRS) == by_src(backward, PAIRS[::-1])


# ------------------------------------------------------------------ resolving


def my_generator(segments, rng, n, suffix="!"):
    return [tuple(s + suffix * (i + 1) for s in segments) for i in range(n)] + [segments]


def test_resolve_builtins_and_import_paths():
    assert resolve_generator("eda") is eda and resolve_generator("mlm") is mlm
    assert resolve_generator("test_generators:my_generator") is my_generator
    assert resolve_generator("test_generators.my_generator") is my_generator
    assert resolve_generator(my_generator) is my_generator


def test_custom_generator_output_is_filtered():
    result = generate([("hi", "there")], "test_generators:my_generator", 2, seed=0, suffix="?")
    assert result.variants == [("hi?", "there?"), ("hi??", "there??")]
    wrong = lambda segments, rng, n: [("only one segment",)]  # noqa: E731
    with pytest.raises(ValueError, match="segments"):
        generate([("a", "b")], wrong, 1, seed=0)


@pytest.mark.parametrize("name", ["nope", "no_such_module:fn", "test_generators:no_such_fn"])
def test_unknown_generator_error(name):
    with pytest.raises(ValueError) as err:
        resolve_generator(name)
    msg = str(err.value)
    assert repr(name) in msg and "'eda'" in msg and "'mlm'" in msg and "package.module:function" in msg


# ------------------------------------------------------------------ mlm


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory, roberta_tokenizer_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mlm")
    tokenizer = AutoTokenizer.from_pretrained(roberta_tokenizer_dir)
    config = BertConfig(
        vocab_size=50265, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, pad_token_id=1, max_position_embeddings=514,
    )
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_mlm_respects_band_and_is_deterministic(tiny_mlm):
    examples = rte_pairs(6)
    settings = dict(model=tiny_mlm, min_jaccard=0.6, max_jaccard=0.95)
    a = generate(examples, "mlm", 3, seed=5, **settings)
    b = generate(examples, "mlm", 3, seed=5, **settings)
    c = generate(examples, "mlm", 3, seed=6, **settings)
    assert len(a) > 0 and a.variants == b.variants and a.sources == b.sources and a.variants != c.variants
    for src, variant in a:
        source = examples[src]
        assert len(variant) == 2 and not same_text(variant, source)
        for old, new in zip(source, variant):
            assert 0.6 <= token_jaccard(old, new) <= 0.95
        assert len(variant[0].split()) == len(source[0].split())  # words replaced, not added


def test_mlm_band_rejections_are_counted(tiny_mlm):
    result = generate(rte_pairs(3), "mlm", 2, seed=0, model=tiny_mlm, min_jaccard=0.99, max_jaccard=1.0)
    assert len(result) == 0 and result.rejected["band"] > 0


def test_mlm_multiple_choice_only_perturbs_context(tiny_mlm):
    context = rte_pairs(1)[0][0]
    example = (context, "What happened?", "she died", "she won", "nothing")
    variants = mlm(example, random.Random(0), 3, model=tiny_mlm)
    assert variants
    assert all(v[1:] == example[1:] and v[0] != context for v in variants)


def test_mlm_missing_model_path():
    with pytest.raises(FileNotFoundError, match="/no/such/mlm"):
        mlm(("a b c",), random.Random(0), 1, model="/no/such/mlm")


def test_mlm_model_named_by_pkg_scheme(tiny_mlm, tmp_path, monkeypatch):
    from pathlib import Path

    from conftest import in_package

    name = in_package(Path(tiny_mlm), tmp_path / "site", "agora_test_mlm_pkg", monkeypatch)
    examples = rte_pairs(3)
    assert generate(examples, "mlm", 2, seed=5, model=name).variants == generate(examples, "mlm", 2, seed=5, model=tiny_mlm).variants
