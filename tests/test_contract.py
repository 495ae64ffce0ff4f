"""The method's contract with a fit: declared protocols, one generator registry, no probes on the route
of a setting. Pure: no benchmark files, no training."""

import ast
import inspect
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agora.config import validate_recipe
from agora.data.cards import load_task
from agora.data.datamodule import TaskDataModule
from agora.fit.contract import FitData, FitModule
from agora.fit.module import TaskModule
from agora.method.generators import registry

ROOT = Path(__file__).resolve().parents[1]


def _members(protocol) -> set[str]:
    own = set(vars(protocol)) | set(getattr(protocol, "__annotations__", {}))
    return {m for m in own if not m.startswith("_")}


def test_the_data_module_and_the_lightning_module_implement_the_declared_protocols():
    cfg = validate_recipe({"task": "rte"})
    data = TaskDataModule(cfg, load_task("rte"), tokenizer=None)
    module = TaskModule(None, load_task("rte"), cfg)
    assert isinstance(data, FitData) and isinstance(module, FitModule)
    assert _members(FitData) == {"card", "evalset", "pool", "has_split", "inputs", "tokenized_split",
                                 "tokenize_rows", "use_training_rows"}
    for name in _members(FitData):  # methods keep the protocol's parameters
        declared = vars(FitData).get(name)
        if inspect.isfunction(declared):
            assert list(inspect.signature(declared).parameters) == list(inspect.signature(getattr(data, name).__func__).parameters), name


def test_the_callback_refuses_a_fit_outside_the_contract_with_a_clear_error(tmp_path):
    from agora.method.callback import AgoraCallback

    cfg = validate_recipe({"task": "rte", "agora": {"enabled": True, "alpha": 0, "expand_every_n_epochs": 0}})
    callback = AgoraCallback(cfg, load_task("rte"))
    with pytest.raises(RuntimeError, match="TaskDataModule loaded with agora.enabled"):
        callback.setup(SimpleNamespace(datamodule=object()), None, "fit")
    data = TaskDataModule(cfg, load_task("rte"), tokenizer=None)  # not loaded: E_gen is not carved
    with pytest.raises(RuntimeError, match="carves E_gen"):
        callback.setup(SimpleNamespace(datamodule=data), None, "fit")


def _probes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.name}:{n.lineno}" for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("hasattr", "getattr")]


def test_the_route_of_agora_gamma_from_the_yaml_to_reweight_crosses_no_probe():
    """config (load, schema) -> trainer -> fit/run -> method/extension -> callback -> reweight."""
    route = ["agora/config/load.py", "agora/config/schema.py", "agora/trainer.py", "agora/fit/run.py",
             "agora/method/extension.py", "agora/method/callback.py", "agora/method/reweight.py",
             "agora/method/expand.py", "agora/method/training_set.py", "agora/fit/contract.py"]
    assert [p for f in route for p in _probes(ROOT / f)] == []


def test_one_registry_names_every_generator_and_declares_which_need_the_pool():
    assert set(registry.GENERATORS) == {"eda", "mlm", "nearest"}
    assert [n for n, spec in registry.GENERATORS.items() if spec.needs_pool] == ["nearest"]
    cfg = validate_recipe({"task": "rte", "agora": {"enabled": True, "generator": "eda"}, "teacher": {"path": "t"}})
    assert not cfg.agora.needs_pool()
    with pytest.raises(ValueError, match="draws from unlabelled rows: set data.unlabelled"):
        validate_recipe({"task": "rte", "agora": {"enabled": True, "generator": "nearest"}, "teacher": {"path": "t"}})
    with pytest.raises(ValueError, match="valid built-in generators are 'eda', 'mlm', 'nearest'"):
        validate_recipe({"task": "rte", "agora": {"generator": "edaa"}})


SHOUT = '''
"""A generator that shouts: every word of the first segment upper-cased, one variant."""


def shout(segments, rng, n):
    return [(segments[0].upper(), *segments[1:])][:n]
'''


def test_adding_a_generator_is_one_file_and_one_registry_line(tmp_path, monkeypatch):
    """What docs/method.md ("Adding a generator") shows: the module, then its line in GENERATORS."""
    package = tmp_path / "mygens"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "shout.py").write_text(textwrap.dedent(SHOUT))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.GENERATORS, "shout", registry.GeneratorSpec("mygens.shout:shout", summary="upper case"))
    cfg = validate_recipe({"task": "rte", "agora": {"enabled": True, "generator": "shout"}, "teacher": {"path": "t"}})
    from agora.method.expand import expand

    def score(inputs):
        return np.tile([0.8, 0.2], (len(inputs), 1)).astype(np.float32)

    out = expand([("a cat", "b"), ("two dogs", "c")], [1, 2], [0, 0], score, generator=cfg.agora.generator,
                 variants_per_source=3, seed=0, label_names=["entailment", "not_entailment"])
    assert out.variants == [("A CAT", "b"), ("TWO DOGS", "c")] and out.stats.kept == 2
    assert out.source_ids.tolist() == [1, 2] and out.stats.teacher.forward_calls == 0  # counted by the Expander
