"""A user's own task: a card with ``reader: csv | json | parquet``, read by ``datasets``' packaged builders,
and the README's example card and command, run as written."""

import json
import re
from pathlib import Path

import pytest

from agora.data.cards import load_task
from agora.data.splits import load_split
from agora.errors import DataError, TaskError

ROOT = Path(__file__).resolve().parent.parent

CARD = """\
name: reviews
benchmark: mine
format: classification
labels: [negative, positive]
metrics: [accuracy, f1]
main_metric: accuracy
eval_splits: [validation]
test_splits: [test]
local:
  reader: {reader}
  dir: reviews
  columns: {{text_a: review, label: sentiment}}
  splits:
    train: train.{ext}
    validation: dev.{ext}
    test: test.{ext}
"""

ROWS = [("A warm, funny film.", "positive"), ('He said "never again", and meant it.', "negative"),
        ("Line one\nline two of a long review", "positive"), ("Dull.", "negative")]


def _write(root: Path, reader: str, rows=ROWS, name: str = "train") -> Path:
    import pandas as pd

    ext = {"csv": "csv", "json": "jsonl", "parquet": "parquet"}[reader]
    folder = root / "reviews"
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["review", "sentiment"])
    path = folder / f"{name}.{ext}"
    if reader == "csv":
        frame.to_csv(path, index=False)  # quotes around commas, quotes and newlines, as spreadsheets write them
    elif reader == "json":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    card = root / "reviews.yaml"
    card.write_text(CARD.format(reader=reader, ext=ext))
    return card


@pytest.mark.parametrize("reader", ["csv", "json", "parquet"])
def test_csv_json_and_parquet_cards_read_every_row_as_written(tmp_path, reader):
    card = load_task(_write(tmp_path, reader))
    ds = load_split(card, "train", tmp_path, "local", tmp_path / "cache")
    assert ds["text_a"] == [text for text, _ in ROWS]  # commas, quotes and newlines inside a field kept
    assert ds["label"] == [card.labels.index(label) for _, label in ROWS]
    assert ds["idx"] == [0, 1, 2, 3]


def test_json_array_numbers_positions_and_builder_options(tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps({"data": [{"id": 7, "txt": "good", "y": 1}, {"id": 9, "txt": "bad", "y": 0}]}))
    (tmp_path / "arr.yaml").write_text(
        "name: arr\nbenchmark: mine\nformat: classification\nlabels: [negative, positive]\n"
        "label_values: {'0': negative, '1': positive}\nmetrics: [accuracy]\nmain_metric: accuracy\n"
        "local:\n  reader: json\n  dir: reviews\n  options: {field: data}\n  columns: {idx: id, text_a: txt, label: y}\n"
        "  splits: {train: train.json}\n")
    ds = load_split(load_task(tmp_path / "arr.yaml"), "train", tmp_path, "local", tmp_path / "cache")
    assert ds["idx"] == [7, 9] and ds["label"] == [1, 0] and ds["text_a"] == ["good", "bad"]
    (folder / "semi.csv").write_text("good film;positive\nbad film;negative\n")
    (tmp_path / "semi.yaml").write_text(
        "name: semi\nbenchmark: mine\nformat: classification\nlabels: [negative, positive]\nmetrics: [accuracy]\n"
        "main_metric: accuracy\nlocal:\n  reader: csv\n  dir: reviews\n  header: false\n  options: {sep: ';'}\n"
        "  columns: {text_a: 0, label: 1}\n  splits: {train: semi.csv}\n")
    ds = load_split(load_task(tmp_path / "semi.yaml"), "train", tmp_path, "local", tmp_path / "cache")
    assert ds["text_a"] == ["good film", "bad film"] and ds["label"] == [1, 0]


def test_missing_column_empty_text_unknown_label_and_bad_file_are_named(tmp_path):
    card_path = _write(tmp_path, "csv")
    card = load_task(card_path)
    train = tmp_path / "reviews" / "train.csv"
    train.write_text("text,sentiment\ngood,positive\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(train))}: column 'review' \(for text_a\) not found; "
                                        r"the file has \['text', 'sentiment'\]"):
        load_split(card, "train", tmp_path, "local", tmp_path / "cache")
    train.write_text("review,sentiment\ngood,positive\n,negative\n")
    with pytest.raises(DataError, match=r"train.csv, row 2: column 'review' \(text_a\) is empty"):
        load_split(card, "train", tmp_path, "local", tmp_path / "cache")
    train.write_text("review,sentiment\ngood,positive\nbad,awful\n")
    with pytest.raises(DataError, match=r"train.csv, row 2: unknown label 'awful' for task reviews"):
        load_split(card, "train", tmp_path, "local", tmp_path / "cache")
    test = tmp_path / "reviews" / "test.csv"
    test.write_text("review\nno label needed here\n")  # an unlabelled split may lack the label column
    assert load_split(card, "test", tmp_path, "local", tmp_path / "cache")["label"] == [-1]
    parquet = tmp_path / "reviews" / "train.parquet"
    parquet.write_text("not parquet")
    card_path.write_text(card_path.read_text().replace("reader: csv", "reader: parquet").replace(".csv", ".parquet"))
    with pytest.raises(DataError, match=r"train.parquet: cannot be read as parquet"):
        load_split(load_task(card_path), "train", tmp_path, "local", tmp_path / "cache")


def test_unknown_reader_and_unknown_metric_are_named(tmp_path):
    card_path = _write(tmp_path, "csv")
    card_path.write_text(card_path.read_text().replace("reader: csv", "reader: xlsx"))
    with pytest.raises(DataError, match=r"local.reader 'xlsx' is not a reader; the readers are .*csv.*json.*parquet"):
        load_split(load_task(card_path), "train", tmp_path, "local", tmp_path / "cache")
    card_path.write_text(CARD.format(reader="csv", ext="csv").replace("metrics: [accuracy, f1]", "metrics: [accuracy, f1_macro]"))
    with pytest.raises(TaskError, match=r"unknown metric\(s\) \['f1_macro'\].*macro_f1"):
        load_task(card_path)


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("### Your own task", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def test_readme_card_and_command_train_on_a_csv_file(tmp_path, tiny_bort, one_thread, monkeypatch, capsys):
    """The README's "Your own task" card, written to a file as shown, and its command (with the tiny model
    and one epoch in place of the defaults) train, evaluate and predict."""
    from agora.cli import main

    section = _readme_section()
    card_text = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n.*?(agora-finetune [^\n]+)\n", section, re.S).group(1)
    assert "reader: csv" in card_text and "reviews.yaml" in command
    (tmp_path / "reviews.yaml").write_text(card_text)
    rows = [(f"{'A fine, warm' if i % 2 else 'A dull, cold'} film number {i}.", "positive" if i % 2 else "negative")
            for i in range(40)]
    folder = tmp_path / "reviews"
    folder.mkdir()
    for name, part in (("train.csv", rows[:24]), ("dev.csv", rows[24:32]), ("test.csv", rows[32:])):
        (folder / name).write_text("review,sentiment\n" + "".join(f'"{t}",{s}\n' for t, s in part))
    monkeypatch.chdir(tmp_path)
    args = command.split()[1:] + [f"model.name={tiny_bort}", "trainer.max_epochs=1", "trainer.precision=32-true",
                                  "output.dir=run", "trainer.enable_progress_bar=false"]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "reviews" and "validation/accuracy" in metrics["final"]
    assert len((tmp_path / "run" / "predictions" / "test.jsonl").read_text().splitlines()) == 8
