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


@pytest.mark.parametrize("override, expected", [
    ({"trainer.max_epochs": "abc"}, r"'trainer\.max_epochs': lightning\.Trainer expects an integer or null, got 'abc'"),
    ({"trainer.precision": "16x"}, r"'trainer\.precision': lightning\.Trainer expects one of 'auto', .*'bf16-mixed'.*got '16x'"),
    ({"trainer.max_epochs": 1.5}, r"expects an integer or null, got 1\.5"),
    ({"trainer.gradient_clip_val": "x"}, r"'trainer\.gradient_clip_val': lightning\.Trainer expects a number or null"),
])
def test_trainer_values_are_checked_against_lightning_signature(override, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe("rte", override)


def test_trainer_values_lightning_accepts_pass_and_are_typed():
    cfg = load_recipe("rte", {"trainer.max_epochs": "2", "trainer.precision": "auto", "trainer.devices": [0],
                              "trainer.logger": False, "trainer.val_check_interval": 0.5})
    assert cfg.trainer["max_epochs"] == 2 and cfg.trainer["precision"] == "auto" and cfg.trainer["devices"] == [0]


def test_unknown_key_lists_what_the_section_takes(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: rte\noptim:\n  weight_decy: 0.1\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "recipes/README" not in msg, "no pointer to a file that does not exist"
    assert "unknown key 'optim.weight_decy' (did you mean 'optim.weight_decay'?)" in msg
    assert "optim takes: lr, weight_decay, warmup_ratio, eps, betas" in msg
    with pytest.raises(RecipeError, match=r"unknown key 'lr'; a recipe takes: task, seed, model, optim"):
        load_recipe("rte", {"lr": 3})


def test_errors_of_an_override_name_the_override_not_the_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("task: rte\noptim:\n  lr: 1.0e-4\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, {"optim.lr": "abc"})
    msg = str(err.value)
    assert msg.startswith(f"invalid override of recipe {path}")
    assert f"'optim.lr': Input should be a valid number" in msg and f"(from the override optim.lr=abc, not from {path})" in msg
    # a mistake in the file and one in an override: each blamed on its own source
    path.write_text("task: rte\ndata:\n  batch_size: many\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, {"trainer__max_epochs": "x"})
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: invalid recipe"
    assert any("data.batch_size" in line and "override" not in line for line in lines)
    assert any("trainer.max_epochs" in line and "from the override trainer.max_epochs=x" in line for line in lines)


def test_recipe_wide_errors_end_without_a_stray_got_a_section(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: rte\nagora: {enabled: true}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "need a teacher: set teacher.path" in msg
    assert "got a section" not in msg and "(top level)" not in msg and "Value error" not in msg


def test_print_config_checks_the_task(tmp_path, capsys):
    from agora.cli import main

    assert main(["rte", "task=nope", "--print-config"]) == 2
    err = capsys.readouterr()
    assert "unknown task 'nope'" in err.err and "task:" not in err.out
    assert main(["rte", "--print-config"]) == 0
