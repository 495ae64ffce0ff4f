"""A fit interrupted in its second epoch and resumed with ``output.resume_from: last`` ends like the
uninterrupted fit: the same weights (exactly), the same ``logs/metrics.csv`` rows (the first epoch's
kept), the same per-epoch history; plain and Agora fits; interrupted inside an epoch (resumed from the
end of the first epoch, the second done again), at the end of an epoch, and after a checkpoint written
inside an epoch (``trainer.val_check_interval``: the sampler's position and the generators' states
restored)."""

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import tiny_recipe

import agora.fit.run
from agora.config import validate_recipe
from agora.trainer import AgoraTrainer

AGORA = {"enabled": True, "expand_every_n_epochs": 1, "expand_from": "mistakes", "variants_per_source": 3,
         "alpha": 0.5, "gamma": 1.0, "rho": 0.3}
VOLATILE = ("seconds", "teacher_forward_calls", "teacher_cache_hits")
"""Wall times, and the teacher cache's counts (a resumed fit finds warm what the interrupted one scored)."""


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


class _Stop(Exception):
    pass


class Interrupt(L.Callback):
    """Raise before batch ``batch`` of epoch ``epoch`` or, with ``batch=None``, once that epoch has ended (its
    validation done, checkpoints/last.ckpt written), before the next one starts."""

    def __init__(self, epoch: int, batch: int | None):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise _Stop(f"interrupted before batch {batch_idx} of epoch {self.epoch}")

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch + 1 and self.batch is None:
            raise _Stop(f"interrupted at the end of epoch {self.epoch}")


def _recipe(kind: str, tiny_bort, tiny_teacher, data_dir, out: Path, inside_checkpoint: bool) -> dict:
    trainer = {"max_epochs": 3, **({"val_check_interval": 0.5} if inside_checkpoint else {})}
    extra = {}
    if kind == "agora":
        extra = {"agora": AGORA, "teacher": {"path": str(tiny_teacher), "cache_dir": str(out.parent / f"{out.name}-cache")}}
    return tiny_recipe(tiny_bort, data_dir, out, trainer=trainer, output={"predict": False, "export": False}, **extra)


def _fit(recipe: dict):
    return AgoraTrainer(validate_recipe(recipe)).fit()


def _csv(run: Path) -> list[dict]:
    with open(run / "logs" / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not any(word in k for word in VOLATILE)} for row in csv.DictReader(handle)]


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not any(word in k for word in VOLATILE)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _metrics(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return _plain({"epochs": metrics["epochs"], "final": metrics["final"], "agora": metrics["agora"].get("epochs")})


@pytest.fixture(scope="module")
def references(tmp_path_factory, tiny_bort, tiny_teacher, data_dir):
    """The uninterrupted fits, made once: (kind, checkpoint inside an epoch) -> run dir."""
    out = {}
    for kind in ("plain", "agora"):
        for inside_checkpoint in (False, True):
            run = tmp_path_factory.mktemp("reference") / f"{kind}-{inside_checkpoint}"
            _fit(_recipe(kind, tiny_bort, tiny_teacher, data_dir, run, inside_checkpoint))
            out[kind, inside_checkpoint] = run
    return out


@pytest.mark.parametrize("kind", ["plain", "agora"])
@pytest.mark.parametrize("where, batch, inside_checkpoint", [
    ("inside an epoch", 2, False),         # last.ckpt is the end of epoch 0: epoch 1 is done again
    ("at the end of an epoch", None, False),
    ("after a checkpoint inside an epoch", 3, True),  # last.ckpt after batch 2 of 4 of epoch 1
])
def test_resumed_fit_ends_like_the_uninterrupted_one(kind, where, batch, inside_checkpoint, references, tmp_path,
                                                     tiny_bort, tiny_teacher, data_dir, monkeypatch, capsys):
    run = tmp_path / "run"
    recipe = _recipe(kind, tiny_bort, tiny_teacher, data_dir, run, inside_checkpoint)
    original = agora.fit.run._trainer_kwargs

    def interrupted(*args):
        kwargs = original(*args)
        return {**kwargs, "callbacks": kwargs["callbacks"] + [Interrupt(1, batch)]}

    monkeypatch.setattr(agora.fit.run, "_trainer_kwargs", interrupted)
    with pytest.raises(_Stop):
        _fit(recipe)
    monkeypatch.setattr(agora.fit.run, "_trainer_kwargs", original)
    capsys.readouterr()

    recipe["output"]["resume_from"] = "last"
    _fit(recipe)
    out = capsys.readouterr().out

    reference = references[kind, inside_checkpoint]
    a = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"] == 12
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    expected, got = _csv(reference), _csv(run)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in expected] and got[0]["epoch"] == "0"
    assert got == expected
    assert _metrics(run) == _metrics(reference)
    if kind == "agora":
        generated = [(run / "agora" / "generated.jsonl").read_text(), (reference / "agora" / "generated.jsonl").read_text()]
        assert generated[0] == generated[1] and generated[0]
    said = [line for line in out.splitlines() if line.startswith("resuming from")]
    assert len(said) == 1, out
    said = said[0]
    if inside_checkpoint:
        assert "written in epoch 1 after batch 2 of 4 (step 6); the epoch goes on from batch 3" in said, said
    elif batch is None:
        assert "written at the end of epoch 1 (step 8); training goes on with epoch 2 from its first batch" in said, said
    else:
        assert "written at the end of epoch 0 (step 4); training goes on with epoch 1 from its first batch" in said, said


class Orders(L.Callback):
    """The rows of every training batch, per epoch."""

    def __init__(self):
        self.epochs: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).extend(batch["idx"].tolist())


@pytest.mark.parametrize("kind", ["plain", "agora"])
def test_each_epoch_draws_its_own_order(kind, tmp_path, tiny_bort, tiny_teacher, data_dir, monkeypatch):
    """Lightning sets the epoch of a loader's sampler, not of its batch sampler (ours): each epoch used to draw
    epoch 0's order. Every epoch draws |D| rows in its own order: plain, each of the 128 rows once; Agora (D is
    train less E, no row generated here), drawn by weight with replacement after the first epoch."""
    orders = Orders()
    original = agora.fit.run._trainer_kwargs

    def recorded(*args):
        kwargs = original(*args)
        return {**kwargs, "callbacks": kwargs["callbacks"] + [orders]}

    monkeypatch.setattr(agora.fit.run, "_trainer_kwargs", recorded)
    recipe = _recipe(kind, tiny_bort, tiny_teacher, data_dir, tmp_path / "run", False)
    if kind == "agora":
        recipe["agora"] = {**AGORA, "expand_every_n_epochs": 0}
    _fit(recipe)
    assert sorted(orders.epochs) == [0, 1, 2]
    for rows in orders.epochs.values():
        assert len(rows) == len(orders.epochs[0]) == (103 if kind == "agora" else 128)
        assert kind == "agora" or sorted(rows) == sorted(orders.epochs[0]) == sorted(set(rows))
    assert len({tuple(rows) for rows in orders.epochs.values()}) == 3, "the same order in two epochs"
