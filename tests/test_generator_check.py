"""A user's generator is tried on one real row before any work, a generator module that raises on import
is a recipe error naming it, and a fit that fails inside a search (local runner) is recorded as failed
while the search goes on and its report lists the failure."""

import json

import pytest

from agora.config import validate_recipe
from agora.errors import RecipeError
from agora.method.generator_check import check_on_row
from agora.trainer import AgoraTrainer
from conftest import tiny_recipe


def gen_ok(segments, rng, n):
    return [tuple(s + "!" for s in segments)][:n]


def gen_strings(segments, rng, n):
    return [" ".join(segments) + " again"]


def gen_short(segments, rng, n):
    return [(segments[0] + " again",)]


def gen_ints(segments, rng, n):
    return [tuple(len(s) for s in segments)]


def gen_many(segments, rng, n):
    return [tuple(f"{s} {i}" for s in segments) for i in range(n + 3)]


def gen_iter(segments, rng, n):
    yield tuple(segments)


def gen_raises(segments, rng, n, p=0.1):
    raise KeyError("synonyms")


@pytest.mark.parametrize("fn, match", [
    (gen_strings, r"returned variant 0 as a str \('A cat\. A dog\. again'\), not a tuple of 2 string"),
    (gen_short, r"returned variant 0 with 1 segment\(s\) for an input of 2"),
    (gen_ints, r"returned variant 0 whose segment 0 is a int \(6\), not a string"),
    (gen_many, r"returned 7 variants, more than n=4"),
    (gen_iter, r"returned a generator \(<generator object gen_iter"),
    (gen_raises, r"raised KeyError: 'synonyms'\. Fix the generator \(or agora.generator_settings\)"),
])
def test_what_a_generator_returns_is_checked_on_one_row(fn, match):
    with pytest.raises(RecipeError, match=rf"agora.generator '{fn.__name__}', called on row 3 \('A cat\.', 'A dog\.'\) "
                                          rf"with n=4, {match}.*must be fn\(segments"):
        check_on_row(fn, ("A cat.", "A dog."), 4, "row 3")
    check_on_row(gen_ok, ("A cat.", "A dog."), 4, "row 3")


def _recipe(tiny_bort, data_dir, tmp_path, generator, **agora):
    return tiny_recipe(tiny_bort, data_dir, tmp_path / "run", agora={"enabled": True, "generator": generator, **agora},
                       teacher={"path": str(tmp_path / "no-teacher")})


def test_a_bad_generator_fails_before_the_run_dir_or_the_teacher(tmp_path, tiny_bort, data_dir):
    trainer = AgoraTrainer.from_dict(_recipe(tiny_bort, data_dir, tmp_path, "test_generator_check:gen_short"))
    with pytest.raises(RecipeError, match=r"agora.generator 'test_generator_check:gen_short', called on the first row "
                                          r"of rte's train split \(idx 0\) \('No Weapons of Mass Destruction Found in "
                                          r"Iraq Yet.', .*\) with n=4, returned variant 0 with 1 segment"):
        trainer.fit()
    assert not (tmp_path / "run").exists()  # nothing written, the (missing) teacher never loaded


def test_every_theta_generator_is_tried(tmp_path, tiny_bort, data_dir):
    recipe = _recipe(tiny_bort, data_dir, tmp_path, "test_generator_check:gen_ok",
                     generator_settings={})
    recipe["search"] = {"space": {"agora.generator": ["test_generator_check:gen_ok", "test_generator_check:gen_raises"]}}
    with pytest.raises(RecipeError, match=r"'test_generator_check:gen_raises', called on the first row.*raised KeyError"):
        AgoraTrainer.from_dict(recipe).fit()


def test_a_generator_module_that_raises_on_import_is_a_recipe_error_naming_it(tmp_path, monkeypatch, tiny_bort, data_dir):
    (tmp_path / "broken_gen.py").write_text("import math\nRATIO = 1 / 0\n\ndef gen(segments, rng, n):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RecipeError, match=r"agora.generator.*cannot import generator 'broken_gen:gen': importing module "
                                          r"'broken_gen' raised ZeroDivisionError: division by zero \(fix that module\)"):
        validate_recipe(_recipe(tiny_bort, data_dir, tmp_path, "broken_gen:gen"))


def test_a_fit_that_raises_in_a_local_search_is_recorded_and_the_search_goes_on(
        one_thread, tmp_path, tiny_bort, data_dir):
    from agora.search import LocalRunner, run_search

    class OneFitRaises(LocalRunner):
        def run_one(self, job):
            if job.name == "r0.0-t1":
                (job.run_dir / "partial").mkdir(parents=True)
                raise RuntimeError("out of memory in the middle of a fit")
            return super().run_one(job)

    recipe = tiny_recipe(tiny_bort, data_dir, tmp_path / "run",
                         data={"max_train_samples": 32, "max_eval_samples": 16, "max_predict_samples": 8},
                         trainer={"max_epochs": 1, "num_sanity_val_steps": 0},
                         search={"space": {"optim.lr": [1e-3, 1e-4], "seed": [0]}, "max_rounds": 1, "max_replays": 0})
    lines: list[str] = []
    result = run_search(validate_recipe(recipe), "s.yaml", runner=OneFitRaises(), progress=lines.append)
    state = json.loads((tmp_path / "run" / "search" / "state.json").read_text())
    failed = state["rounds"][0]["fits"]["1"]["failed"]
    assert failed == (f"RuntimeError: out of memory in the middle of a fit (traceback in "
                      f"{tmp_path / 'run' / 'trials' / 'r0.0-t1' / 'fit.log'})")
    assert "Traceback (most recent call last)" in (tmp_path / "run" / "trials" / "r0.0-t1" / "fit.log").read_text()
    assert state["fits"] == 2 and state["best"]["trial"] == "r0.0-t0" and result.main_score is not None
    assert any("fit 2/2 (#2): lr=0.0001, seed=0 -> FAILED (RuntimeError: out of memory" in line for line in lines)
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"## Failed fits\n\n1 fit(s) failed; each was recorded, its θ pruned, and the search went on:\n\n" \
           f"- `r0.0-t1` (lr=0.0001, seed=0): {failed}" in report
    assert "| failed fits " in lines[-1] and "1 (listed in report.md)" in lines[-1]
