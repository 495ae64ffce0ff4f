"""Official task metrics (GLUE, SuperGLUE, RACE) as local ``evaluate`` modules.

Every metric is an ``evaluate.Metric`` subclass defined here and instantiated
directly, so nothing is ever fetched from the Hugging Face Hub.  Use
:func:`compute_metrics`; it returns plain Python floats keyed by metric name.
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter, defaultdict
from functools import lru_cache

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

_GLUE_CITATION = "Wang et al., 2019 (ICLR). GLUE: A Multi-Task Benchmark and Analysis Platform for NLU."
_SUPERGLUE_CITATION = "Wang et al., 2019 (NeurIPS). SuperGLUE: A Stickier Benchmark for General-Purpose NLU."
_RACE_CITATION = "Lai et al., 2017 (EMNLP). RACE: Large-scale ReAding Comprehension Dataset From Examinations."

_INT = datasets.Value("int64")
_FLOAT = datasets.Value("float64")
_STR = datasets.Value("string")
_STR_LIST = datasets.List(_STR) if hasattr(datasets, "List") else datasets.Sequence(_STR)  # datasets < 4


def _info(description: str, citation: str, **features) -> evaluate.MetricInfo:
    return evaluate.MetricInfo(
        description=description, citation=citation, features=datasets.Features(features)
    )


class Classification(evaluate.Metric):
    """Label-classification metrics of GLUE / SuperGLUE, chosen by ``config_name``.

    ``accuracy``; ``f1`` (binary F1, positive class = label 1; MRPC, QQP, CB-style
    reporting); ``macro_f1`` (unweighted mean of per-class F1 over every class in
    references and predictions; SuperGLUE CB); ``mcc`` (Matthews correlation; GLUE
    CoLA).  Computed with scikit-learn, as in the GLUE / SuperGLUE papers' baselines.
    """

    CONFIGS = ("accuracy", "f1", "macro_f1", "mcc")

    def _info(self):
        return _info(self.__doc__, _GLUE_CITATION + " " + _SUPERGLUE_CITATION,
                     predictions=_INT, references=_INT)

    def _compute(self, predictions, references):
        name = self.config_name
        if name == "accuracy":
            value = accuracy_score(references, predictions)
        elif name == "f1":
            value = f1_score(references, predictions, pos_label=1, average="binary", zero_division=0.0)
        elif name == "macro_f1":
            value = f1_score(references, predictions, average="macro", zero_division=0.0)
        elif name == "mcc":
            value = matthews_corrcoef(references, predictions)
        else:
            raise ValueError(f"Classification metric has no config {name!r}; valid: {self.CONFIGS}")
        return {name: float(value)}


class Correlation(evaluate.Metric):
    """Pearson or Spearman correlation (``config_name``) of float scores; GLUE STS-B.

    Computed with scipy.  An undefined correlation (a constant input, e.g. a model
    that predicts one score everywhere) is reported as 0.0 instead of NaN.
    """

    CONFIGS = ("pearson", "spearman")

    def _info(self):
        return _info(self.__doc__, _GLUE_CITATION, predictions=_FLOAT, references=_FLOAT)

    def _compute(self, predictions, references):
        fn = {"pearson": pearsonr, "spearman": spearmanr}[self.config_name]
        with warnings.catch_warnings():  # constant input: handled below
            warnings.simplefilter("ignore")
            value = float(fn(predictions, references)[0])
        return {self.config_name: 0.0 if math.isnan(value) else value}


class MultiRC(evaluate.Metric):
    """SuperGLUE MultiRC: ``f1a`` (binary F1 over all answer options) and ``em``
    (fraction of questions whose answer options are all labelled correctly).

    Needs ``groups``: one hashable question key per answer option.
    """

    EXTRA = ("groups",)

    def _info(self):
        return _info(self.__doc__, _SUPERGLUE_CITATION, predictions=_INT, references=_INT)

    def _compute(self, predictions, references, groups):
        if len(groups) != len(predictions):
            raise ValueError(f"MultiRC: got {len(groups)} groups for {len(predictions)} predictions")
        all_right: dict = defaultdict(lambda: True)
        for pred, ref, key in zip(predictions, references, groups):
            all_right[key] &= pred == ref
        f1a = f1_score(references, predictions, pos_label=1, average="binary", zero_division=0.0)
        return {"f1a": float(f1a), "em": sum(all_right.values()) / len(all_right)}


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD / ReCoRD normalisation: lowercase, drop punctuation, articles, extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


class ReCoRD(evaluate.Metric):
    """SuperGLUE ReCoRD: ``record_f1`` (token F1) and ``record_em`` (exact match).

    Both use SQuAD-style normalisation and take the max over the gold answers of a
    query, then average over queries (official ReCoRD evaluation script, as fractions).
    """

    def _info(self):
        return _info(self.__doc__, _SUPERGLUE_CITATION, predictions=_STR, references=_STR_LIST)

    def _compute(self, predictions, references):
        f1 = em = 0.0
        for i, (pred, golds) in enumerate(zip(predictions, references)):
            if not golds:
                raise ValueError(f"ReCoRD: query {i} has no gold answers")
            f1 += max(_token_f1(pred, gold) for gold in golds)
            em += max(float(normalize_answer(pred) == normalize_answer(gold)) for gold in golds)
        return {"record_f1": f1 / len(predictions), "record_em": em / len(predictions)}


class RACE(evaluate.Metric):
    """RACE accuracy: overall (``accuracy``) and per level (``accuracy_middle``,
    ``accuracy_high``), as reported in the RACE paper.  Needs ``levels`` ("middle" /
    "high") per question; levels absent from the input are omitted.
    """

    LEVELS = ("middle", "high")
    EXTRA = ("levels",)

    def _info(self):
        return _info(self.__doc__, _RACE_CITATION, predictions=_INT, references=_INT)

    def _compute(self, predictions, references, levels):
        if len(levels) != len(predictions):
            raise ValueError(f"RACE: got {len(levels)} levels for {len(predictions)} predictions")
        unknown = set(levels) - set(self.LEVELS)
        if unknown:
            raise ValueError(f"RACE: unknown levels {sorted(unknown)}; valid: {self.LEVELS}")
        correct = [p == r for p, r in zip(predictions, references)]
        result = {"accuracy": sum(correct) / len(correct)}
        for level in self.LEVELS:
            hits = [c for c, lv in zip(correct, levels) if lv == level]
            if hits:
                result[f"accuracy_{level}"] = sum(hits) / len(hits)
        return result


# metric name -> (module class, config_name, keys of the module's output to return)
_REGISTRY: dict[str, tuple[type, str | None, tuple[str, ...]]] = {
    **{name: (Classification, name, (name,)) for name in Classification.CONFIGS},
    **{name: (Correlation, name, (name,)) for name in Correlation.CONFIGS},
    "f1a": (MultiRC, None, ("f1a",)),
    "em": (MultiRC, None, ("em",)),
    "record_f1": (ReCoRD, None, ("record_f1",)),
    "record_em": (ReCoRD, None, ("record_em",)),
    "race": (RACE, None, ("accuracy", "accuracy_middle", "accuracy_high")),
}
METRIC_NAMES: tuple[str, ...] = tuple(_REGISTRY)


@lru_cache(maxsize=None)
def _module(cls: type, config_name: str | None) -> evaluate.Metric:
    return cls(config_name=config_name, keep_in_memory=True)


def _as_list(values) -> list:
    """Plain Python list from a list, numpy array or torch tensor."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def compute_metrics(names: list[str], predictions, references, **extra) -> dict[str, float]:
    """Compute the named metrics; returns ``{key: float}`` (see ``METRIC_NAMES``).

    ``extra`` holds per-example side inputs: ``groups`` for ``f1a``/``em`` (MultiRC)
    and ``levels`` for ``race``.
    """
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown or not names:
        what = f"Unknown metric name(s) {unknown}" if unknown else "No metric names given"
        raise ValueError(f"{what}; valid names: {', '.join(METRIC_NAMES)}")
    predictions, references = _as_list(predictions), _as_list(references)
    if not predictions or not references:
        raise ValueError("compute_metrics needs at least one prediction and one reference; got empty input")
    if len(predictions) != len(references):
        raise ValueError(f"Length mismatch: {len(predictions)} predictions vs {len(references)} references")

    results: dict[str, float] = {}
    done: dict[tuple, dict] = {}
    for name in names:
        cls, config_name, keys = _REGISTRY[name]
        if (cls, config_name) not in done:
            missing = [k for k in getattr(cls, "EXTRA", ()) if k not in extra]
            if missing:
                raise ValueError(f"Metric {name!r} needs extra argument(s) {missing}")
            side_inputs = {k: list(extra[k]) for k in getattr(cls, "EXTRA", ())}
            done[(cls, config_name)] = _module(cls, config_name).compute(
                predictions=predictions, references=references, **side_inputs
            )
        output = done[(cls, config_name)]
        results.update({key: float(output[key]) for key in keys if key in output})
    return results


def main_metric_direction(name: str) -> str:
    """Whether larger ("max") or smaller ("min") is better; every metric here is "max"."""
    return "max"
