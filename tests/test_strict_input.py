"""Strict recipes and cards: a YAML key given twice, a label name given twice, a binary metric on a
many-label task and an idx column that is not an integer are errors naming the file, the line or
row, and the fix (nothing is silently last-wins or truncated)."""

import re

import pytest

from agora.config import load_recipe
from agora.data.cards import load_task
from agora.data.splits import load_split
from agora.errors import DataError, RecipeError, TaskError
from agora.files import DuplicateKeyError, read_yaml

CARD = """\
name: mine
benchmark: mine
format: classification
labels: [negative, positive]
metrics: [accuracy]
main_metric: accuracy
local:
  reader: {reader}
  dir: d
  columns: {{idx: id, text_a: text, label: y}}
  splits: {{train: train.{ext}}}
"""


def test_a_key_twice_in_one_block_names_the_file_the_line_and_the_key(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("task: rte\noptim:\n  lr: 5.0e-5\n  weight_decay: 0.01\n  lr: 1.0e-4\n")
    with pytest.raises(RecipeError, match=rf"^{re.escape(str(path))}, line 5: key 'lr' appears twice in one "
                                          r"mapping \(first on line 3\).*remove one"):
        load_recipe(path)


def test_two_top_level_blocks_of_one_section_are_refused_not_merged(tmp_path):
    path = tmp_path / "blocks.yaml"
    path.write_text("task: rte\noptim:\n  lr: 5.0e-5\nseed: 3\noptim:\n  warmup_ratio: 0.1\n")
    with pytest.raises(RecipeError, match=r"blocks.yaml, line 5: key 'optim' appears twice .*first on line 2"):
        load_recipe(path)


def test_a_card_key_twice_names_the_card_and_the_line(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text(CARD.format(reader="csv", ext="csv") + "main_metric: accuracy\n")
    with pytest.raises(TaskError, match=rf"^{re.escape(str(path))}, line 12: key 'main_metric' appears twice"):
        load_task(path)


def test_yaml_merge_keys_and_equal_keys_in_different_mappings_stay_valid():
    text = "base: &b {lr: 1, wd: 2}\nfit:\n  <<: *b\n  lr: 3\nlist: [{a: 1}, {a: 2}]\n"
    assert read_yaml(text) == {"base": {"lr": 1, "wd": 2}, "fit": {"lr": 3, "wd": 2}, "list": [{"a": 1}, {"a": 2}]}
    with pytest.raises(DuplicateKeyError, match="line 1: key 'a'"):
        read_yaml("{a: 1, a: 2}")  # twice on one line


def test_a_label_name_twice_is_refused(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text(CARD.format(reader="csv", ext="csv").replace("[negative, positive]", "[negative, positive, negative]"))
    with pytest.raises(TaskError, match=r"card.yaml: invalid task card: label name\(s\) \['negative'\] appear more "
                                        r"than once in 'labels'.*label_values"):
        load_task(path)


def test_f1_on_more_than_two_labels_points_to_macro_f1(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text(CARD.format(reader="csv", ext="csv").replace("[negative, positive]", "[negative, neutral, positive]")
                    .replace("metrics: [accuracy]", "metrics: [accuracy, f1]"))
    with pytest.raises(TaskError, match=r"card.yaml: invalid task card: metric 'f1' is the F1 of label 1 and needs 2 "
                                        r"labels, but 'labels' has 3: write macro_f1"):
        load_task(path)
    path.write_text(path.read_text().replace("[accuracy, f1]", "[accuracy, macro_f1]"))
    assert load_task(path).metrics == ["accuracy", "macro_f1"]


@pytest.mark.parametrize("reader, ext, body, where", [
    ("tsv", "tsv", "id\ttext\ty\n0\tgood\tpositive\nseven\tbad\tnegative\n", "train.tsv, line 3: idx 'seven'"),
    ("tsv", "tsv", "id\ttext\ty\n1.5\tgood\tpositive\n", "train.tsv, line 2: idx '1.5'"),
    ("csv", "csv", "id,text,y\n0,good,positive\nx7,bad,negative\n", "train.csv, row 2: idx 'x7'"),
    ("jsonl", "jsonl", '{"id": 0, "text": "good", "y": "positive"}\n{"id": 2.5, "text": "bad", "y": "negative"}\n',
     "train.jsonl, line 2.*idx 2.5"),
])
def test_an_idx_that_is_not_an_integer_names_the_file_and_the_row(tmp_path, reader, ext, body, where):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / f"train.{ext}").write_text(body)
    (tmp_path / "card.yaml").write_text(CARD.format(reader=reader, ext=ext))
    with pytest.raises(DataError, match=where + r".* is not an integer"):
        load_split(load_task(tmp_path / "card.yaml"), "train", tmp_path, "local", tmp_path / "cache")


def test_integer_idx_values_are_kept(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.tsv").write_text("id\ttext\ty\n7\tgood\tpositive\n9\tbad\tnegative\n")
    (tmp_path / "card.yaml").write_text(CARD.format(reader="tsv", ext="tsv"))
    ds = load_split(load_task(tmp_path / "card.yaml"), "train", tmp_path, "local", tmp_path / "cache")
    assert list(ds["idx"]) == [7, 9] and list(ds["label"]) == [1, 0]
