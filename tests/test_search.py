"""Agora's rounds without training: Θ, pruning, replay, stopping, budget and bad input.

The rounds run on a fake runner (scores from a table) and a fake expander, so every decision
is checked exactly and fast; the real fits are in tests/test_search_e2e.py.
"""

from pathlib import Path

import pytest

from agora.config import validate_recipe
from agora.errors import RecipeError
from agora.search.plan import plan
from agora.search.rounds import Rounds
from agora.search.pruning import common_prefix, max_fits, prune, thetas
from agora.search.state import SearchState
from agora.search.trial import Trial, TrialResult, diverged

GRID = {"optim.lr": [1e-4, 1e-5], "seed": [0, 1]}


def _cfg(search=None, agora=None, **extra):
    recipe = {"task": "rte", "trainer": {"max_epochs": 2}, "search": {"space": GRID, **(search or {})}, **extra}
    if agora:
        recipe["agora"] = agora
    return validate_recipe(recipe)


# ------------------------------------------------------------------ pruning (hand-made Θ)

def test_prune_removes_worst_and_its_longest_prefix_kin():
    theta = [("a", 1, 0), ("a", 1, 1), ("a", 2, 0), ("b", 1, 0), ("b", 1, 1)]
    p = prune(theta, [0.9, 0.8, 0.7, 0.3, 0.6], min_fraction=0.0)
    assert p.removed == [3, 4] and p.rule == "prefix"  # ("b", 1, 1) shares ("b", 1) with the worst
    assert p.reasons[3] == "worst score" and "first 2 value(s)" in p.reasons[4]
    # the longest prefix wins over shorter ones: only ("a", 1, 1) shares 2 values with ("a", 1, 0)
    p = prune(theta, [0.1, 0.8, 0.7, 0.9, 0.6], min_fraction=0.0)
    assert p.removed == [0, 1]


def test_prune_without_kin_removes_only_the_worst_and_safeguard_tops_up():
    theta = [(1,), (2,), (3,), (4,), (5,), (6,), (7,), (8,)]
    scores = [0.5, 0.4, 0.9, 0.1, 0.8, 0.7, 0.6, 0.3]
    assert prune(theta, scores, 0.0).removed == [3]  # prefix 0 is no kinship
    p = prune(theta, scores, 0.25)  # at least 2 of 8: the next worst (0.3) goes too
    assert p.removed == [3, 7] and p.rule == "prefix+safeguard"
    assert p.reasons[7].startswith("safeguard")
    assert prune(theta, scores, 0.5).removed == [0, 1, 3, 7]


def test_prune_failed_fits_and_ties():
    theta = [(1, 0), (1, 1), (2, 0), (2, 1)]
    p = prune(theta, [0.6, None, 0.2, 0.7], 0.25)
    assert p.removed == [1] and p.rule == "failed" and p.reasons[1] == "failed fit"
    # equal scores: the later θ in Θ's order is the worse, or the one with the lower tie-breaker
    assert prune([(1,), (2,), (3,)], [0.5, 0.5, 0.9], 0.0).removed == [1]
    assert prune([(1,), (2,), (3,)], [0.5, 0.5, 0.9], 0.0, tiebreak=[-0.9, -0.2, -0.5]).removed == [0]
    # a tie at the bottom prunes no prefix: (1, 1) would share the first value with the worst (1, 0)
    tied = prune(theta, [0.5, 0.5, 0.9, 0.8], 0.0, tiebreak=[-0.7, -0.6, -0.1, -0.2])
    assert tied.removed == [0] and tied.rule == "tie" and tied.tie
    assert common_prefix((1, 2, 3), (1, 2, 4)) == 2 and prune([], [], 0.25).removed == []


def test_thetas_grid_list_and_budget_sample():
    cfg = _cfg()
    names, theta, size = thetas(cfg.search)
    assert names == ["optim.lr", "seed"] and size == 4
    assert theta == [(1e-4, 0), (1e-4, 1), (1e-5, 0), (1e-5, 1)]
    cfg = _cfg({"space": {}, "trials": [{"seed": 3, "optim.lr": 1e-3}, {"optim.lr": 2e-3, "seed": 4}]})
    assert thetas(cfg.search)[:2] == (["seed", "optim.lr"], [(3, 1e-3), (4, 2e-3)])
    big = _cfg({"space": {"seed": list(range(10)), "optim.lr": [1e-4, 1e-5]}, "budget": {"max_thetas": 5}})
    names, theta, size = thetas(big.search, seed=0)
    assert size == 20 and len(theta) == 5 and theta == sorted(theta)  # sample kept in grid order
    assert thetas(big.search, seed=0)[1] == theta


def test_max_fits_counts_replays_and_least_pruning():
    assert max_fits(4, 0.25, 0) == 4 + 3 + 2 + 1
    assert max_fits(4, 0.5, 1) == 2 * 4 + 2 * 2 + 2 * 1
    assert max_fits(4, 0.25, 2, max_rounds=2) == 8


# ------------------------------------------------------------------ the rounds on a fake runner

class FakeRunner:
    """Scores from ``table[(θ values..., seed)]`` (its ``read``); records every trial."""

    def __init__(self, table, mistakes=(1, 2), fail=()):
        self.table, self.mistakes, self.fail, self.trials = table, list(mistakes), set(fail), []

    def run(self, trials, done) -> None:
        for trial in trials:
            self.trials.append(trial)
            done(trial, None)

    def read(self, trial: Trial) -> TrialResult:
        key = (trial.cfg.optim.lr, trial.cfg.seed)
        if key in self.fail:
            return TrialResult(None, None, {}, [], 0, 1, failed="diverged: training loss nan at epoch 0")
        score = self.table[key]
        return TrialResult(score, score - 0.1, {"validation/accuracy": score - 0.1}, list(self.mistakes), 10, 2)


class FakeExpander:
    def __init__(self):
        self.added, self.calls = [], []

    def keep(self, n):
        del self.added[n:]

    def jsonl(self, n=None):
        return [r.to_json() for r in self.added[:n]]

    def grow(self, mistakes, key):
        from agora.method.generated import ExpansionStats, GeneratedRow, TeacherCounts

        self.calls.append((list(mistakes), key))
        self.added += [GeneratedRow(len(self.added) + j, (f"{key}-{m}",), "entailment", [1.0, 0.0], m, key)
                       for j, m in enumerate(mistakes)]
        return ExpansionStats(kept=len(mistakes), teacher=TeacherCounts(forward_calls=len(mistakes)))


def _new_state(p):
    return SearchState(fingerprint="x", names=p.names, thetas=[list(t) for t in p.thetas],
                       remaining=list(range(len(p.thetas))))


def _make_trial(p):
    def make_trial(rnd, tid):
        cfg = p.space.thetas[tid].cfg
        name = f"r{rnd.round}.{rnd.replay}-t{tid}"
        return Trial(name, tid, cfg.model_copy(update={"seed": cfg.seed + rnd.seed_offset}), Path("/nonexistent") / name)

    return make_trial


def _run(cfg, runner, expander=None):
    p = plan(cfg, "test.yaml")
    state = _new_state(p)
    saved, lines = [], []
    Rounds(cfg, p, state, runner, _make_trial(p), expander, lambda st: saved.append(st.fits), lines.append,
           read=runner.read).run()
    return state.model_dump(mode="json"), saved, lines


TABLE = {(1e-4, 0): 0.70, (1e-4, 1): 0.60, (1e-5, 0): 0.50, (1e-5, 1): 0.65}


def test_rounds_prune_until_theta_is_empty_and_keep_the_best():
    runner, expander = FakeRunner(TABLE), FakeExpander()
    state, saved, lines = _run(_cfg({"max_replays": 0}, agora={"enabled": True}, teacher={"path": "t"}), runner, expander)
    r0, r1 = state["rounds"]
    assert r0["best"] == 0 and r0["removed"] == {"2": "worst score", "3": "shares the first 1 value(s) with the worst θ"}
    assert r1["thetas"] == [0, 1] and r1["improved"] is False and r1["decision"] == "prune"
    assert state["stopped"] == "Θ is empty" and state["remaining"] == []
    assert state["best"]["trial"] == "r0.0-t0" and state["best"]["score"] == 0.70
    # D grows after round 0 only (no expansion after the last round)
    assert expander.calls == [([1, 2], "round-0")] and state["d_rows"] == 2 and state["teacher_forward_calls"] == 2
    assert r0["d_rows_after"] == 2 and r1["d_rows"] == 2
    # saved after every fit and every round; one progress line per fit
    assert state["fits"] == 6 and saved[:5] == [1, 2, 3, 4, 4] and len(lines) == 6
    assert "round 0, fit 1/4 (#1): lr=0.0001, seed=0 -> E_sel 70.00, dev 60.00 (best so far)" in lines[0]


def test_fits_finishing_in_any_order_give_the_same_search():
    """A concurrent runner reports a round's fits in the order they finish: the state, the best (a tie
    goes to the θ first in Θ's order) and every decision are those of the in-order run."""

    class Reversed(FakeRunner):
        def run(self, trials, done) -> None:
            for trial in reversed(list(trials)):
                self.trials.append(trial)
                done(trial, None)

    tied = {**TABLE, (1e-4, 1): 0.70}  # θ 0 and θ 1 tie for the best
    in_order, _, _ = _run(_cfg({"max_replays": 0}), FakeRunner(tied))
    shuffled, _, lines = _run(_cfg({"max_replays": 0}), Reversed(tied))
    assert shuffled["best"] == in_order["best"] and shuffled["best"]["trial"] == "r0.0-t0"
    for a, b in zip(shuffled["rounds"], in_order["rounds"]):
        assert list(a["fits"]) == sorted(a["fits"], reverse=True)  # listed as they finished
        assert {**a, "fits": None} == {**b, "fits": None} and {k: a["fits"][k] for k in b["fits"]} == b["fits"]
    assert "(best so far)" in lines[0] and "(best so far)" in lines[2] and lines[0].endswith("3 left in the round")


def test_replay_when_the_best_did_not_improve_with_fresh_seeds():
    table = {**TABLE, (1e-4, 1000): 0.55, (1e-4, 1001): 0.75, (1e-4, 2000): 0.1, (1e-4, 2001): 0.1}
    runner = FakeRunner(table)
    state, _, _ = _run(_cfg({"max_replays": 2}), runner)
    decisions = [(r["round"], r["replay"], r["decision"], r["improved"]) for r in state["rounds"]]
    # round 1 (lr 1e-4, seeds 0, 1) ties 0.70: replay 1 with seeds +1000 improves (0.75), then it prunes
    assert decisions == [(0, 0, "prune", True), (1, 0, "replay", False), (2, 1, "prune", True)]
    assert [t.cfg.seed for t in runner.trials[-2:]] == [1000, 1001]
    assert state["rounds"][1]["removed"] == {} and state["best"]["trial"] == "r2.1-t1"
    assert state["stopped"] == "Θ is empty"


def test_replays_are_capped_then_pruning_goes_on():
    table = {**TABLE, **{(1e-4, s): 0.1 for s in (1000, 1001, 2000, 2001)}}
    state, _, _ = _run(_cfg({"max_replays": 2}), FakeRunner(table))
    decisions = [(r["replay"], r["decision"], r["rule"]) for r in state["rounds"]]
    # the last replay ties (0.1, 0.1): no prefix is pruned on a tie, one θ goes and the other is tried again
    assert decisions == [(0, "prune", "prefix"), (0, "replay", "none"), (1, "replay", "none"), (2, "prune", "tie"),
                         (0, "replay", "none"), (1, "replay", "none"), (2, "prune", "prefix")]
    assert state["rounds"][3]["removed"] == {"1": "worst score, tied: the lowest E_sel log-likelihood among the tied"}
    assert "tied" in state["rounds"][3]["tie"] and state["fits"] == 4 + 2 * 3 + 3


def test_a_round_where_every_theta_ties_is_decided_by_the_log_likelihood_and_prunes_no_prefix(tmp_path):
    """BORT's failure case: every student at the majority class, every E_sel score equal."""
    from agora.search.report import write_report

    class Tied(FakeRunner):
        def read(self, trial):
            result = super().read(trial)
            result.score, result.loglik = 0.8235, {0: -0.70, 1: -0.69, 2: -0.72, 3: -0.71}[trial.theta]
            return result

    cfg = _cfg({"max_replays": 0, "max_rounds": 1, "min_prune_fraction": 0.25})
    p = plan(cfg)
    state = _new_state(p)
    runner = Tied(TABLE)
    Rounds(cfg, p, state, runner, _make_trial(p), None, lambda st: None, lambda line: None, read=runner.read).run()
    r0 = state.rounds[0]
    assert r0.best == 1 and state.best.trial == "r0.0-t1"  # the highest log-likelihood among the tied
    assert r0.rule == "tie" and list(r0.removed) == ["2"]  # the lowest; not its prefix kin (lr 1e-5, seed 1)
    assert "4 θs tied for the best E_sel score: the best chosen by E_sel log-likelihood" in r0.tie
    summary = {"task": "rte", "eval_on": "train_slice", "selection": "e_sel/accuracy",
               "dev_metric": "validation/accuracy", "dev_score": 0.7, "agora": False, "d_original": 100}
    text = write_report(tmp_path, state, summary, "plan").read_text()
    assert "**A tie decided this round**: 4 θs tied" in text and "no prefix pruned" in text


def test_failed_fit_is_recorded_and_pruned_and_the_search_goes_on():
    runner = FakeRunner(TABLE, fail={(1e-4, 1)})
    state, _, lines = _run(_cfg({"max_replays": 0}), runner)
    r0 = state["rounds"][0]
    assert r0["fits"]["1"]["failed"].startswith("diverged") and r0["removed"]["1"] == "failed fit"
    assert r0["rule"] == "failed" and any("FAILED (diverged" in line for line in lines)
    assert state["rounds"][1]["thetas"] == [0, 2, 3]


def test_stops_when_e_gen_has_no_mistakes_and_when_the_budget_is_spent():
    state, _, _ = _run(_cfg(agora={"enabled": True}, teacher={"path": "t"}), FakeRunner(TABLE, mistakes=()), FakeExpander())
    assert len(state["rounds"]) == 1 and state["stopped"].startswith("E_gen has no mistakes")
    state, _, _ = _run(_cfg({"budget": {"max_fits": 6}, "min_prune_fraction": 0.0}), FakeRunner(TABLE))
    assert state["fits"] == 6 and state["stopped"].startswith("budget spent")
    state, _, _ = _run(_cfg({"budget": {"max_epochs": 8}}), FakeRunner(TABLE))  # 2 epochs per fit: 4 fits
    assert state["fits"] == 4 and "max_epochs" in state["stopped"]
    state, _, _ = _run(_cfg({"max_rounds": 1}), FakeRunner(TABLE))
    assert state["fits"] == 4 and state["stopped"] == "max_rounds (1) reached"


def test_resuming_a_state_skips_finished_fits(tmp_path):
    cfg = _cfg({"max_replays": 0})
    p = plan(cfg)
    state = _new_state(p)

    class Crash(Exception):
        pass

    class Crashing(FakeRunner):
        def run(self, trials, done):
            for trial in trials:
                if len(self.trials) == 5:
                    raise Crash
                self.trials.append(trial)
                done(trial, None)

    first = Crashing(TABLE)
    path = tmp_path / "state.json"
    with pytest.raises(Crash):
        Rounds(cfg, p, state, first, _make_trial(p), None, lambda st: st.save(path), lambda line: None,
               read=first.read).run()
    state = SearchState.load(path, "x", tmp_path)  # what a rerun reads
    assert state.fits == 5
    again = FakeRunner(TABLE)
    Rounds(cfg, p, state, again, _make_trial(p), None, lambda st: None, lambda line: None, read=again.read).run()
    assert [t.name for t in again.trials] == ["r1.0-t1"] and state.fits == 6
    assert state.model_dump(mode="json") == _run(cfg, FakeRunner(TABLE))[0]


def test_state_files_of_another_search_or_not_a_state_fail_clearly(tmp_path):
    path = tmp_path / "state.json"
    SearchState(fingerprint="abc", names=["seed"], thetas=[[0]], remaining=[0]).save(path)
    assert SearchState.load(path, "abc", tmp_path).names == ["seed"]
    with pytest.raises(RecipeError, match="holds a different search"):
        SearchState.load(path, "other", tmp_path)
    path.write_text('{"rounds": "not a list"}')
    with pytest.raises(RecipeError, match=r"state\.json is not a search state this version can read"):
        SearchState.load(path, "abc", tmp_path)


def test_a_state_file_of_the_first_version_loads():
    """state.json as the untyped first version wrote it (a round still running, no decision yet)."""
    old = {"version": 1, "fingerprint": "f", "names": ["seed"], "thetas": [[0], [1]], "remaining": [0, 1],
           "rounds": [{"round": 0, "replay": 0, "seed_offset": 0, "thetas": [0, 1], "done": False,
                       "best_before": None, "d_rows": 0,
                       "fits": {"0": {"trial": "r0.0-t0", "theta": 0, "round": 0, "replay": 0, "seed": 0,
                                      "score": 0.5, "dev_score": 0.4, "failed": None, "mistakes": [3],
                                      "e_gen_rows": 10, "epochs": 2, "model_dir": None,
                                      "scores": {"e_sel/accuracy": 0.5}}}}],
           "best": {"trial": "r0.0-t0", "theta": 0, "round": 0, "score": 0.5, "dev_score": 0.4, "model_dir": None},
           "fits": 1, "epochs": 2, "d_rows": 0, "teacher_calls": 0, "stopped": None}
    old["teacher_calls"] = 7  # the counter's earlier name
    state = SearchState.model_validate(old)
    assert state.rounds[0].fits["0"].mistakes == [3] and state.rounds[0].decision is None and state.best.score == 0.5
    assert state.teacher_forward_calls == 7


def test_diverged():
    assert diverged([{"epoch": 0, "train_loss": 0.6}], 0.5) is None
    assert "training loss nan at epoch 1" in diverged([{"epoch": 0, "train_loss": 0.6}, {"epoch": 1, "train_loss": float("nan")}], 0.5)
    assert "selection score" in diverged([], float("nan"))


# ------------------------------------------------------------------ the plan and bad input

def test_plan_prints_the_cost_before_starting():
    cfg = _cfg({"budget": {"max_fits": 20}, "max_replays": 1})
    text = plan(cfg).text(cfg)
    assert "Θ has 4 θs (optim.lr 2 x seed 2); order: optim.lr, seed" in text
    assert "at most 20 fits of 2 epoch(s) each (round 0: 4 fits" in text and "Agora off" in text


@pytest.mark.parametrize("search, match", [
    ({"space": {"optim.learning_rate": [1e-4]}}, r"search\.space\.optim\.learning_rate: unknown key 'optim\.learning_rate'"),
    ({"space": {"optim.lr": []}}, r"search\.space\.optim\.lr: give a non-empty list"),
    ({"space": {"optim": [1]}}, r"'optim' is a section"),
    ({"space": {"output.dir": ["x"]}}, r"'output' cannot be searched"),
    ({"space": {}}, r"search needs a space"),
    ({"trials": [{"seed": 1}, {"optim.lr": 1e-4}]}, r"search\.trials\[1\] has keys"),
])
def test_bad_space_fails_naming_the_file_and_key(tmp_path, search, match):
    from agora.config import load_recipe

    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"task": "rte", "search": {"space": {}, **search}}))
    with pytest.raises(RecipeError, match=match) as err:
        load_recipe(path)
    assert str(path) in str(err.value)


def test_bad_values_and_budgets_fail_before_any_fit():
    with pytest.raises(RecipeError, match=r"(?s)search θ lr=-1.*optim\.lr.*greater than 0.*fix the value in search\.space"):
        _cfg({"space": {"optim.lr": [1e-4, -1]}})  # every θ is validated where the recipe enters
    with pytest.raises(RecipeError, match=r"x\.yaml: search\.budget\.max_epochs 1 is smaller than one fit \(2 epochs"):
        plan(_cfg({"budget": {"max_epochs": 1}}), "x.yaml")
    with pytest.raises(RecipeError, match=r"the budget \(3 fits\) is smaller than round 0 \(4 θs"):
        plan(_cfg({"budget": {"max_fits": 3}}), "x.yaml")
    with pytest.raises(RecipeError, match="teacher.path"):
        plan(_cfg(agora={"enabled": True, "alpha": 0, "expand_every_n_epochs": 0}), "x.yaml")


def test_e_larger_than_train_fails_before_any_fit(tiny_data, tmp_path):
    from agora.search import run_search

    cfg = _cfg(agora={"e_size": 200}, data={"dir": str(tiny_data), "max_train_samples": 64},
               output={"dir": str(tmp_path / "run")})
    with pytest.raises(RecipeError, match=r"agora\.e_size 200 is not smaller than the training set \(64 rows"):
        run_search(cfg, "x.yaml", progress=lambda line: None)
    assert not (tmp_path / "run" / "trials").exists()


def test_shipped_bort_recipes_search_the_readme_grid_within_a_printed_budget():
    from agora.config import load_recipe
    from agora.paths import RECIPES_DIR

    searched = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        cfg = load_recipe(path)
        if cfg.search is None:
            continue
        searched.append(path.stem)
        p = plan(cfg, str(path))
        assert p.grid_size == 480 and p.names[0] == "optim.lr" and p.names[-1] == "seed"
        assert len(p.thetas) == cfg.search.budget.max_thetas and p.fit_cap == cfg.search.budget.max_fits
        assert f"at most {p.fit_cap} fits" in p.text(cfg)
        assert load_recipe(path, {"search": None}).search is None  # --search null: one fit
    assert {"rte", "mrpc", "cola", "sst2", "stsb", "mnli", "qnli", "qqp", "wnli"} <= set(searched)


def test_report_marks_the_paper_faithful_variant(tmp_path):
    from agora.search.report import write_report

    state = SearchState(fingerprint="x", names=["seed"], thetas=[[0]], remaining=[], stopped="Θ is empty")
    summary = {"task": "rte", "eval_on": "dev", "selection": "validation/accuracy", "dev_metric": "validation/accuracy",
               "dev_score": 0.6, "agora": True, "d_original": 100}
    text = write_report(tmp_path, state, summary, "plan").read_text()
    assert "E = the official dev set (`agora.eval_on: dev`, paper-faithful)" in text
    assert "official dev score (validation/accuracy): 60.00" in text


# ------------------------------------------------------------------ where fits run: search.runner, search.ray

def test_runner_settings_validate_and_do_not_change_the_search():
    from agora.search.state import fingerprint

    local, on_ray = _cfg(), _cfg({"runner": "ray", "ray": {"address": "auto", "cpus_per_trial": 2,
                                                             "max_concurrent_trials": 4, "storage_path": "s3://b/x"}})
    assert local.search.runner == "local" and local.search.ray.address is None and local.search.ray.max_failures == 2
    assert on_ray.search.ray.cpus_per_trial == 2 and on_ray.search.ray.gpus_per_trial == 0
    # the same search either way: a search started on one runner resumes on the other
    assert fingerprint(local) == fingerprint(on_ray)
    assert [t.cfg for t in local.space.thetas] == [t.cfg for t in on_ray.space.thetas]
    for address in ("ray://head:10001", "10.0.0.5:6379", "localhost:6379"):
        assert _cfg({"runner": "ray", "ray": {"address": address}}).search.ray.address == address
    with pytest.raises(RecipeError, match=r"search\.ray\.address 'head': give null .*'auto'.*'host:port'.*'ray://host:port'"):
        _cfg({"runner": "ray", "ray": {"address": "head"}})
    with pytest.raises(RecipeError, match=r"'search\.ray\.cpus_per_trial': Input should be greater than 0"):
        _cfg({"ray": {"cpus_per_trial": 0}})
    with pytest.raises(RecipeError, match=r"'search\.runner': Input should be 'local' or 'ray'"):
        _cfg({"runner": "slurm"})


def test_both_runners_implement_the_whole_trial_runner_protocol():
    """The search calls ``run`` every round and ``close`` once on a runner it built: both runners define both."""
    from agora.fit.run import LocalRunner
    from agora.search.ray_runner import RayRunner
    from agora.search.trial import TrialRunner

    declared = {name for name, value in vars(TrialRunner).items() if callable(value) and not name.startswith("_")}
    assert declared == {"run", "close"}
    for runner in (LocalRunner, RayRunner):
        assert declared <= {name for name in dir(runner) if callable(vars(runner).get(name))}, runner
    assert LocalRunner().close() is None


def test_ray_runner_without_ray_is_an_error_naming_the_extra(monkeypatch):
    """Without Ray installed, a recipe asking for it fails where it enters, before any work; where Ray is
    installed but does not import (e.g. without Tune's dependencies), the runner says the same."""
    import importlib.metadata
    import sys

    from agora.search.ray_runner import import_ray

    real = importlib.metadata.distribution

    def distribution(name):
        if name == "ray":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(RecipeError, match=r"search\.runner: ray needs Ray, which is not installed: "
                                          r"pip install 'agora-finetune\[ray\]' \(or set search\.runner: local\)"):
        _cfg({"runner": "ray"})
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    with pytest.raises(RecipeError, match=r"search\.runner: ray needs Ray Tune, which cannot be imported .*"
                                          r"pip install 'agora-finetune\[ray\]'"):
        import_ray(None)
