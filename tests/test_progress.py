"""Progress a log can show (agora/fit/progress.py): where stderr is not a terminal a fit prints one plain
line per epoch and at most every ``output.progress_every_s`` in between; a terminal keeps Lightning's bar;
a search prints one line per finished fit. Tiny model, the tiny RTE rows (80 train rows, 3 steps an epoch)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sys

import pytest
from conftest import tiny_recipe

from agora.config import validate_recipe

LINE = re.compile(r"^\[fit (?P<name>\S+)\] epoch (?P<epoch>\d+)/(?P<epochs>\d+)(?P<done> done)?, "
                  r"step (?P<step>\d+)/(?P<steps>\d+) \((?P<percent>\d+)%\): "
                  r"(?P<speed>[\d.]+) examples/s, ETA (?P<eta>\d+:\d\d:\d\d|\?), train loss (?P<loss>[\d.]+)"
                  r"(, val_score (?P<score>[\d.]+))?$")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


def _recipe(local_bort, tiny_data, out, every_s: float, trainer=None, **sections):
    return tiny_recipe(local_bort, tiny_data, out, data={"max_eval_samples": 16, "max_predict_samples": 8},
                       trainer={"enable_progress_bar": True, "num_sanity_val_steps": 0, **(trainer or {})},
                       output={"progress_every_s": every_s, "export": False}, **sections)


def _lines(text: str, name: str) -> list[re.Match]:
    """The progress lines of fit ``name``, each matched whole by :data:`LINE` (a line that starts like one
    but does not match fails the test)."""
    lines = [line for line in text.split("\n") if line.startswith(f"[fit {name}]")]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return matches


def test_a_fit_with_stderr_in_a_file_writes_one_plain_line_per_epoch(tmp_path, local_bort, tiny_data):
    """stderr redirected to a file (as under nohup or in CI): no bar, one line at each epoch's end with the
    step of the total, examples/s, the ETA, the last training loss and the epoch's score."""
    from agora.trainer import AgoraTrainer

    trainer = AgoraTrainer(validate_recipe(_recipe(local_bort, tiny_data, tmp_path / "run", every_s=600)))
    with open(tmp_path / "err.log", "w") as err, contextlib.redirect_stderr(err):
        trainer.fit()
    log = (tmp_path / "err.log").read_text()
    assert "Epoch " not in log and "━" not in log  # Lightning's bars (rich's, tqdm's) drew nothing into the file
    lines = _lines(log, "run")
    assert [(m["epoch"], m["step"], bool(m["done"])) for m in lines] == [("1", "3", True), ("2", "6", True)]
    assert [(m["epochs"], m["steps"], m["percent"]) for m in lines] == [("2", "6", "50"), ("2", "6", "100")]
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]
    assert [float(m["score"]) for m in lines] == [round(e["val_score"], 4) for e in history]
    for m in lines:
        assert float(m["speed"]) > 0 and math.isfinite(float(m["loss"])) and float(m["loss"]) > 0
    assert lines[-1]["eta"] == "0:00:00"


def test_lines_come_between_epochs_at_the_interval(tmp_path, local_bort, tiny_data):
    """``output.progress_every_s`` tiny: a line after every step too (the epoch's last step is reported by its
    epoch's line), written to whatever stderr is when it is written. Scored every second epoch of 3: only the
    second epoch's line has a score (not the sanity check's, not an earlier epoch's)."""
    from agora.fit.run import run_fit

    cfg = validate_recipe(_recipe(local_bort, tiny_data, tmp_path / "run", every_s=1e-6,
                                  trainer={"max_epochs": 3, "check_val_every_n_epoch": 2, "num_sanity_val_steps": 2}))
    with open(tmp_path / "err.log", "w") as err, contextlib.redirect_stderr(err):
        run_fit(cfg)
    lines = _lines((tmp_path / "err.log").read_text(), "run")
    assert [(m["epoch"], m["step"], bool(m["done"])) for m in lines] == [
        ("1", "1", False), ("1", "2", False), ("1", "3", True), ("2", "4", False), ("2", "5", False), ("2", "6", True),
        ("3", "7", False), ("3", "8", False), ("3", "9", True)]
    assert {(m["epochs"], m["steps"]) for m in lines} == {("3", "9")}
    assert [m["score"] is not None for m in lines] == [False] * 5 + [True] + [False] * 3
    assert all(m["eta"] != "?" for m in lines) and lines[-1]["eta"] == "0:00:00"


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_the_trainer_gets_the_rich_bar_on_a_terminal_and_plain_lines_otherwise(tmp_path, local_bort, tiny_data,
                                                                               monkeypatch, tty):
    from lightning.pytorch.callbacks import RichProgressBar

    from agora.fit.progress import LogLines
    from agora.fit.run import _trainer_kwargs, build_trainer

    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    cfg = validate_recipe(_recipe(local_bort, tiny_data, tmp_path / "run", every_s=7))
    trainer = build_trainer(_trainer_kwargs(cfg, tmp_path / "run", [], False, {}), cfg.trainer)
    bar = trainer.progress_bar_callback  # the one bar: Lightning added none of its own beside ours
    assert type(bar) is (RichProgressBar if tty else LogLines)
    assert tty or (bar.every_s, bar.name) == (7.0, "run")


def test_no_bar_where_the_recipe_turns_it_off_or_brings_its_own(monkeypatch):
    from lightning.pytorch.callbacks import TQDMProgressBar

    from agora.fit.progress import progress_callbacks

    monkeypatch.setattr(sys, "stderr", _Stream(False))
    assert progress_callbacks({"enable_progress_bar": False}, 30, "x") == []
    assert progress_callbacks({"callbacks": [TQDMProgressBar()]}, 30, "x") == []
    assert [type(c).__name__ for c in progress_callbacks({}, 30, "x")] == ["LogLines"]


@pytest.mark.parametrize("value, why", [(0, "greater than 0"), ("often", "a valid number")])
def test_a_bad_progress_interval_is_refused_naming_the_file_and_the_field(value, why):
    from agora.errors import RecipeError

    with pytest.raises(RecipeError) as err:
        validate_recipe({"task": "rte", "output": {"progress_every_s": value}}, source="fit.yaml")
    assert f"fit.yaml: invalid recipe\n  - 'output.progress_every_s': Input should be {why}" in str(err.value)


def test_a_search_prints_one_line_per_finished_fit(tmp_path, local_bort, tiny_data):
    """One ``[search]`` line per finished fit (its θ, E_sel, its time); each fit's own progress goes to stderr."""
    from agora.search import run_search

    recipe = _recipe(local_bort, tiny_data, tmp_path / "search", every_s=600, trainer={"max_epochs": 1},
                     search={"space": {"optim.lr": [1e-3, 2e-3]}, "max_rounds": 1})
    said: list[str] = []
    with open(tmp_path / "err.log", "w") as err, contextlib.redirect_stderr(err):
        run_search(validate_recipe(recipe), "search.yaml", progress=said.append)
    fits = [line for line in said if line.startswith("[search] round 0, fit ")]
    assert len(fits) == 2, said
    state = json.loads((tmp_path / "search" / "search" / "state.json").read_text())
    records = list(state["rounds"][0]["fits"].values())
    for i, (line, lr, record) in enumerate(zip(fits, ("0.001", "0.002"), records), start=1):
        assert line.startswith(f"[search] round 0, fit {i}/2 (#{i}): lr={lr} -> E_sel {record['score'] * 100:.2f}")
        assert re.search(r"; \d+\.\d s, \d left in the round$", line), line
    log = (tmp_path / "err.log").read_text()
    ended = re.findall(r"^\[fit (\S+)\] epoch 1/1 done, step 2/2 ", log, re.MULTILINE)
    assert sorted(ended) == sorted(r["trial"] for r in records)


def test_say_flushes_a_block_buffered_stdout(tmp_path, monkeypatch):
    """The search's lines reach a log file at once (stdout to a file is block-buffered), not at exit."""
    from agora.fit.progress import say

    with open(tmp_path / "out.log", "w", buffering=1 << 16) as out:
        monkeypatch.setattr(sys, "stdout", out)
        say("[search] round 0, fit 1/2")
        assert (tmp_path / "out.log").read_text() == "[search] round 0, fit 1/2\n"
