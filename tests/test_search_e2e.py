"""Agora's rounds end to end: the real CLI runs a search (tiny student, tiny teacher, the tiny RTE
rows of tests/fixtures/tiny, 4 θs, 2 rounds), then the report, plots, export and resume are checked."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, tiny_recipe
from test_golden import _check, _search_summary

SPACE = {"optim.lr": [3e-3, 1e-4], "seed": [0, 1]}


def _recipe(local_bort, local_teacher, tiny_data, out, agora=True):
    return tiny_recipe(
        local_bort, tiny_data, out,
        data={"max_train_samples": 64, "max_eval_samples": 32, "max_predict_samples": 16},
        trainer={"max_epochs": 1, "num_sanity_val_steps": 0},
        agora={"enabled": agora, "expand_every_n_epochs": 0, "variants_per_source": 2, "alpha": 0.5},
        teacher={"path": str(local_teacher), "cache_dir": str(out.parent / f"teacher-cache-{out.name}")},
        search={"space": SPACE, "max_rounds": 2, "max_replays": 0, "min_prune_fraction": 0.25,
                "budget": {"max_fits": 8}},
    )


def _state(run) -> dict:
    return json.loads((run / "search" / "state.json").read_text())


def _fits(state) -> list[tuple]:
    return [(f["trial"], f["seed"], f["score"], f["dev_score"], f["mistakes"])
            for r in state["rounds"] for f in r["fits"].values()]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def searched(one_thread, tmp_path_factory, local_bort, local_teacher, tiny_data):
    tmp = tmp_path_factory.mktemp("search")
    recipe = _recipe(local_bort, local_teacher, tiny_data, tmp / "run")
    proc = run_cli(recipe, tmp, "search", tiny_data)
    return recipe, tmp / "run", proc.stdout


def test_cli_search_runs_two_rounds_and_reports(searched):
    recipe, run, stdout = searched
    state = _state(run)
    r0, r1 = state["rounds"]
    assert len(r0["fits"]) == 4 and r0["decision"] == "prune" and r0["removed"]
    assert r1["thetas"] == r0["remaining"] and len(r1["fits"]) == len(r0["remaining"])
    assert state["stopped"] in ("Θ is empty", "max_rounds (2) reached") and state["fits"] == 4 + len(r1["fits"])
    # D grew once, between the rounds, from the round-0 best's mistakes on E_gen; the teacher labelled it
    added = [json.loads(line) for line in (run / "search" / "added.jsonl").read_text().splitlines()]
    best0 = r0["fits"][str(r0["best"])]
    assert len(added) == state["d_rows"] == r0["added"]["kept"] > 0 and r1["d_rows"] == len(added)
    assert {a["source_idx"] for a in added} <= set(best0["mistakes"])
    assert all(a["label"] in ("entailment", "not_entailment") for a in added)
    assert state["teacher_forward_calls"] == r0["added"]["teacher_forward_calls"] > 0
    # round-1 fits trained on D plus the additions: the callback scored them through the cache
    trial1 = run / "trials" / r1["fits"][str(r1["thetas"][0])]["trial"]
    teacher = json.loads((trial1 / "metrics.json").read_text())["agora"]["teacher"]
    assert teacher["train_rows_scored"] == 64 - 12 + len(added)
    # a fit's recipe is complete (E's seed, D's additions as that round saw them): it reruns alone
    fit_recipe = yaml.safe_load((trial1 / "recipe.yaml").read_text())
    assert fit_recipe["trial"]["e_seed"] == 0 and "search" not in fit_recipe
    assert len(Path(fit_recipe["trial"]["extra_rows"]).read_text().splitlines()) == len(added)
    # the CLI: the plan first, one progress line per fit, the summary at the end
    assert "search: Θ has 4 θs (optim.lr 2 x seed 2); order: optim.lr, seed" in stdout
    assert stdout.count("[search] round ") == state["fits"]
    assert "search: final scores" in stdout and "validation/accuracy" in stdout


def test_search_matches_its_golden(searched):
    """Every fit's losses and scores, the pruning, D's growth and the final metrics, as recorded in
    ``tests/golden/tiny_search.json`` (see test_golden.py)."""
    _, run, _ = searched
    summary = _search_summary(run)
    assert len(summary["rounds"]) == 2 and summary["d_rows"] > 0
    _check("tiny_search", summary)


def test_search_run_dir_holds_the_best_student_report_and_plots(searched):
    from transformers import AutoModelForSequenceClassification

    recipe, run, _ = searched
    state = _state(run)
    best = state["best"]
    all_scores = [f["score"] for r in state["rounds"] for f in r["fits"].values()]
    assert best["score"] == max(all_scores)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "rte" and metrics["main_metric"] == "validation/accuracy"
    assert metrics["main_score"] == best["dev_score"] and metrics["search"]["best"]["trial"] == best["trial"]
    AutoModelForSequenceClassification.from_pretrained(run / "best")
    assert {"validation", "e_sel", "e_gen", "test"} <= {p.stem for p in (run / "predictions").glob("*.jsonl")}
    # only the best trial keeps its export; no trial keeps checkpoints
    assert [p.parent.name for p in (run / "trials").glob("*/best")] == [best["trial"]]
    assert not list((run / "trials").glob("*/checkpoints"))
    report = (run / "report.md").read_text()
    assert "## Round 0" in report and "## Round 1" in report
    assert f"official dev score (validation/accuracy): {best['dev_score'] * 100:.2f}" in report
    assert "pruned: worst score" in report and "D grew by" in report and "teacher forward passes" in report
    assert report.count("| 0.003 |") + report.count("| 0.0001 |") == state["fits"]
    for name in ("scores.png", "sizes.png"):
        png = (run / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert f"plots/{name}" in report


def test_killed_search_resumes_after_the_last_finished_fit(searched, tmp_path, local_bort, local_teacher, tiny_data):
    from agora.config import validate_recipe
    from agora.method.extension import agora_extension
    from agora.search import LocalRunner, run_search

    recipe, reference, _ = searched
    recipe = {**recipe, "output": {"dir": str(tmp_path / "run")}}
    recipe["teacher"] = {**recipe["teacher"], "cache_dir": str(tmp_path / "teacher-cache")}

    class Killed(BaseException):  # a kill, not a fit that raises (that is recorded and the search goes on)
        pass

    class KilledAfter(LocalRunner):
        """Dies in the middle of round 1's second fit (after 5 finished fits)."""

        def __init__(self, n):
            super().__init__(extend=agora_extension)
            self.n, self.done = n, 0

        def run_one(self, trial):
            if self.done == self.n:
                (trial.run_dir / "partial").mkdir(parents=True)
                raise Killed
            self.done += 1
            return super().run_one(trial)

    cfg = validate_recipe(recipe)
    with pytest.raises(Killed):
        run_search(cfg, "resume.yaml", runner=KilledAfter(5), progress=lambda line: None)
    assert _state(tmp_path / "run")["fits"] == 5
    from agora.errors import RecipeError

    with pytest.raises(RecipeError, match=rf"output.dir {tmp_path / 'run'} holds an unfinished run.*output.resume_from: "
                                          r"last to continue it \(from search/state.json, after its last finished fit\)"):
        run_search(validate_recipe(recipe), "resume.yaml", progress=lambda line: None)  # never restarted by accident
    with pytest.raises(RecipeError, match=rf"output.dir {reference} holds a finished run .*output.overwrite: true"):
        run_search(validate_recipe({**recipe, "output": {"dir": str(reference)}}), "again.yaml", progress=lambda line: None)
    assert _state(tmp_path / "run")["fits"] == 5
    recipe["output"]["resume_from"] = "last"
    lines = []
    result = run_search(validate_recipe(recipe), "resume.yaml", progress=lines.append)
    assert "[search] resuming" in lines[1] and "5 fits done" in lines[1]
    fit_lines = [line for line in lines if line.startswith("[search] round ")]  # only round 1's unfinished fits run again
    assert [line.split(" (#")[0] for line in fit_lines] == ["[search] round 1, fit 2/3", "[search] round 1, fit 3/3"]
    resumed, uninterrupted = _state(tmp_path / "run"), _state(reference)
    assert _fits(resumed) == _fits(uninterrupted)
    assert resumed["best"]["trial"] == uninterrupted["best"]["trial"] and resumed["d_rows"] == uninterrupted["d_rows"]
    assert (tmp_path / "run" / "search" / "added.jsonl").read_text() == (reference / "search" / "added.jsonl").read_text()
    assert result.main_score == uninterrupted["best"]["dev_score"]


def test_plain_baseline_is_the_same_search_with_agora_off(tmp_path, local_bort, local_teacher, tiny_data):
    """One switch (agora.enabled: false): the same Θ, E_sel and selection rule, nothing generated."""
    from agora.config import validate_recipe
    from agora.search import run_search

    recipe = _recipe(local_bort, local_teacher, tiny_data, tmp_path / "run", agora=False)
    recipe["search"] = {**recipe["search"], "space": {}, "trials": [{"optim.lr": 3e-3, "seed": 0}, {"optim.lr": 1e-4, "seed": 0}],
                        "max_rounds": 1}
    recipe["output"]["predict"] = False
    result = run_search(validate_recipe(recipe), "baseline.yaml", progress=lambda line: None)
    state = _state(tmp_path / "run")
    assert state["fits"] == 2 and state["d_rows"] == 0 and state["teacher_forward_calls"] == 0
    assert not (tmp_path / "run" / "search" / "added.jsonl").exists()
    for fit in state["rounds"][0]["fits"].values():  # ranked on E_sel carved from train, as the Agora search
        assert set(fit["scores"]) == {"validation/accuracy", "e_sel/accuracy", "e_sel/loglik"} and fit["mistakes"] == []
        assert fit["score"] == fit["scores"]["e_sel/accuracy"]
    assert result.selection_score == max(f["score"] for f in state["rounds"][0]["fits"].values())
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Agora: off (plain fine-tuning baseline: same Θ, E and selection rule)" in report
