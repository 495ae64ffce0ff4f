"""AgoraCallback in real fits: a tiny student and a tiny teacher on the tiny RTE rows of
tests/fixtures/tiny (no benchmark files needed).

Expansion, distillation and reweighting together; the teacher cache across epochs and runs;
what is reported; resume equivalence; bad input.
"""

import json
import warnings

import lightning as L
import numpy as np
import pytest
import torch

import agora.fit.run
from agora.config import validate_recipe
from agora.errors import ModelError, RecipeError
from agora.method.expand import AgoraWarning
from agora.method.teacher import ModelNotFoundError
from agora.trainer import AgoraTrainer
from conftest import tiny_recipe

AGORA = {"enabled": True, "expand_every_n_epochs": 1, "expand_from": "mistakes", "variants_per_source": 4,
         "alpha": 0.5, "temperature": 2.0, "gamma": 1.0, "rho": 0.3}


def no_variants(segments, rng, n, **settings):
    """A generator that never produces anything (the callback must warn and go on)."""
    return []


def _recipe(local_bort, tiny_data, out, teacher, agora=None, **sections):
    return tiny_recipe(local_bort, tiny_data, out, agora={**AGORA, **(agora or {})},
                       teacher={"path": str(teacher), "cache_dir": str(out.parent / "teacher-cache")},
                       **{"trainer": {"max_epochs": 3}, **sections})


def _fit(recipe):
    return AgoraTrainer(validate_recipe(recipe)).fit()


def _agora(run) -> dict:
    return json.loads((run / "metrics.json").read_text())["agora"]


def _generated(run) -> list[dict]:
    return [json.loads(line) for line in (run / "agora" / "generated.jsonl").read_text().splitlines()]


def _callback_state(ckpt) -> dict:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return next(v for k, v in state["callbacks"].items() if k.startswith("AgoraCallback"))


def test_fit_expands_mistakes_distils_reweights_and_reports(tmp_path, tiny_data, local_bort, local_teacher):
    run = tmp_path / "run"
    _fit(_recipe(local_bort, tiny_data, run, local_teacher))
    report = _agora(run)
    epochs = report["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    # expansion after epochs 0 and 1, none after the last; sources are E_gen's mistakes only
    assert "kept" in epochs[0] and "kept" in epochs[1] and "kept" not in epochs[2]
    for e in epochs[:2]:
        assert e["sources"] == e["mistakes"] > 0 and e["e_gen_rows"] > 0
        assert e["variants"] == e["kept"] + e["rejected"]["confidence"] + e["rejected"]["balance"] + e["rejected"]["seen"]
        assert sum(e["label_balance"].values()) == e["kept"] and 0 <= e["agreement"] <= 1
    rows = _generated(run)
    assert len(rows) == report["generated"] == sum(e["kept"] for e in epochs[:2]) > 0
    predictions = {name: {json.loads(r)["idx"] for r in (run / "predictions" / f"{name}.jsonl").read_text().splitlines()}
                   for name in ("e_gen", "e_sel")}
    assert {r["source_idx"] for r in rows} <= predictions["e_gen"]  # E_sel is never used for generation
    assert not {r["source_idx"] for r in rows} & predictions["e_sel"]
    assert all(r["label"] in ("entailment", "not_entailment") and abs(sum(r["teacher_probs"]) - 1) < 1e-4 for r in rows)
    # the teacher: D scored at the start (distillation), each distinct input once
    teacher = report["teacher"]
    assert teacher["train_rows_scored"] == teacher["teacher_forward_calls"] == 64  # 80 rows minus E's 16
    assert report["teacher_forward_calls"] == 64 + sum(e["scored"] for e in epochs[:2])
    assert report["teacher_cache_hits"] == 0
    # reweighting: mean 1 over D + generated rows, generated rows hold at most rho of the total
    w = epochs[-1]["weights"]
    assert w["n"] == 64 + len(rows) and w["mean"] == pytest.approx(1.0)
    assert w["generated_share"] <= AGORA["rho"] + 1e-9 and w["max"] > w["min"]
    # logged through Lightning's logger
    header = (run / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"agora/mistakes", "agora/kept", "agora/teacher_forward_calls", "agora/weights_max", "agora/agreement"} <= set(header)

    # a second run with the same teacher cache: zero teacher calls, the same generated rows
    again = tmp_path / "again"
    _fit(_recipe(local_bort, tiny_data, again, local_teacher))
    second = _agora(again)
    assert second["teacher_forward_calls"] == 0
    assert second["teacher_cache_hits"] == report["teacher_forward_calls"]
    assert _generated(again) == rows


def test_expand_all_sampler_mode_confidence_filter_and_balance(tmp_path, tiny_data, local_bort, local_teacher):
    run = tmp_path / "run"
    agora = {"expand_from": "all", "variants_per_source": 2, "min_teacher_confidence": 0.54,
             "balance_generated": True, "reweight_mode": "sampler", "reweight_by": "error", "alpha": 0.0,
             "generated_targets": "hard", "rho": 0.5}
    _fit(_recipe(local_bort, tiny_data, run, local_teacher, agora, trainer={"max_epochs": 2}))
    report = _agora(run)
    first = report["epochs"][0]
    assert "mistakes" not in first and first["sources"] == 8  # every row of E_gen (not evaluated: no mistakes)
    assert report["teacher"] is not None and "train_rows_scored" not in report["teacher"]  # alpha 0: D not scored
    assert first["rejected"]["confidence"] > 0 and first["kept"] > 0
    assert first["kept"] + first["rejected"]["confidence"] + first["rejected"]["balance"] == first["scored"]
    assert report["epochs"][-1]["weights"]["generated_share"] <= 0.5 + 1e-9


def test_require_agreement_keeps_only_rows_the_teacher_labels_as_their_source(tmp_path, tiny_data, local_bort, local_teacher):
    run = tmp_path / "run"
    agora = {"expand_from": "all", "variants_per_source": 2, "require_agreement": True, "balance_generated": False}
    _fit(_recipe(local_bort, tiny_data, run, local_teacher, agora, trainer={"max_epochs": 2}))
    first = _agora(run)["epochs"][0]
    assert first["rejected"]["disagree"] > 0 and first["kept"] > 0  # a random teacher disagrees with some
    assert first["kept"] + first["rejected"]["disagree"] == first["scored"] and first["agreement_kept"] == 1.0
    assert first["agreement"] < 1.0


def test_training_loss_distils_soft_rows_and_weights():
    """The loss Agora gives the module: an explicit spec, no recipe read inside."""
    from agora.fit.module import HardLabelLoss
    from agora.method.distill import DistillationLoss, DistillSpec, distillation_loss

    loss_fn = DistillationLoss(DistillSpec(alpha=0.3, temperature=3.0, generated_targets="soft"), regression=False)
    logits = torch.randn(4, 2)
    batch = {"labels": torch.tensor([0, 1, 1, 0]), "weight": torch.tensor([1.0, 2.0, 0.5, 1.0]),
             "teacher_probs": torch.tensor([[0.8, 0.2], [float("nan")] * 2, [0.3, 0.7], [0.6, 0.4]]),
             "is_generated": torch.tensor([False, False, True, True])}
    loss, per = loss_fn(logits, batch)
    want, want_per = distillation_loss(logits, batch["labels"], batch["teacher_probs"], torch.tensor([True, False, True, True]),
                                       0.3, 3.0, batch["weight"], torch.tensor([False, False, True, True]))
    assert torch.allclose(loss, want) and torch.allclose(per, want_per)
    plain = {"labels": batch["labels"]}
    ce = torch.nn.functional.cross_entropy(logits, batch["labels"])
    assert torch.allclose(loss_fn(logits, plain)[0], ce) and torch.allclose(HardLabelLoss(False)(logits, plain)[0], ce)
    hard = DistillationLoss(DistillSpec(alpha=0.3, temperature=3.0, generated_targets="hard"), regression=False)
    assert not torch.allclose(hard(logits, batch)[1][2:], per[2:])  # generated rows keep their hard-label term


class _Stop(Exception):
    pass


class _CrashAt(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise _Stop(f"stopped before epoch {self.epoch}")


def test_resumed_run_ends_like_an_uninterrupted_one(tmp_path, tiny_data, local_bort, local_teacher, monkeypatch):
    agora_settings = {"expand_from": "mistakes", "reweight_mode": "loss"}
    whole = tmp_path / "whole"
    _fit(_recipe(local_bort, tiny_data, whole, local_teacher, agora_settings, output={"predict": False, "export": False}))

    stopped = tmp_path / "stopped"
    original = agora.fit.run._trainer_kwargs

    def crashing(*args):
        kwargs = original(*args)
        return {**kwargs, "callbacks": kwargs["callbacks"] + [_CrashAt(2)]}

    monkeypatch.setattr(agora.fit.run, "_trainer_kwargs", crashing)
    recipe = _recipe(local_bort, tiny_data, stopped, local_teacher, agora_settings, output={"predict": False, "export": False})
    with pytest.raises(_Stop):
        _fit(recipe)
    assert len(_callback_state(stopped / "checkpoints" / "last.ckpt")["epochs_done"]) == 2
    monkeypatch.setattr(agora.fit.run, "_trainer_kwargs", original)
    recipe["output"]["resume_from"] = "last"
    _fit(recipe)

    a = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    sa, sb = _callback_state(whole / "checkpoints" / "last.ckpt"), _callback_state(stopped / "checkpoints" / "last.ckpt")
    assert sa["gen_inputs"] == sb["gen_inputs"] and sa["gen_labels"] == sb["gen_labels"] and len(sa["gen_inputs"]) > 0
    assert torch.equal(sa["weights"], sb["weights"]) and sa["epochs_done"] == sb["epochs_done"] == [0, 1, 2]
    assert _generated(whole) == _generated(stopped)
    assert [e["kept"] for e in _agora(whole)["epochs"][:2]] == [e["kept"] for e in _agora(stopped)["epochs"][:2]]


def test_generator_returning_nothing_warns_and_the_fit_goes_on(tmp_path, tiny_data, local_bort, local_teacher):
    run = tmp_path / "run"
    recipe = _recipe(local_bort, tiny_data, run, local_teacher, {"generator": "test_callback:no_variants", "alpha": 0.0},
                     trainer={"max_epochs": 2}, output={"predict": False, "export": False})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(recipe)
    assert any(issubclass(w.category, AgoraWarning) and "returned no variant" in str(w.message) for w in caught)
    report = _agora(run)
    assert report["generated"] == 0 and report["epochs"][0]["kept"] == 0


def test_bad_settings_fail_before_training(tmp_path, tiny_data, local_bort, local_teacher):
    def recipe(agora=None, teacher=None):
        r = _recipe(local_bort, tiny_data, tmp_path / "run", local_teacher, agora)
        r["teacher"].update(teacher or {})
        return r

    with pytest.raises(RecipeError, match="agora.alpha"):
        validate_recipe(recipe({"alpha": 1.5}))
    with pytest.raises(RecipeError, match="agora.temperature"):
        validate_recipe(recipe({"temperature": 0}))
    with pytest.raises(RecipeError, match="unknown generator 'thesaurus'"):
        validate_recipe(recipe({"generator": "thesaurus"}))
    with pytest.raises(RecipeError, match="need a teacher"):
        validate_recipe(recipe(teacher={"path": None}))
    with pytest.raises(ModelNotFoundError, match="no such file"):
        _fit(recipe(teacher={"path": str(tmp_path / "missing-teacher")}))
    with pytest.raises(ModelError, match="labels"):  # local_bort has generic LABEL_0/LABEL_1 names
        _fit(recipe(teacher={"path": str(local_bort)}))
    assert not (tmp_path / "run" / "metrics.json").exists()


def _training_set(d_idx, names=("entailment", "not_entailment")):
    """A TrainingSet over a fake D whose tokenizer keeps only idx (enough for state and positions)."""
    import datasets

    from agora.method.expand import Sources
    from agora.method.training_set import TrainingSet

    d = Sources(np.asarray(d_idx, np.int64), [(f"row {i}",) for i in d_idx], np.zeros(len(d_idx), np.int64))
    tokens = datasets.Dataset.from_dict({"idx": list(d.idx)})
    tokenize = lambda idx, inputs, labels: datasets.Dataset.from_dict({"idx": [int(i) for i in idx]})  # noqa: E731
    return TrainingSet(d, tokens, tokenize, list(names))


def test_training_set_and_callback_state_round_trip(tmp_path, tiny_data, local_bort, local_teacher):
    from agora.data.cards import load_task
    from agora.method.callback import AgoraCallback
    from agora.method.generated import Expansion

    a = _training_set([5, 1, 3])
    a.add(Expansion([("a b", "c"), ("d", "e f")], np.array([3, 1]), np.array([[0.9, 0.1], [0.2, 0.8]], np.float32),
                    np.array([0, 1])), epoch=0)
    a.weights = np.array([1.0, 0.5, 1.5, 1.0, 1.0])
    path = tmp_path / "state.pt"
    torch.save(a.state_dict(), path)
    b = _training_set([5, 1, 3])
    b.load_state_dict(torch.load(path, weights_only=True))
    assert b.gen_inputs == a.gen_inputs and b.gen_labels == a.gen_labels and b.digest() == a.digest()
    assert np.array_equal(b.gen_probs, a.gen_probs) and np.array_equal(b.weights, a.weights)
    assert b.dataset()["idx"] == [5, 1, 3, b.base, b.base + 1] and len(b) == 5 and b.epoch_size == 3
    cols = b.columns  # what the loader serves with each row
    assert cols["is_generated"].tolist() == [False] * 3 + [True] * 2 and cols["weight"].tolist() == [1, 0.5, 1.5, 1, 1]
    assert np.isnan(cols["teacher_probs"][:3]).all() and cols["teacher_probs"][3].tolist() == pytest.approx([0.9, 0.1])
    assert [r.label for r in b.generated_rows()] == ["entailment", "not_entailment"]
    # the callback's own state (epochs done, the per-epoch report) round-trips beside it
    cfg = validate_recipe(_recipe(local_bort, tiny_data, tmp_path / "run", local_teacher))
    cb = AgoraCallback(cfg, load_task("rte"))
    cb.epochs_done, cb.history = [0], [{"epoch": 0, "kept": np.int64(2)}]
    torch.save(cb.state_dict(), path)
    again = AgoraCallback(cfg, load_task("rte"))
    again.load_state_dict(torch.load(path, weights_only=True))
    assert again.epochs_done == [0] and again.history == [{"epoch": 0, "kept": 2}]


def test_generated_rows_never_take_the_idx_of_a_row_of_d():
    """D may hold rows generated in an earlier round (idx >= GENERATED_IDX_BASE): new rows go after them."""
    from agora.method.generated import GENERATED_IDX_BASE, generated_base

    assert generated_base(np.array([4, 0, 7])) == GENERATED_IDX_BASE
    rows = _training_set([9, 2, GENERATED_IDX_BASE + 1, GENERATED_IDX_BASE])  # two rows of a previous round
    assert rows.base == GENERATED_IDX_BASE + 2
    rows.gen_inputs = [("x",), ("y",)]
    idx = np.array([GENERATED_IDX_BASE, 2, rows.base + 1, GENERATED_IDX_BASE + 1, rows.base, 9])
    assert rows.positions(idx).tolist() == [3, 1, 5, 2, 4, 0]


def _save_teacher(path, tiny_tokenizer_dir, kind):
    from transformers import AutoTokenizer, BertConfig, BertForMultipleChoice, BertForSequenceClassification

    torch.manual_seed(2)
    config = BertConfig(vocab_size=50265, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, num_labels=1, initializer_range=0.2)
    (BertForMultipleChoice if kind == "multiple_choice" else BertForSequenceClassification)(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(path)
    return path


@pytest.mark.parametrize("task,kind", [("stsb", "regression"), ("copa", "multiple_choice")])
def test_regression_and_multiple_choice_fits(task, kind, tmp_path, tiny_data, local_bort, tiny_tokenizer_dir):
    teacher = _save_teacher(tmp_path / "teacher", tiny_tokenizer_dir, kind)
    run = tmp_path / "run"
    recipe = tiny_recipe(local_bort, tiny_data, run, task=task,
                         data={"max_train_samples": 64, "max_eval_samples": 32},
                         agora={**AGORA, "expand_from": "all", "variants_per_source": 2},
                         teacher={"path": str(teacher), "cache_dir": str(tmp_path / "cache")},
                         trainer={"max_epochs": 2}, output={"predict": False, "export": False})
    _fit(recipe)
    report, rows = _agora(run), _generated(run)
    assert report["generated"] == len(rows) > 0 and report["teacher"]["train_rows_scored"] > 0
    if kind == "regression":
        assert all(isinstance(r["label"], float) and r["teacher_probs"] == [pytest.approx(r["label"], abs=1e-5)]
                   for r in rows)
        assert "label_balance" not in report["epochs"][0]
    else:  # (premise, "", option 1, option 2): the premise is perturbed, the options kept
        assert all(len(r["inputs"]) == 4 and r["inputs"][1] == "" and len(r["teacher_probs"]) == 2 for r in rows)
        assert sum(report["epochs"][0]["label_balance"].values()) == report["epochs"][0]["kept"]


def test_dev_scored_at_end_gives_the_same_fit(tmp_path, tiny_data, local_bort, local_teacher):
    """``data.eval_dev: at_end``: the epochs score E_sel and E_gen only, and the fit (best epoch, final
    scores, Agora's generated rows) is the one that scores dev every epoch."""
    runs = {}
    for when in ("every_epoch", "at_end"):
        run = tmp_path / when
        _fit(_recipe(local_bort, tiny_data, run, local_teacher, data={"eval_dev": when}, trial={"e_seed": 0},
                     trainer={"max_epochs": 2}, output={"predict": False, "export": False}))
        runs[when] = json.loads((run / "metrics.json").read_text())
    every, at_end = runs["every_epoch"], runs["at_end"]
    assert all("val/validation/accuracy" in e for e in every["epochs"])
    assert not any("val/validation/accuracy" in e for e in at_end["epochs"])
    assert all("val/e_sel/accuracy" in e and "val/e_gen/accuracy" in e for e in at_end["epochs"])
    assert [e["val/e_sel/accuracy"] for e in at_end["epochs"]] == [e["val/e_sel/accuracy"] for e in every["epochs"]]
    assert at_end["final"] == every["final"] and "validation/accuracy" in at_end["final"]
    assert at_end["agora"]["generated"] == every["agora"]["generated"] > 0
    assert (tmp_path / "at_end" / "predictions" / "validation.jsonl").read_text() == \
        (tmp_path / "every_epoch" / "predictions" / "validation.jsonl").read_text()
