"""Recipes: every shipped recipe validates; bad recipes fail naming the file and the key."""

from pathlib import Path

import pytest

from agora.config import RunConfig, apply_overrides, load_recipe, validate_recipe
from agora.errors import RecipeError
from agora.paths import RECIPES_DIR
from agora.data.cards import load_task

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))


def test_recipes_are_shipped():
    names = {p.stem for p in RECIPES}
    assert {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "quickstart"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path: Path):
    cfg = load_recipe(path)
    assert isinstance(cfg, RunConfig)
    load_task(cfg.task)  # its task card exists and validates
    text = path.read_text()
    assert text.startswith("#"), "a recipe starts with a header comment"
    assert "agora-finetune" in text.split("\ntask:")[0], "the header gives the command"
    assert "Cost" in text or "cost" in text
    assert cfg.trainer["gradient_clip_val"] == 1.0


def test_bare_name_resolves_to_shipped_recipe():
    assert load_recipe("rte").task == "rte"


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: rte\noptim:\n  learning_rate: 1e-5\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and "optim.learning_rate" in str(err.value)


def test_wrong_type_and_range(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: rte\ndata:\n  batch_size: many\noptim:\n  lr: -1\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "data.batch_size" in msg and "'many'" in msg
    assert "optim.lr" in msg and "greater than 0" in msg


def test_unknown_trainer_flag(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: rte\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(RecipeError, match=r"trainer.*max_epoch"):
        load_recipe(path)


def test_missing_task_and_empty_and_invalid_yaml(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(RecipeError, match="empty"):
        load_recipe(empty)
    notask = tmp_path / "notask.yaml"
    notask.write_text("seed: 1\n")
    with pytest.raises(RecipeError, match="missing required key 'task'"):
        load_recipe(notask)
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [rte\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(broken)


def test_unknown_recipe_lists_shipped():
    with pytest.raises(RecipeError, match="Shipped recipes: .*rte"):
        load_recipe("no-such-recipe")


def test_dotted_and_dunder_overrides():
    cfg = load_recipe("rte", {"trainer.max_epochs": 1, "optim__lr": 2e-5, "data": {"batch_size": 4}})
    assert cfg.trainer["max_epochs"] == 1
    assert cfg.optim.lr == 2e-5
    assert cfg.data.batch_size == 4
    assert cfg.data.max_length == 128  # merged, not replaced


def test_override_into_a_value_is_an_error():
    with pytest.raises(RecipeError, match="is a value"):
        apply_overrides({"task": "rte"}, {"task.name": "x"})


def test_cli_override_parsing():
    from agora.cli import split_overrides

    out = split_overrides(["--trainer.max_epochs", "3", "optim.lr=2e-5", "--data.source=local"])
    assert out == {"trainer.max_epochs": 3, "optim.lr": 2e-5, "data.source": "local"}


def test_trainer_defaults_are_filled():
    cfg = validate_recipe({"task": "rte"})
    assert cfg.trainer["gradient_clip_val"] == 1.0 and cfg.trainer["max_epochs"] == 3
