"""Every command block of the README, tried as written: the quickstart trains in a tiny form (the tiny
model, a few rows); every other ``agora-finetune`` command is resolved with ``--print-config``, every
``submit`` parsed, every bench parsed up to its check of what it needs (``benches/needs.py``), every
install's extras looked up in pyproject.toml, every Python call bound to the function it names, every
YAML block validated as the recipe (or task card) it shows. Cheap: no command runs a real fit."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from agora.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M)


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == kind]


def _commands() -> list[list[str]]:
    """Every command of the bash blocks: comments dropped, ``&&`` chains split, ``for t in ...; do X $t; done``
    unrolled, environment prefixes (``AGORA_DATA_DIR=...``) and the venv's path dropped."""
    out = []
    for body in _blocks("bash"):
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            loop = re.fullmatch(r"for (\w+) in (.*?); do (.*?); done(.*)", line)
            parts = [loop.group(3).replace(f"${loop.group(1)}", v) for v in loop.group(2).split()] if loop else []
            for part in parts or line.split("&&"):
                words = [w for w in shlex.split(part) if not re.fullmatch(r"[A-Z_]+=\S*", w)]
                out.append([w.removeprefix(".venv/bin/") for w in words])
    return out


COMMANDS = _commands()


def test_the_readme_has_the_blocks_this_test_reads():
    kinds = {kind: len(_blocks(kind)) for kind in ("bash", "python", "yaml")}
    assert kinds["bash"] >= 6 and kinds["python"] >= 2 and kinds["yaml"] >= 5, kinds
    programs = {c[0] for c in COMMANDS}
    # tensorboard and mlflow are the trackers' own viewers: test_the_tracker_viewers_open_what_a_run_writes
    assert programs <= {"python3", "pip", "python", "agora-finetune", "tensorboard", "mlflow"}, programs
    assert sum(c[0] == "python" and c[1].startswith("benches/") for c in COMMANDS) >= 7


def test_installs_name_extras_that_exist():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installs = [c for c in COMMANDS if c[0] == "pip" or c[:3] == ["python", "-m", "pip"]]
    named = {m.group(1) for c in installs for w in c for m in [re.fullmatch(r"\.\[(\w+)\]", w)] if m}
    assert named and named <= set(extras), (named, sorted(extras))
    assert "bench" in named, "the README says to install the bench extra the benches need"
    assert any("accelerate>=1.1.0" in req for req in extras["bench"])  # what transformers.Trainer needs


def test_the_quickstart_trains_in_a_tiny_form(tmp_path, tiny_bort, data_dir, monkeypatch, one_thread):
    quickstart = [c for c in COMMANDS if c[0] == "agora-finetune" and c[1:2] == ["recipes/quickstart.yaml"]]
    assert quickstart, "the set-up block runs the quickstart recipe"
    monkeypatch.chdir(ROOT)
    tiny = [f"model.name={tiny_bort}", "data.max_train_samples=32", "data.max_eval_samples=16",
            "data.max_predict_samples=8", "data.max_length=64", "trainer.max_epochs=1", "trainer.precision=32-true",
            f"output.dir={tmp_path / 'run'}"]
    assert main(quickstart[0][1:] + tiny) == 0
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "best" / "config.json").is_file()


def test_every_agora_finetune_command_resolves(tmp_path, monkeypatch, capsys):
    card = next(body for body in _blocks("yaml") if body.startswith("name: reviews"))
    (tmp_path / "reviews.yaml").write_text(card)  # the own-task command reads the README's card
    for name in ("recipes", "tasks"):
        (tmp_path / name).symlink_to(ROOT / name)  # commands written for the checkout's root
    monkeypatch.chdir(tmp_path)
    runs = [c[1:] for c in COMMANDS if c[0] == "agora-finetune" and c[1:2] != ["submit"]]
    assert len(runs) >= 20
    for args in runs:
        assert main(args + ["--print-config"]) == 0, (args, capsys.readouterr().err)
    assert "task: mrpc" in capsys.readouterr().out


def test_every_submit_command_parses():
    from agora.submission.cli import build_parser

    submits = [c[2:] for c in COMMANDS if c[:2] == ["agora-finetune", "submit"]]
    assert len(submits) >= 4
    for args in submits:
        parsed = build_parser().parse_args(args)
        assert parsed.check or parsed.benchmark in ("glue", "superglue", "race"), args


def _bench(name: str):
    sys.path.insert(0, str(ROOT / "benches"))
    spec = importlib.util.spec_from_file_location(f"readme_{name}", ROOT / "benches" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_every_bench_command_parses_and_checks_what_it_needs_first(tmp_path, monkeypatch, capsys):
    benches = [c[1:] for c in COMMANDS if c[0] == "python" and c[1].startswith("benches/")]
    for script, *args in benches:
        module = _bench(Path(script).stem)
        monkeypatch.setattr(sys, "argv", [script, *args, "--data-dir", str(tmp_path / "no-data")])
        with pytest.raises(SystemExit) as stop:
            module.main()
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"{script}: cannot start" in err and "usage:" not in err, (script, args, err)
        assert f"the benchmark files: data dir {tmp_path / 'no-data'} is not a directory" in err


def test_the_python_blocks_call_what_exists(tmp_path):
    from agora import AgoraTrainer, submission

    names = {"AgoraTrainer": AgoraTrainer, "submission": submission}
    calls = 0
    for body in _blocks("python"):
        for node in ast.walk(ast.parse(body)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in names):
                continue
            fn = getattr(names[node.func.value.id], node.func.attr)  # an AttributeError names a renamed function
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            inspect.signature(fn).bind(*args, **kwargs)
            if node.func.attr == "from_recipe":
                assert fn(*args, **kwargs).cfg.search is None  # the recipe and its overrides validate
            calls += 1
    assert calls >= 3


def test_every_yaml_block_is_a_valid_recipe_or_card(tmp_path):
    from agora.config import validate_recipe
    from agora.data.cards import TaskCard

    checked = 0
    for body in _blocks("yaml"):
        data = yaml.safe_load(body)
        if "benchmark" in data:
            TaskCard.model_validate(data)
        else:
            recipe = {"task": "rte", **data}
            if "agora" in data:
                recipe["teacher"] = {"path": "runs/teacher/best", **(data.get("teacher") or {})}
            if data.get("agora", {}).get("generator") == "nearest" or data.get("agora", {}).get("pool_rows"):
                recipe["data"] = {"unlabelled": "train", **(data.get("data") or {})}
            if "search" in data and not ({"space", "trials"} & set(data["search"])):  # the runner's settings alone
                recipe["search"] = {"space": {"seed": [0, 1]}, **data["search"]}
            validate_recipe(recipe, source="README.md")
        checked += 1
    assert checked >= 5


def test_what_a_bench_needs_is_named_with_how_to_get_it(data_dir):
    needs = _bench("needs")
    import pytest as installed

    assert needs.missing_packages({"pytest": ("999.0", "the tests")}) == [
        f"pytest>=999.0 (the tests); {installed.__version__} is installed: pip install -e '.[bench]'"]
    assert needs.missing_packages({"no-such-package-xyz": ("1.1.0", "a baseline")}) == [
        "no-such-package-xyz>=1.1.0 (a baseline) is not installed: pip install -e '.[bench]'"]
    assert needs.missing_packages({"pytest": ("1.0", "the tests")}) == []
    assert needs.missing_models(["pkg:no_such_pkg_xyz/model", "pkg:no_such_pkg_xyz/model", "org/model"]) == [
        "model pkg:no_such_pkg_xyz/model: package no_such_pkg_xyz is not installed: pip install --no-deps no-such-pkg-xyz"]
    assert needs.missing_files(data_dir, ["mrpc", "rte"], ["tokenizers/roberta"]) == []
    assert needs.missing_files(data_dir, ["race"], splits=["nope"]) == [
        "task race has no split 'nope' (its splits: train, validation, test)"]


def test_the_tracker_viewers_open_what_a_run_writes():
    """The README's tensorboard and mlflow commands open the folders output.loggers writes in a run dir."""
    from agora.fit import rundir

    viewers = [c for c in COMMANDS if c[0] in ("tensorboard", "mlflow")]
    assert {c[0] for c in viewers} == {"tensorboard", "mlflow"}
    folders = {Path(w).name for c in viewers for w in c if "/" in w}
    assert folders == {"tensorboard", "mlruns"} and folders <= set(rundir.OUTPUTS), folders
