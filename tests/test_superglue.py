"""SuperGLUE task cards: real files and official counts, inputs, bad input, hub mapping, end to end."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from conftest import tiny_recipe

from agora.errors import DataError
from agora.data.metrics import compute_metrics
from agora.data.splits import load_split
from agora.data.cards import available_tasks, load_task

FIXTURES = Path(__file__).parent / "fixtures"
SUPERGLUE = ["boolq", "cb", "copa", "multirc", "record", "superglue-rte", "wic", "wsc", "axb", "axg"]
FEWGLUE = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "record": "ReCoRD",
           "superglue-rte": "RTE", "wic": "WiC", "wsc": "WSC"}

# Official SuperGLUE counts of the files in ../shared/data (rows: MultiRC answers; its README's table).
OFFICIAL = {
    ("boolq", "validation"): 3270, ("boolq", "test"): 3245,
    ("cb", "validation"): 56, ("cb", "test"): 250,
    ("copa", "validation"): 100, ("copa", "test"): 500,
    ("multirc", "validation"): 4848, ("multirc", "test"): 9693,
    ("superglue-rte", "train"): 2490, ("superglue-rte", "validation"): 277, ("superglue-rte", "test"): 3000,
    ("wic", "validation"): 638, ("wic", "test"): 1400,
    ("wsc", "train"): 554, ("wsc", "validation"): 104, ("wsc", "test"): 146,
    ("axb", "test"): 1104, ("axg", "test"): 356,
}


def _fewglue(data_dir: Path, task: str, cache: Path) -> datasets.Dataset:
    return load_split(load_task(task), "train", data_dir, "local", cache,
                      file=f"superglue/FewGLUE/{FEWGLUE[task]}/train.jsonl")


def test_every_superglue_card_is_shipped_and_valid():
    shipped = available_tasks()
    formats = {"copa": "multiple_choice", "multirc": "grouped", "record": "entity_cloze"}
    for name in SUPERGLUE:
        assert name in shipped
        card = load_task(name)
        assert card.benchmark == "superglue" and card.format == formats.get(name, "classification")
        assert card.local is not None and card.hub is not None and card.submission.get("superglue")
    assert load_task("cb").metrics == ["accuracy", "macro_f1"]
    assert load_task("multirc").metrics == ["f1a", "em"]
    assert load_task("record").metrics == ["record_f1", "record_em"]
    assert load_task("superglue-rte").extra_test_tasks == ["axb", "axg"]
    assert load_task("axb").predicted_by == load_task("axg").predicted_by == "superglue-rte"
    assert load_task("superglue/rte").name == "superglue-rte" and load_task("rte").benchmark == "glue"


@pytest.mark.parametrize("task,split", sorted(OFFICIAL), ids=lambda x: str(x))
def test_real_superglue_files_have_official_counts(data_dir, tmp_path, task, split):
    card = load_task(task)
    ds = load_split(card, split, data_dir, "local", tmp_path)
    assert len(ds) == OFFICIAL[(task, split)]
    assert len(set(ds["idx"])) == len(ds), "idx is unique"
    labels = set(ds["label"])
    if split in ("train", "validation"):
        assert labels == set(range(card.num_labels)), "every class appears, none is -1"
    elif task in ("axb", "axg"):  # the diagnostics ship their labels; read by name
        assert labels == {0, 1}
    else:
        assert labels == {-1}
    if task == "multirc":  # 83 / 166 paragraphs, 953 / 1820 questions
        paragraphs = {"validation": 83, "test": 166}[split]
        questions = {"validation": 953, "test": 1820}[split]
        assert len(set(ds["paragraph_idx"])) == paragraphs
        assert len(set(zip(ds["paragraph_idx"], ds["question_idx"]))) == questions


@pytest.mark.parametrize("task", sorted(FEWGLUE))
def test_fewglue_train_sets_are_real_training_data(data_dir, tmp_path, task):
    ds = _fewglue(data_dir, task, tmp_path)
    card = load_task(task)
    if task == "multirc":
        assert len(set(ds["paragraph_idx"])) == 32 and len(ds) == 154
    elif task == "record":
        assert len(set(ds["query_idx"])) == 32 and len(ds) == 397  # 397 candidate entities
        per_query = {}
        for q, label in zip(ds["query_idx"], ds["label"]):
            per_query[q] = per_query.get(q, 0) + label
        assert min(per_query.values()) >= 1, "every query has a gold candidate"
    else:
        assert len(ds) == 32
    if task == "wsc":  # FewGLUE's WSC subset holds only positive examples
        assert set(ds["label"]) == {card.labels.index("True")}
    else:
        assert set(ds["label"]) == set(range(card.num_labels))


def test_inputs_are_built_as_documented(data_dir, tmp_path):
    wic = load_split(load_task("wic"), "validation", data_dir, "local", tmp_path)[0]
    assert wic["text_a"] == "class: An emerging professional *class*."
    assert wic["text_b"].count("*") == 2 and "*class*" in wic["text_b"]
    assert wic["label"] == load_task("wic").labels.index("false")  # JSON false, by name

    wsc = _fewglue(data_dir, "wsc", tmp_path)[0]
    assert "*Tina*" in wsc["text_a"] and "#it#" in wsc["text_a"] and wsc["text_b"] == "it refers to Tina"
    off = load_split(load_task("wsc"), "validation", data_dir, "local", tmp_path).filter(lambda r: r["idx"] == 42)[0]
    assert "to use #it# ," in off["text_a"] and "*safe*" in off["text_a"]  # its span2_index points at "use"

    copa = load_split(load_task("copa"), "validation", data_dir, "local", tmp_path)
    assert copa[0]["text_a"] == "The man turned on the faucet."
    assert copa[0]["choices"] == ["so the toilet filled with water.", "so water flowed from the spout."]
    assert copa[0]["label"] == 1
    causes = [r for r in copa.select(range(10)) if r["choices"][0].startswith("because ")]
    assert causes, "'cause' questions read 'because ...'"

    multirc = load_split(load_task("multirc"), "validation", data_dir, "local", tmp_path)
    first = multirc[0]
    record = json.loads((data_dir / "superglue/MultiRC/val.jsonl").read_text().splitlines()[0])
    question = record["passage"]["questions"][0]
    assert first["text_a"] == record["passage"]["text"]
    assert first["text_b"] == f"{question['question']} {question['answers'][0]['text']}"
    assert (first["paragraph_idx"], first["question_idx"], first["answer_idx"]) == (
        record["idx"], question["idx"], question["answers"][0]["idx"])

    rec = _fewglue(data_dir, "record", tmp_path)
    raw = json.loads((data_dir / "superglue/FewGLUE/ReCoRD/train.jsonl").read_text().splitlines()[0])
    rows = [r for r in rec if r["passage_idx"] == raw["idx"]]
    query = raw["qas"][0]
    assert all("@placeholder" not in r["text_b"] and "@highlight" not in r["text_a"] for r in rows)
    assert {r["entity"] for r in rows if r["label"] == 1} == {a["text"] for a in query["answers"]}
    assert rows[0]["text_b"] == query["query"].replace("@placeholder", rows[0]["entity"])
    assert len({r["entity"] for r in rows}) == len(rows), "each candidate once"


# -- bad input: clear errors naming the file and the record ----------------------------------------

CB_OK = {"premise": "It rained.", "hypothesis": "It was wet.", "label": "entailment", "idx": 0}
MULTIRC_OK = {"idx": 3, "passage": {"text": "P.", "questions": [
    {"idx": 7, "question": "Q?", "answers": [{"idx": 11, "text": "a", "label": 1}, {"idx": 12, "text": "b", "label": 0}]}]}}


def _cb_record(**change):
    return {**CB_OK, "idx": 1, **change}


def _multirc_without_answer_idx():
    record = json.loads(json.dumps(MULTIRC_OK))
    del record["passage"]["questions"][0]["answers"][1]["idx"]
    return record


BAD = [
    ("cb", {k: v for k, v in _cb_record().items() if k != "hypothesis"},
     r"line 2 \(idx 1\): missing field 'hypothesis'"),
    ("cb", _cb_record(label="maybe"), r"line 2 \(idx 1\): unknown label 'maybe' for task cb; expected one of "
                                      r"\['entailment', 'contradiction', 'neutral'\]"),
    ("boolq", {"passage": "p", "question": "q", "label": "yes", "idx": 1}, r"line 2 \(idx 1\): unknown label 'yes'"),
    ("multirc", _multirc_without_answer_idx(), r"line 2 \(idx 3\), question 0 \(idx 7\), answer 1: missing field 'idx'"),
    ("multirc", {**MULTIRC_OK, "passage": {"text": "P."}}, r"line 2 \(idx 3\), passage: missing field 'questions'"),
    ("copa", {"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "label": 0, "idx": 4},
     r"line 2 \(idx 4\): question 'why' is neither 'cause' nor 'effect'"),
    ("copa", {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 2, "idx": 4},
     r"line 2 \(idx 4\): unknown label 2 for task copa; expected an option position 0..1"),
    ("wic", {"word": "w", "sentence1": "a w", "sentence2": "w b", "start1": 2, "end1": 9, "start2": 0, "end2": 1,
             "label": True, "idx": 5}, r"line 2 \(idx 5\): start1/end1 offsets 2..9 fall outside"),
    ("wsc", {"text": "He said it", "target": {"span1_text": "He", "span1_index": 0, "span2_text": "it"},
             "label": True, "idx": 6}, r"line 2 \(idx 6\), target: missing field 'span2_index'"),
    ("record", {"idx": 8, "passage": {"text": "Ann met Bob.", "entities": [{"start": 0, "end": 2}]},
                "qas": [{"query": "No blank here", "idx": 9, "answers": [{"text": "Ann"}]}]},
     r"line 2 \(idx 8\), query 0 \(idx 9\): the query has no @placeholder"),
]


@pytest.mark.parametrize("task,record,message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_records_name_the_file_and_the_record(tmp_path, task, record, message):
    path = tmp_path / "train.jsonl"
    first = {"cb": CB_OK, "multirc": MULTIRC_OK}.get(task)
    lines = [json.dumps(first) if first else "", json.dumps(record)]  # line 1: fine (or blank), line 2: bad
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as err:
        load_split(load_task(task), "train", None, "local", tmp_path / "cache", file=str(path))
    assert str(path) in str(err.value)


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps(CB_OK) + "\n{\"premise\": \"x\",\n")
    with pytest.raises(DataError, match=rf"{path}, line 2: not valid JSON"):
        load_split(load_task("cb"), "validation", None, "local", tmp_path / "cache", file=str(path))


def test_labelled_split_without_labels_is_an_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({k: v for k, v in CB_OK.items() if k != "label"}) + "\n")
    with pytest.raises(DataError, match=r"split 'train' needs labels but the row with idx 0 has none"):
        load_split(load_task("cb"), "train", None, "local", tmp_path / "cache", file=str(path))


# -- the hub: same rows as the original files, labels mapped by name -------------------------------

def _bool_label():
    return datasets.ClassLabel(names=["False", "True"])


def _hub(monkeypatch, fake: datasets.Dataset) -> list:
    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def _local_rows(tmp_path, task, records, split="validation"):
    path = tmp_path / f"{task}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return load_split(load_task(task), split, None, "local", tmp_path / "cache-local", file=str(path))


def test_hub_boolq_and_cb_map_labels_by_name(tmp_path, monkeypatch):
    fake = datasets.Dataset.from_dict(
        {"question": ["q1", "q2"], "passage": ["p1", "p2"], "idx": [0, 1], "label": [1, 0]},
        features=datasets.Features({"question": datasets.Value("string"), "passage": datasets.Value("string"),
                                    "idx": datasets.Value("int32"), "label": _bool_label()}))
    calls = _hub(monkeypatch, fake)
    card = load_task("boolq")
    ds = load_split(card, "validation", None, "hub", tmp_path)
    assert calls == [("aps/super_glue", "boolq", "validation")]
    assert [card.labels[i] for i in ds["label"]] == ["true", "false"]
    assert ds["text_a"] == ["p1", "p2"] and ds["text_b"] == ["q1", "q2"]

    # a hub whose class order differs from the card's still maps by name
    fake = datasets.Dataset.from_dict(
        {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "idx": [0, 1, 2], "label": [0, 1, 2]},
        features=datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                    "idx": datasets.Value("int32"),
                                    "label": datasets.ClassLabel(names=["neutral", "entailment", "contradiction"])}))
    _hub(monkeypatch, fake)
    cb = load_task("cb")
    ds = load_split(cb, "validation", None, "hub", tmp_path)
    assert [cb.labels[i] for i in ds["label"]] == ["neutral", "entailment", "contradiction"]


def test_hub_wic_wsc_copa_give_the_rows_of_the_original_files(tmp_path, monkeypatch, data_dir):
    wic = [json.loads(x) for x in (data_dir / "superglue/FewGLUE/WiC/train.jsonl").read_text().splitlines()[:3]]
    keys = ["word", "sentence1", "sentence2", "start1", "start2", "end1", "end2", "idx"]
    fake = datasets.Dataset.from_dict({**{k: [r[k] for r in wic] for k in keys},
                                       "label": [int(r["label"]) for r in wic]},
                                      features=datasets.Features({**{k: datasets.Value("string" if k in keys[:3] else "int32")
                                                                     for k in keys}, "label": _bool_label()}))
    _hub(monkeypatch, fake)
    assert load_split(load_task("wic"), "validation", None, "hub", tmp_path).to_list() == \
        _local_rows(tmp_path, "wic", wic).to_list()

    wsc = [json.loads(x) for x in (data_dir / "superglue/WSC/val.jsonl").read_text().splitlines()[:3]]
    fake = datasets.Dataset.from_dict(
        {"text": [r["text"] for r in wsc], "idx": [r["idx"] for r in wsc], "label": [int(r["label"]) for r in wsc],
         **{k: [r["target"][k] for r in wsc] for k in ("span1_index", "span2_index", "span1_text", "span2_text")}},
        features=datasets.Features({"text": datasets.Value("string"), "idx": datasets.Value("int32"),
                                    "label": _bool_label(), "span1_index": datasets.Value("int32"),
                                    "span2_index": datasets.Value("int32"), "span1_text": datasets.Value("string"),
                                    "span2_text": datasets.Value("string")}))
    calls = _hub(monkeypatch, fake)
    assert load_split(load_task("wsc"), "validation", None, "hub", tmp_path).to_list() == \
        _local_rows(tmp_path, "wsc", wsc).to_list()
    assert set(calls) == {("aps/super_glue", "wsc.fixed", "validation")}

    copa = [json.loads(x) for x in (data_dir / "superglue/COPA/val.jsonl").read_text().splitlines()[:4]]
    keys = ["premise", "choice1", "choice2", "question"]
    fake = datasets.Dataset.from_dict(
        {**{k: [r[k] for r in copa] for k in keys}, "idx": [r["idx"] for r in copa], "label": [r["label"] for r in copa]},
        features=datasets.Features({**{k: datasets.Value("string") for k in keys}, "idx": datasets.Value("int32"),
                                    "label": datasets.ClassLabel(names=["choice1", "choice2"])}))
    _hub(monkeypatch, fake)
    hub_rows = load_split(load_task("copa"), "validation", None, "hub", tmp_path).to_list()
    assert hub_rows == _local_rows(tmp_path, "copa", copa).to_list()
    assert [r["label"] for r in hub_rows] == [r["label"] for r in copa]


def test_hub_multirc_and_record_give_the_rows_of_the_original_files(tmp_path, monkeypatch, data_dir):
    record = json.loads((data_dir / "superglue/FewGLUE/MultiRC/train.jsonl").read_text().splitlines()[0])
    hub = {"paragraph": [], "question": [], "answer": [], "idx": [], "label": []}
    for q in record["passage"]["questions"]:
        for a in q["answers"]:
            hub["paragraph"].append(record["passage"]["text"])
            hub["question"].append(q["question"])
            hub["answer"].append(a["text"])
            hub["idx"].append({"paragraph": record["idx"], "question": q["idx"], "answer": a["idx"]})
            hub["label"].append(a["label"])
    ids = {k: datasets.Value("int32") for k in ("paragraph", "question", "answer")}
    fake = datasets.Dataset.from_dict(hub, features=datasets.Features({
        "paragraph": datasets.Value("string"), "question": datasets.Value("string"),
        "answer": datasets.Value("string"), "idx": ids, "label": _bool_label()}))
    _hub(monkeypatch, fake)
    hub_rows = load_split(load_task("multirc"), "validation", None, "hub", tmp_path).to_list()
    assert hub_rows == _local_rows(tmp_path, "multirc", [record]).to_list()
    assert sum(r["label"] for r in hub_rows) == sum(a["label"] for q in record["passage"]["questions"] for a in q["answers"])

    raw = json.loads((data_dir / "superglue/FewGLUE/ReCoRD/train.jsonl").read_text().splitlines()[1])
    text = raw["passage"]["text"]
    mentions = [text[e["start"] : e["end"] + 1] for e in raw["passage"]["entities"]]
    qa = raw["qas"][0]
    fake = datasets.Dataset.from_dict({
        "passage": [text], "query": [qa["query"]], "entities": [sorted(set(mentions))],
        "answers": [[a["text"] for a in qa["answers"]]], "idx": [{"passage": raw["idx"], "query": qa["idx"]}]})
    _hub(monkeypatch, fake)
    hub_rows = load_split(load_task("record"), "validation", None, "hub", tmp_path).to_list()
    local_rows = _local_rows(tmp_path, "record", [raw]).to_list()
    key = lambda r: r["entity"]  # noqa: E731  (the hub lists entities in its own order)
    assert [{**r, "idx": 0} for r in sorted(hub_rows, key=key)] == [{**r, "idx": 0} for r in sorted(local_rows, key=key)]


# -- end to end: every card trains and predicts with a tiny model ------------------------------------

def _data_root(tmp_path: Path, data_dir: Path, task: str) -> Path:
    """The real data dir, except ReCoRD: its val/test files are absent, the fixture stands in."""
    if task != "record":
        return data_dir
    root = tmp_path / "data" / "superglue"
    root.mkdir(parents=True)
    (root / "ReCoRD").symlink_to(FIXTURES / "superglue" / "ReCoRD")
    return tmp_path / "data"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


E2E = ["boolq", "cb", "copa", "multirc", "record", "superglue-rte", "wic", "wsc"]


@pytest.mark.parametrize("task", E2E)
def test_train_and_predict_end_to_end(tmp_path, data_dir, tiny_bort, task):
    from agora import AgoraTrainer

    files = {"train": f"superglue/FewGLUE/{FEWGLUE[task]}/train.jsonl"} if task not in ("wsc", "superglue-rte", "record") else {}
    recipe = tiny_recipe(tiny_bort, _data_root(tmp_path, data_dir, task), tmp_path / "run", task=task,
                         trainer={"max_epochs": 1},
                         data={"files": files, "max_train_samples": 64, "max_eval_samples": 48,
                               "max_predict_samples": 24, "max_length": 96})
    result = AgoraTrainer.from_dict(recipe).fit()
    card = load_task(task)
    assert set(result.scores) == {f"validation/{m}" for m in card.metrics}
    assert all(0.0 <= v <= 1.0 for v in result.scores.values())
    dev, test = _rows(result.predictions["validation"]), _rows(result.predictions["test"])
    assert (result.best_model_dir / "config.json").is_file()

    if task == "multirc":  # nested per paragraph; F1a and EM recomputed from the file
        answers = [(p["idx"], q["idx"], a) for p in dev for q in p["passage"]["questions"] for a in q["answers"]]
        from agora.data.formats import format_of

        root = _data_root(tmp_path, data_dir, task)
        whole = {s: format_of(card).whole_groups(load_split(card, s, root, "local", tmp_path / "c"), n)
                 for s, n in (("validation", 48), ("test", 24))}
        assert 48 <= len(answers) == whole["validation"], "the limit keeps the last question whole"
        wrong = json.loads((tmp_path / "run" / "mistakes.json").read_text())["validation"]
        assert wrong["rows"] == len(answers), "mistakes are counted per answer row, not per paragraph"
        assert len(wrong["mistakes"]) == sum(a["label"] != a["gold"] for *_, a in answers)
        assert all(set(a) == {"idx", "label", "gold"} for _, _, a in answers)
        again = compute_metrics(["f1a", "em"], [a["label"] for *_, a in answers], [a["gold"] for *_, a in answers],
                                groups=[(p, q) for p, q, _ in answers])
        assert again == pytest.approx({k.split("/")[1]: v for k, v in result.scores.items()})
        assert all(set(p) == {"idx", "passage"} and a["label"] in (0, 1)
                   for p in test for q in p["passage"]["questions"] for a in q["answers"])
        assert sum(len(q["answers"]) for p in test for q in p["passage"]["questions"]) == whole["test"]
    elif task == "record":  # one row per query, the entity as label; F1/EM recomputed from the file
        assert [r["idx"] for r in dev] == sorted(r["idx"] for r in dev)
        again = compute_metrics(["record_f1", "record_em"], [r["label"] for r in dev], [r["gold"] for r in dev])
        assert again == pytest.approx({k.split("/")[1]: v for k, v in result.scores.items()})
        fixture = [json.loads(x) for x in (FIXTURES / "superglue/ReCoRD/test.jsonl").read_text().splitlines()]
        assert all(set(r) == {"idx", "label"} and isinstance(r["label"], str) for r in test)
        assert {r["idx"] for r in test} <= {qa["idx"] for rec in fixture for qa in rec["qas"]}
    elif task == "copa":  # positions 0 / 1
        assert all(set(r) == {"idx", "label"} and r["label"] in (0, 1) for r in test)
        acc = np.mean([r["label"] == r["gold"] for r in dev])
        assert acc == pytest.approx(result.scores["validation/accuracy"])
    else:  # label names, in the card's spelling
        assert all(r["label"] in card.labels for r in test) and len(test) == 24
        golds, preds = [card.labels.index(r["gold"]) for r in dev], [card.labels.index(r["label"]) for r in dev]
        again = compute_metrics(card.metrics, preds, golds)
        assert again == pytest.approx({k.split("/")[1]: v for k, v in result.scores.items()})
    if task == "superglue-rte":  # its model predicts the diagnostics
        for extra in ("axb/test", "axg/test"):
            rows = _rows(result.predictions[extra])
            assert len(rows) == 24 and {r["label"] for r in rows} <= {"entailment", "not_entailment"}


def test_shipped_recipe_runs_as_written(tmp_path, data_dir, tiny_bort):
    """recipes/copa.yaml itself (bf16 autocast, its batch and length), only scaled down."""
    from agora import AgoraTrainer
    from agora.paths import RECIPES_DIR

    for name in E2E:
        assert (RECIPES_DIR / f"{name}.yaml").is_file(), f"recipes/{name}.yaml is shipped"
    result = AgoraTrainer.from_recipe("copa", model={"name": str(tiny_bort)}, output={"dir": str(tmp_path / "run")},
                                      data={"dir": str(data_dir), "files": {"train": "superglue/FewGLUE/COPA/train.jsonl"},
                                            "max_eval_samples": 32, "max_predict_samples": 16},
                                      trainer={"max_epochs": 1, "enable_progress_bar": False}).fit()
    assert set(result.scores) == {"validation/accuracy"}
    assert len(_rows(result.predictions["test"])) == 16


def test_record_and_multirc_formats_by_hand():
    """Best candidate per query (ReCoRD) and the nested, re-assembled MultiRC rows, from given logits."""
    from agora.data.formats import format_of

    record = load_task("record")
    logits = np.array([[0, 1], [0, 3], [0, 0], [2, 0], [0, 1]], dtype=float)  # P(gold) grows with column 1 - column 0
    meta = {"query_idx": [5, 5, 5, 9, 9], "entity": ["Paris", "Paris, France", "Lyon", "Bonn", "the Rhine"],
            "answers": [["Paris"]] * 3 + [["Bonn", "Bonn, Germany"]] * 2}
    # query 5 picks "Paris, France": F1 vs "Paris" = 2 * (1/2 * 1) / (1/2 + 1) = 2/3, EM 0; query 9 picks "the Rhine": 0, 0
    assert format_of(record).score(record, logits, np.zeros(5), meta) == pytest.approx({"record_f1": 1 / 3, "record_em": 0.0})
    out = {"idx": np.arange(5), "logits": logits, "labels": np.array([1, 0, 0, 1, 0])}
    assert format_of(record).prediction_rows(record, out, meta, with_gold=False) == [
        {"idx": 5, "label": "Paris, France"}, {"idx": 9, "label": "the Rhine"}]

    multirc = load_task("multirc")
    logits = np.array([[0, 1], [1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)  # predictions 1 0 0 1 1
    labels = np.array([1, 0, 1, 1, 0])
    meta = {"paragraph_idx": [1, 1, 0, 1, 0], "question_idx": [3, 3, 2, 4, 2], "answer_idx": [10, 11, 5, 12, 6]}
    # TP 2, FP 1 (answer 6), FN 1 (answer 5) -> F1a 2/3; question 3 and 4 right, question 2 wrong -> EM 2/3
    assert format_of(multirc).score(multirc, logits, labels, meta) == pytest.approx({"f1a": 2 / 3, "em": 2 / 3})
    rows = format_of(multirc).prediction_rows(multirc, {"idx": np.arange(5), "logits": logits, "labels": labels},
                                              meta, with_gold=False)
    assert rows == [
        {"idx": 0, "passage": {"questions": [{"idx": 2, "answers": [{"idx": 5, "label": 0}, {"idx": 6, "label": 1}]}]}},
        {"idx": 1, "passage": {"questions": [{"idx": 3, "answers": [{"idx": 10, "label": 1}, {"idx": 11, "label": 0}]},
                                             {"idx": 4, "answers": [{"idx": 12, "label": 1}]}]}},
    ]


@pytest.mark.parametrize("task, keys", [("multirc", ("paragraph_idx", "question_idx")), ("record", ("query_idx",))])
def test_sample_limits_keep_questions_whole(data_dir, tmp_path, task, keys):
    """``data.max_*_samples`` cuts after the last answer of a question (a query's last candidate)."""
    from agora.data.formats import format_of

    card = load_task(task)
    ds = _fewglue(data_dir, task, tmp_path)
    groups = [tuple(r[k] for k in keys) for r in ds.select_columns(list(keys))]
    for limit in range(1, 40):
        end = format_of(card).whole_groups(ds, limit)
        assert end >= limit and groups[end - 1] != (groups[end] if end < len(groups) else None)
        assert end == limit or groups[limit - 1] == groups[end - 1], "extends only the group cut at the limit"
    assert format_of(load_task("rte")).whole_groups(ds, 7) == 7
