"""Task cards and the original GLUE file layouts: real files, official counts, quirks, bad input."""

import math
from pathlib import Path

import datasets
import pytest

from agora.errors import DataError, TaskError
from agora.data.splits import load_split
from agora.data.cards import available_tasks, load_task

FIXTURES = Path(__file__).parent / "fixtures"
GLUE = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"]

# Official GLUE row counts of the files present in ../shared/data (its README's table).
OFFICIAL = {
    ("cola", "train"): 8551, ("cola", "validation"): 1043, ("cola", "test"): 1063,
    ("sst2", "train"): 67349, ("sst2", "validation"): 872, ("sst2", "test"): 1821,
    ("mrpc", "train"): 3668, ("mrpc", "validation"): 408, ("mrpc", "test"): 1725,
    ("stsb", "train"): 5749, ("stsb", "validation"): 1500, ("stsb", "test"): 1379,
    ("qnli", "test"): 5463,
    ("rte", "train"): 2490, ("rte", "validation"): 277, ("rte", "test"): 3000,
    ("wnli", "train"): 635, ("wnli", "validation"): 71, ("wnli", "test"): 146,
    ("ax", "test"): 1104,
}


def test_every_glue_card_is_shipped_and_valid():
    shipped = available_tasks()
    for name in GLUE:
        assert name in shipped
        card = load_task(name)
        assert card.benchmark == "glue"
        assert card.main_metric in card.metrics
        assert card.local is not None and card.hub is not None
        assert card.submission.get("glue"), f"{name} has no submission rule"


def test_main_metrics_are_official():
    assert load_task("cola").main_metric == "mcc"
    assert load_task("mrpc").main_metric == "f1"
    assert load_task("stsb").main_metric == "pearson"
    assert load_task("mnli").eval_splits == ["validation_matched", "validation_mismatched"]
    assert load_task("ax").predicted_by == "mnli" and load_task("mnli").extra_test_tasks == ["ax"]


@pytest.mark.parametrize("task,split", sorted(OFFICIAL), ids=lambda x: str(x))
def test_real_glue_files_have_official_counts(data_dir, task, split):
    card = load_task(task)
    ds = load_split(card, split, data_dir, source="local")
    assert len(ds) == OFFICIAL[(task, split)]
    idx = ds["idx"]
    assert len(set(idx)) == len(idx), "idx is unique"
    labels = ds["label"]
    if split in ("train", "validation"):
        if card.format == "regression":
            assert all(0.0 <= v <= 5.0 for v in labels)
        else:
            assert set(labels) == set(range(card.num_labels)), "every class appears, none is -1"
    else:
        assert all((math.isnan(v) if card.format == "regression" else v == -1) for v in labels)


def test_glue_quirks(data_dir):
    # MRPC: UTF-8 BOM before the header; labels 0/1 mapped to names by label_values.
    mrpc = load_split(load_task("mrpc"), "validation", data_dir, "local")
    assert mrpc[0]["text_a"].startswith("He said the foodservice pie business")
    assert mrpc[0]["label"] == load_task("mrpc").labels.index("equivalent")
    # CoLA: no header in train/dev (label in column 1, sentence in column 3), header in test.
    cola = load_split(load_task("cola"), "validation", data_dir, "local")
    assert cola[0]["text_a"] == "The sailors rode the breeze clear of the rocks."
    assert cola[-1]["idx"] == 1042  # no trailing newline: the last row is still read
    cola_test = load_split(load_task("cola"), "test", data_dir, "local")
    assert cola_test[0] == {"idx": 0, "text_a": "Bill whistled past the house.", "label": -1}
    # MRPC test: quotes are text, not CSV quoting.
    assert '"' in "".join(load_split(load_task("mrpc"), "train", data_dir, "local")["text_a"][:5])
    # STS-B: float scores.
    assert load_split(load_task("stsb"), "validation", data_dir, "local")[0]["label"] == 5.0
    # WNLI: 0/1 in the file are not_entailment/entailment (the hub order).
    wnli = load_task("wnli")
    assert wnli.label_id("1") == wnli.labels.index("entailment")


@pytest.mark.parametrize("task,counts", [
    ("mnli", {"train": 24, "validation_matched": 8, "validation_mismatched": 8, "test_matched": 10, "test_mismatched": 10}),
    ("qqp", {"train": 20, "validation": 10, "test": 10}),
    ("qnli", {"train": 20, "validation": 10, "test": 10}),
])
def test_absent_tasks_parse_their_original_layout(task, counts):
    card = load_task(task)
    for split, n in counts.items():
        ds = load_split(card, split, FIXTURES, source="local")
        assert len(ds) == n
    mnli_like = load_split(card, card.train_split, FIXTURES, "local")
    assert set(mnli_like["label"]) == set(range(card.num_labels))


def test_unknown_task_lists_shipped():
    with pytest.raises(TaskError, match=r"unknown task 'mnlx'.*Shipped tasks: .*mnli"):
        load_task("mnlx")


def test_task_names_are_forgiving():
    assert load_task("SST-2").name == "sst2" and load_task("sts_b").name == "stsb"


def test_malformed_card(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("name: x\nbenchmark: mine\nformat: classification\nmetrics: [accuracy]\nmain_metric: f1\n"
                    "local: {dir: x, splits: {train: t.tsv}}\n")
    with pytest.raises(TaskError, match=rf"{card}.*labels") as err:
        load_task(card)
    assert "(top level)" not in str(err.value) and "Value error" not in str(err.value)


def _copy_rte(tmp_path: Path, data_dir: Path, train_text: str | None = None) -> Path:
    root = tmp_path / "data"
    (root / "glue" / "RTE").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (root / "glue" / "RTE" / name).write_bytes((data_dir / "glue" / "RTE" / name).read_bytes())
    if train_text is not None:
        (root / "glue" / "RTE" / "train.tsv").write_text(train_text)
    return root


def test_unknown_label_names_file_and_line(tmp_path, data_dir):
    text = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tcontradiction\n"
    root = _copy_rte(tmp_path, data_dir, text)
    with pytest.raises(DataError) as err:
        load_split(load_task("rte"), "train", root, "local", tmp_path / "cache")
    msg = str(err.value)
    assert "train.tsv, line 3" in msg and "'contradiction'" in msg and "entailment" in msg


def test_empty_split(tmp_path, data_dir):
    root = _copy_rte(tmp_path, data_dir, "index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DataError, match=r"split 'train' is empty"):
        load_split(load_task("rte"), "train", root, "local", tmp_path / "cache")


def test_missing_label_column(tmp_path, data_dir):
    root = _copy_rte(tmp_path, data_dir, "index\tsentence1\tsentence2\n0\ta\tb\n")
    with pytest.raises(DataError, match=r"train.tsv: column 'label' \(for label\) not found; the file has \['index', 'sentence1', 'sentence2'\]\. Task card .*rte.yaml names it in local.columns"):
        load_split(load_task("rte"), "train", root, "local", tmp_path / "cache")


def test_missing_files_name_the_layout(tmp_path):
    with pytest.raises(DataError) as err:
        load_split(load_task("rte"), "train", tmp_path, "local")
    msg = str(err.value)
    assert str(tmp_path / "glue" / "RTE" / "train.tsv") in msg
    assert "glue/RTE/train.tsv, glue/RTE/dev.tsv, glue/RTE/test.tsv" in msg


def test_auto_falls_back_to_hub_and_says_what_is_missing(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"no local file .*glue/MNLI/train.tsv.*hub dataset nyu-mll/glue/mnli failed"):
        load_split(load_task("mnli"), "train", tmp_path, "auto")


def test_hub_labels_are_mapped_by_name(tmp_path, monkeypatch):
    """A hub dataset whose ClassLabel order differs from the card's still maps by name."""
    feats = datasets.Features({
        "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["contradiction", "entailment", "neutral"]),
        "idx": datasets.Value("int32"),
    })
    fake = datasets.Dataset.from_dict(
        {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, 1, 2], "idx": [7, 8, 9]},
        features=feats,
    )
    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    card = load_task("mnli")
    ds = load_split(card, "validation_matched", None, "hub", tmp_path)
    assert calls == [("nyu-mll/glue", "mnli", "validation_matched")]
    assert ds["idx"] == [7, 8, 9]
    assert [card.labels[i] for i in ds["label"]] == ["contradiction", "entailment", "neutral"]
    assert ds["text_a"] == ["a", "b", "c"] and ds["text_b"] == ["x", "y", "z"]


def test_hub_unknown_label_is_an_error(tmp_path, monkeypatch):
    feats = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["yes", "no"]), "idx": datasets.Value("int32")})
    fake = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [0], "idx": [0]}, features=feats)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake)
    with pytest.raises(DataError, match=r"hub label 'yes' is not a label of task rte"):
        load_split(load_task("rte"), "train", None, "hub", tmp_path)


def test_parsed_splits_are_cached_as_arrow(data_dir, tmp_path):
    card = load_task("sst2")
    first = load_split(card, "train", data_dir, "local", tmp_path)
    assert first.cache_files, "memory-mapped from an Arrow file, not held in Python"
    second = load_split(card, "train", data_dir, "local", tmp_path)
    assert second.cache_files[0]["filename"] == first.cache_files[0]["filename"]


@pytest.mark.parametrize("split, file", [("train", "train.tsv"), ("validation", "dev.tsv"), ("test", "test.tsv")])
def test_a_column_the_card_names_must_exist(tmp_path, data_dir, split, file):
    """RTE without its sentence2 column (the issue's ``cut -f1,2,4``) trained on sentence1 alone: now an error
    naming the file, the column and the header found, for every split (test files reach the leaderboard)."""
    root = _copy_rte(tmp_path, data_dir)
    path = root / "glue" / "RTE" / file
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = [0, 1, 3] if split != "test" else [0, 1]
    path.write_text("".join("\t".join(line.split("\t")[i] for i in keep) + "\n" for line in lines[:65]), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_split(load_task("rte"), split, root, "local", tmp_path / "cache")
    msg = str(err.value)
    assert str(path) in msg and "'sentence2' (for text_b) not found" in msg
    assert "['index', 'sentence1'" in msg and "local.columns" in msg


def test_unlabelled_test_split_needs_no_label_column_but_train_does(tmp_path, data_dir):
    root = _copy_rte(tmp_path, data_dir)
    assert len(load_split(load_task("rte"), "test", root, "local", tmp_path / "cache")) == 3000  # no label column
    (root / "glue" / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\n0\ta\tb\n")
    with pytest.raises(DataError, match=r"'label' \(for label\) not found; the file has \['index', 'sentence1', 'sentence2'\]"):
        load_split(load_task("rte"), "train", root, "local", tmp_path / "cache")


def test_a_headerless_row_too_short_for_the_card_is_named(tmp_path, data_dir):
    root = tmp_path / "data"
    (root / "glue" / "CoLA").mkdir(parents=True)
    (root / "glue" / "CoLA" / "train.tsv").write_text("gj04\t1\t\tA fine sentence.\ngj04\t0\n")
    with pytest.raises(DataError, match=r"train.tsv, line 2: 2 columns, but the task card .*cola.yaml reads text_a \(column 3\)"):
        load_split(load_task("cola"), "train", root, "local", tmp_path / "cache")
