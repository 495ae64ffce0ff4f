"""RACE: the per-article layout with official counts, rows and truncation, bad input, the hub, end to end."""

import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest

from conftest import tiny_recipe

from agora.errors import DataError
from agora.data.readers.race import fill_blank
from agora.data.splits import load_split
from agora.data.cards import load_task

FIXTURES = Path(__file__).parent / "fixtures"

# Official RACE question counts (Lai et al., 2017), per level; all of them in ../shared/data.
OFFICIAL = {"train": {"high": 62445, "middle": 25421}, "validation": {"high": 3451, "middle": 1436},
            "test": {"high": 3498, "middle": 1436}}
CARDS = {"race": ("high", "middle"), "race-m": ("middle",), "race-h": ("high",)}


def test_race_cards_are_shipped_and_valid():
    for name, levels in CARDS.items():
        card = load_task(name)
        assert card.benchmark == "race" and card.format == "multiple_choice" and card.choices == 4
        assert card.labels == ["A", "B", "C", "D"] and card.local.options["levels"] == list(levels)
        assert card.eval_splits == ["validation", "test"]  # test answers are public: scored too
        assert card.prediction_fields == ["id", "question_idx"]
        assert card.hub.path == "ehovy/race" and card.hub.name == {"race": "all", "race-m": "middle", "race-h": "high"}[name]
    from agora.fit.model import model_class

    assert model_class(load_task("race")).__name__ == "AutoModelForMultipleChoice"


@pytest.mark.parametrize("task,split", [("race", "train"), ("race-m", "train"), *[
    (t, s) for t in CARDS for s in ("validation", "test")]], ids=str)
def test_real_race_files_have_official_counts(data_dir, task, split):
    ds = load_split(load_task(task), split, data_dir, "local")
    levels = Counter(ds["level"])
    assert levels == {lv: OFFICIAL[split][lv] for lv in CARDS[task]}
    assert len(set(ds["idx"])) == len(ds)
    assert len(set(zip(ds["id"], ds["question_idx"]))) == len(ds), "(id, question_idx) names a question"
    if split != "train":
        assert set(ds["label"]) == {0, 1, 2, 3}
        assert all(len(c) == 4 for c in ds["choices"])


def test_rows_fill_the_blank_and_keep_ids(data_dir):
    ds = load_split(load_task("race"), "train", FIXTURES, "local", file=str(FIXTURES / "race" / "train"))
    assert Counter(ds["level"]) == {"high": 19, "middle": 28}
    record = json.loads((FIXTURES / "race/train/middle/2.txt").read_text())
    rows = [r for r in ds if r["id"] == "middle2.txt"]
    assert [r["question_idx"] for r in rows] == list(range(5))
    assert rows[0]["text_a"] == record["article"]
    assert rows[0]["label"] == "ABCD".index(record["answers"][0])
    # two blanks, options "x; y": one part per blank
    assert rows[0]["choices"][0] == "According to the passage, drinking some hot soup in the morning is the best medicine ."
    assert rows[4]["choices"][0] == f"The best title to this passage is {record['options'][4][0]} ."
    assert fill_blank("What can we learn from the text?", " Nothing. ") == "What can we learn from the text? Nothing."
    assert fill_blank("She _ because _.", "left") == "She left because left ."  # parts do not match: whole option


def test_article_is_truncated_never_the_question_or_option(tiny_bort):
    from agora.config import ModelConfig
    from agora.data.formats import format_of
    from agora.fit.model import load_tokenizer

    tokenizer, _ = load_tokenizer(ModelConfig(name=str(tiny_bort)))
    card = load_task("race")
    article = " ".join(f"word{i}" for i in range(300))
    choices = [fill_blank("The writer thinks _ matters most.", o) for o in ("time", "money", "a long answer " * 5, "d")]
    # room for the longest question-with-option and some of the article, whatever the tokenizer
    max_length = max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in choices) + 16
    out = format_of(card).encode(tokenizer, card, {"text_a": [article], "choices": [choices]}, max_length)
    ids = out["input_ids"][0]
    assert len(ids) == 4 and all(len(seq) == max_length for seq in ids) and out["length"] == [max_length]
    for seq, choice in zip(ids, choices):
        option = tokenizer(choice, add_special_tokens=False)["input_ids"]
        assert seq[-len(option) - 1 : -1] == option, "the question with its option is whole"
        # identical to what the tokenizer itself gives for the pair, truncating the first segment only
        assert seq == tokenizer(article, choice, truncation="only_first", max_length=max_length)["input_ids"]


# -- bad input: clear errors naming the file and the record ----------------------------------------

GOOD = {"article": "A text.", "questions": ["Why?", "Who _ ?"], "options": [["a", "b", "c", "d"], ["e", "f", "g", "h"]],
        "answers": ["A", "D"], "id": "middle1.txt"}


def _tree(tmp_path: Path, text: str, name: str = "1.txt") -> Path:
    folder = tmp_path / "race" / "dev"
    for level in ("high", "middle"):
        (folder / level).mkdir(parents=True, exist_ok=True)
    (folder / "middle" / "0.txt").write_text(json.dumps({**GOOD, "id": "middle0.txt"}))
    (folder / "middle" / name).write_text(text)
    return tmp_path


BAD = [
    ('{"article": "A text.", "questions": [', r"middle/1.txt: not valid JSON"),
    (json.dumps({**GOOD, "options": [["a", "b", "c", "d"], ["e", "f", "g"]]}),
     r"middle/1.txt, question 1 \(id middle1.txt\): 3 options; every race question has exactly 4"),
    (json.dumps({**GOOD, "options": [["a", "b", "c", "d", "e"], ["e", "f", "g", "h"]]}),
     r"middle/1.txt, question 0 \(id middle1.txt\): 5 options"),
    (json.dumps({**GOOD, "answers": ["A", "E"]}),
     r"middle/1.txt, question 1 \(id middle1.txt\): unknown label 'E' for task race; expected one of \['A', 'B', 'C', 'D'\]"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "article"}), r"middle/1.txt: missing field\(s\) \['article'\]"),
    (json.dumps({**GOOD, "answers": ["A"]}), r"middle/1.txt: 2 questions, 2 option lists and 1 answers"),
    (json.dumps([GOOD]), r"middle/1.txt: expected a JSON object"),
]


@pytest.mark.parametrize("text,message", BAD, ids=range(len(BAD)))
def test_bad_files_name_the_file_and_the_question(tmp_path, text, message):
    root = _tree(tmp_path, text)
    with pytest.raises(DataError, match=message) as err:
        load_split(load_task("race"), "validation", root, "local", tmp_path / "cache")
    assert str(root / "race" / "dev" / "middle" / "1.txt") in str(err.value)


def test_missing_level_directory_names_the_layout(tmp_path):
    root = _tree(tmp_path, json.dumps(GOOD))
    shutil.rmtree(root / "race" / "dev" / "high")
    with pytest.raises(DataError, match=r"race/dev/high: missing; RACE's layout is race/<train\|dev\|test>/<high\|middle>"):
        load_split(load_task("race"), "validation", root, "local", tmp_path / "cache")
    # RACE-M reads the middle level only
    assert len(load_split(load_task("race-m"), "validation", root, "local", tmp_path / "cache")) == 4


# -- the hub: one row per question, the same rows as the files ---------------------------------------

def test_hub_gives_the_rows_of_the_original_files(tmp_path, monkeypatch):
    records = [json.loads((FIXTURES / "race/dev" / f).read_text()) for f in ("high/63.txt", "middle/13.txt")]
    hub = {"example_id": [], "article": [], "answer": [], "question": [], "options": []}
    for rec in records:
        for q, opts, a in zip(rec["questions"], rec["options"], rec["answers"]):
            for key, value in zip(hub, (rec["id"], rec["article"], a, q, opts)):
                hub[key].append(value)
    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(hub)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    rows = load_split(load_task("race"), "validation", None, "hub", tmp_path).to_list()
    assert set(calls) == {("ehovy/race", "all", "validation")}
    local_root = tmp_path / "local" / "race" / "dev"
    for rec, level in zip(records, ("high", "middle")):
        (local_root / level).mkdir(parents=True)
        (local_root / level / rec["id"].removeprefix(level)).write_text(json.dumps(rec))
    local = load_split(load_task("race"), "validation", tmp_path / "local", "local", tmp_path / "cache").to_list()
    assert rows == local
    assert [r["question_idx"] for r in rows] == [q for rec in records for q in range(len(rec["questions"]))]
    assert [r["level"] for r in rows] == ["high"] * 4 + ["middle"] * len(records[1]["questions"])

    hub["example_id"][0] = "college1.txt"
    with pytest.raises(DataError, match=r"row 0: example_id 'college1.txt' does not start with a level"):
        load_split(load_task("race"), "test", None, "hub", tmp_path)


# -- tokenization is cached; end to end ------------------------------------------------------------

def test_tokenized_split_is_cached_and_memory_mapped(tmp_path, tiny_bort):
    from agora.config import validate_recipe
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import load_tokenizer

    cfg = validate_recipe({"task": "race", "model": {"name": str(tiny_bort)},
                           "data": {"dir": str(FIXTURES), "cache_dir": str(tmp_path), "max_length": 64}})
    tokenizer, _ = load_tokenizer(cfg.model)
    card = load_task("race")
    files = []
    for _ in range(2):
        dm = TaskDataModule(cfg, card, tokenizer)
        raw = load_split(card, "train", FIXTURES, "local", tmp_path, file=str(FIXTURES / "race" / "train"))
        tokenized = dm._tokenize(raw, card)
        files.append(tokenized.cache_files[0]["filename"])
    assert files[0] == files[1] and Path(files[0]).is_file(), "the second load reads the first one's Arrow file"
    batch = next(iter(dm._loader(tokenized, 4, shuffle=True)))
    assert batch["input_ids"].shape[:2] == (4, 4) and batch["input_ids"].shape[2] <= 64


def test_race_trains_and_predicts_end_to_end(tmp_path, data_dir, tiny_bort):
    from agora import AgoraTrainer

    recipe = tiny_recipe(tiny_bort, data_dir, tmp_path / "run", task="race", trainer={"max_epochs": 1},
                         data={"files": {"train": str(FIXTURES / "race" / "train"),
                                         "validation": str(FIXTURES / "race" / "dev")},
                               "max_eval_samples": 24, "batch_size": 8})
    result = AgoraTrainer.from_dict(recipe).fit()
    assert set(result.scores) == {"validation/accuracy", "validation/accuracy_high", "validation/accuracy_middle",
                                  "test/accuracy", "test/accuracy_high"}  # the first 24 test questions are high
    dev = [json.loads(x) for x in result.predictions["validation"].read_text().splitlines()]
    assert len(dev) == 21 and all(set(r) == {"idx", "id", "question_idx", "label", "gold"} for r in dev)
    assert all(r["label"] in "ABCD" and r["gold"] in "ABCD" for r in dev)
    high = [r["label"] == r["gold"] for r in dev if r["id"].startswith("high")]
    assert sum(high) / len(high) == pytest.approx(result.scores["validation/accuracy_high"])
    assert sum(r["label"] == r["gold"] for r in dev) / 21 == pytest.approx(result.scores["validation/accuracy"])
    test = [json.loads(x) for x in result.predictions["test"].read_text().splitlines()]
    assert len({(r["id"], r["question_idx"]) for r in test}) == 24 and test[0]["id"] == "high73.txt"
    from transformers import AutoModelForMultipleChoice

    model = AutoModelForMultipleChoice.from_pretrained(result.best_model_dir)
    assert model.config.id2label[3] == "D"
