"""Tests for agora.data.metrics: real GLUE/SuperGLUE labels vs scikit-learn/scipy, hand-computed cases."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import evaluate
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from agora.data.metrics import METRIC_NAMES, compute_metrics, main_metric_direction, normalize_answer


def _data_dir() -> Path:
    root = os.environ.get("AGORA_DATA_DIR")
    if not root:
        pytest.skip("AGORA_DATA_DIR is not set: real GLUE/SuperGLUE dev labels are unavailable")
    return Path(root)


def _flip(labels: list[int], classes: list[int], seed: int, rate: float = 0.25) -> list[int]:
    """Replace a seeded random ~`rate` of labels with a different class."""
    rng = random.Random(seed)
    out = []
    for y in labels:
        if rng.random() < rate:
            y = rng.choice([c for c in classes if c != y])
        out.append(y)
    return out


def _read_tsv(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    with open(path, encoding=encoding, newline="") as f:
        return list(csv.reader(f, delimiter="\t", quotechar=None))


@pytest.fixture(scope="module")
def cola_labels() -> list[int]:
    rows = _read_tsv(_data_dir() / "glue" / "CoLA" / "dev.tsv")  # no header, label in column 1
    return [int(r[1]) for r in rows]


@pytest.fixture(scope="module")
def mrpc_labels() -> list[int]:
    rows = _read_tsv(_data_dir() / "glue" / "MRPC" / "dev.tsv", encoding="utf-8-sig")
    col = rows[0].index("Quality")
    return [int(r[col]) for r in rows[1:]]


@pytest.fixture(scope="module")
def stsb_scores() -> list[float]:
    rows = _read_tsv(_data_dir() / "glue" / "STS-B" / "dev.tsv")
    assert rows[0][-1] == "score"
    return [float(r[-1]) for r in rows[1:]]


@pytest.fixture(scope="module")
def cb_labels() -> list[int]:
    ids = {"entailment": 0, "contradiction": 1, "neutral": 2}
    with open(_data_dir() / "superglue" / "CB" / "val.jsonl", encoding="utf-8") as f:
        return [ids[json.loads(line)["label"]] for line in f if line.strip()]


# --- classification and correlation on real dev labels ------------------------------------


def test_cola_mcc_and_accuracy_match_sklearn(cola_labels):
    assert len(cola_labels) == 1043
    preds = _flip(cola_labels, [0, 1], seed=0)
    out = compute_metrics(["mcc", "accuracy"], preds, cola_labels)
    assert set(out) == {"mcc", "accuracy"}
    assert out["mcc"] == pytest.approx(matthews_corrcoef(cola_labels, preds), abs=1e-12)
    assert out["accuracy"] == pytest.approx(accuracy_score(cola_labels, preds), abs=1e-12)
    assert 0.70 < out["accuracy"] < 0.80  # ~25% flipped
    assert 0.2 < out["mcc"] < 0.6
    assert all(type(v) is float for v in out.values())


def test_mrpc_f1_and_accuracy_match_sklearn(mrpc_labels):
    assert len(mrpc_labels) == 408
    preds = _flip(mrpc_labels, [0, 1], seed=1)
    out = compute_metrics(["accuracy", "f1"], preds, mrpc_labels)
    assert out["f1"] == pytest.approx(f1_score(mrpc_labels, preds), abs=1e-12)
    assert out["accuracy"] == pytest.approx(accuracy_score(mrpc_labels, preds), abs=1e-12)
    # positive class is label 1: F1 of class 0 is a different number
    assert out["f1"] != pytest.approx(f1_score(mrpc_labels, preds, pos_label=0), abs=1e-6)


def test_stsb_correlations_match_scipy(stsb_scores):
    assert len(stsb_scores) == 1500
    rng = random.Random(2)
    preds = [rng.uniform(0, 5) if rng.random() < 0.25 else s + rng.gauss(0, 0.7) for s in stsb_scores]
    out = compute_metrics(["pearson", "spearman"], preds, stsb_scores)
    assert out["pearson"] == pytest.approx(pearsonr(preds, stsb_scores)[0], abs=1e-9)
    assert out["spearman"] == pytest.approx(spearmanr(preds, stsb_scores)[0], abs=1e-9)
    assert 0.3 < out["pearson"] < 0.95 and 0.3 < out["spearman"] < 0.95
    assert all(type(v) is float for v in out.values())


def test_cb_macro_f1_three_classes_matches_sklearn(cb_labels):
    assert len(cb_labels) == 56 and set(cb_labels) == {0, 1, 2}
    preds = _flip(cb_labels, [0, 1, 2], seed=3)
    out = compute_metrics(["accuracy", "macro_f1"], preds, cb_labels)
    assert out["macro_f1"] == pytest.approx(f1_score(cb_labels, preds, average="macro"), abs=1e-12)
    assert out["accuracy"] == pytest.approx(accuracy_score(cb_labels, preds), abs=1e-12)
    assert out["macro_f1"] != pytest.approx(out["accuracy"], abs=1e-6)


def test_macro_f1_counts_classes_present_only_in_predictions():
    refs, preds = [0, 0, 1, 1], [0, 2, 1, 1]
    # class 0: P=1, R=1/2 -> 2/3; class 1: 1.0; class 2: 0.0 -> mean = (2/3 + 1 + 0) / 3 = 5/9
    out = compute_metrics(["macro_f1"], preds, refs)
    assert out["macro_f1"] == pytest.approx(5 / 9)
    assert out["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro"))


def test_constant_prediction_correlation_is_zero_not_nan():
    out = compute_metrics(["pearson", "spearman"], [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert out == {"pearson": 0.0, "spearman": 0.0}


# --- MultiRC -------------------------------------------------------------------------------


def test_multirc_f1a_and_em_hand_computed():
    groups = [(0, 0)] * 3 + [(0, 1)] * 2 + [(1, 0)] * 2
    refs = [1, 0, 1, 0, 1, 1, 1]
    preds = [1, 0, 1, 1, 1, 1, 0]
    # TP = 2 (q00) + 1 (q01) + 1 (q10) = 4, FP = 1 (q01), FN = 1 (q10) -> P = R = 4/5 -> F1a = 0.8
    # q00 all right, q01 has a FP, q10 has a FN -> EM = 1/3
    out = compute_metrics(["f1a", "em"], preds, refs, groups=groups)
    assert out == pytest.approx({"f1a": 0.8, "em": 1 / 3})


def test_multirc_groups_need_not_be_contiguous():
    groups = ["q1", "q2", "q1", "q2", "q3"]
    refs = [1, 0, 0, 1, 0]
    preds = [1, 0, 0, 0, 1]
    # TP = 1, FP = 1 (q3), FN = 1 (q2) -> P = R = 1/2 -> F1a = 0.5; only q1 all right -> EM = 1/3
    out = compute_metrics(["em", "f1a"], preds, refs, groups=groups)
    assert out == pytest.approx({"em": 1 / 3, "f1a": 0.5})
    assert compute_metrics(["em"], preds, refs, groups=groups) == pytest.approx({"em": 1 / 3})


# --- ReCoRD --------------------------------------------------------------------------------


def test_normalize_answer():
    assert normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("  An  apple, a pear and THE plum. ") == "apple pear and plum"
    assert normalize_answer("theater") == "theater"  # articles only as whole words


def test_record_f1_em_hand_computed():
    preds = ["The Eiffel Tower!", "Paris, France", "Barack Obama", "an apple"]
    golds = [["eiffel tower"], ["London", "Paris"], ["President Barack Obama", "Obama"], ["A pear", "Apple"]]
    # q1: normalised equal -> EM 1, F1 1
    # q2: vs "Paris": common 1, P = 1/2, R = 1 -> F1 2/3 (London: 0); EM 0
    # q3: vs "President Barack Obama": common 2, P = 1, R = 2/3 -> F1 0.8 (vs "Obama": 2/3); EM 0
    # q4: "apple" == "apple" (second gold) -> EM 1, F1 1
    # F1 = (1 + 2/3 + 0.8 + 1) / 4 = 13/15 ; EM = 2/4
    out = compute_metrics(["record_f1", "record_em"], preds, golds)
    assert out == pytest.approx({"record_f1": 13 / 15, "record_em": 0.5})
    assert all(type(v) is float for v in out.values())


def test_record_single_query_no_overlap():
    out = compute_metrics(["record_em", "record_f1"], ["Berlin"], [["Bonn", "the Rhine"]])
    assert out == {"record_em": 0.0, "record_f1": 0.0}


def test_record_query_without_gold_answers_is_an_error():
    with pytest.raises(ValueError, match="no gold answers"):
        compute_metrics(["record_f1"], ["x"], [[]])


# --- RACE ----------------------------------------------------------------------------------


def test_race_accuracy_per_level_hand_computed():
    preds = [0, 1, 2, 3, 0, 1]
    refs = [0, 1, 3, 3, 1, 1]
    levels = ["middle", "middle", "high", "high", "high", "high"]
    # middle: 2/2 right -> 1.0 ; high: wrong, right, wrong, right -> 0.5 ; overall 4/6
    out = compute_metrics(["race"], preds, refs, levels=levels)
    assert out == pytest.approx({"accuracy": 4 / 6, "accuracy_middle": 1.0, "accuracy_high": 0.5})


def test_race_absent_level_is_omitted():
    out = compute_metrics(["race"], [0, 1, 2], [0, 1, 0], levels=["high"] * 3)
    assert out == pytest.approx({"accuracy": 2 / 3, "accuracy_high": 2 / 3})
    assert "accuracy_middle" not in out


# --- API and errors ------------------------------------------------------------------------


def test_metric_names_and_direction():
    assert set(METRIC_NAMES) == {
        "accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman",
        "f1a", "em", "record_f1", "record_em", "race",
    }
    assert all(main_metric_direction(n) == "max" for n in METRIC_NAMES)


def test_no_hub_access(monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("evaluate.load must never be called")

    monkeypatch.setattr(evaluate, "load", no_load)
    assert compute_metrics(["accuracy"], [1, 0], [1, 1]) == {"accuracy": 0.5}


def test_empty_input_raises():
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(["accuracy"], [], [])


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="3 predictions vs 2 references"):
        compute_metrics(["accuracy"], [0, 1, 1], [0, 1])


def test_unknown_metric_raises_and_lists_valid_names():
    with pytest.raises(ValueError, match="bleu") as err:
        compute_metrics(["accuracy", "bleu"], [0], [0])
    for name in METRIC_NAMES:
        assert name in str(err.value)


def test_missing_side_inputs_raise():
    with pytest.raises(ValueError, match="groups"):
        compute_metrics(["f1a"], [0, 1], [0, 1])
    with pytest.raises(ValueError, match="levels"):
        compute_metrics(["race"], [0, 1], [0, 1])
    with pytest.raises(ValueError, match="levels"):
        compute_metrics(["race"], [0, 1], [0, 1], levels=["middle"])
