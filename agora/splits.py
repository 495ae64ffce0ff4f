"""Load one split of a task as a memory-mapped ``datasets.Dataset`` with our columns.

Columns: ``idx`` (int64), ``text_a`` (string), ``text_b`` (string, pair tasks only), ``label``
(int64 class id, -1 when unlabelled; float32 score for regression, NaN when unlabelled).
Local files are parsed once and cached as Arrow under the cache dir (keyed by the file's path,
size and mtime); hub datasets come through ``datasets.load_dataset`` with labels mapped by name.
"""

from __future__ import annotations

import math
from pathlib import Path

import datasets

from agora.errors import DataError
from agora.paths import cache_dir as default_cache_dir
from agora.readers import READERS
from agora.tasks import TaskCard


def features(card: TaskCard) -> datasets.Features:
    cols = {"idx": datasets.Value("int64"), "text_a": datasets.Value("string")}
    if is_pair(card):
        cols["text_b"] = datasets.Value("string")
    cols["label"] = datasets.Value("float32" if card.format == "regression" else "int64")
    return datasets.Features(cols)


def is_pair(card: TaskCard) -> bool:
    local = card.local is not None and "text_b" in card.local.columns
    hub = card.hub is not None and "text_b" in card.hub.columns
    return local or hub or any(
        "text_b" in (s.columns or {}) for s in (card.local.splits.values() if card.local else []) if not isinstance(s, str)
    )


def local_path(card: TaskCard, split: str, root: Path | None) -> Path | None:
    if card.local is None or root is None or split not in card.local.splits:
        return None
    return root / card.local.dir / card.local.split(split).file


def expected_layout(card: TaskCard) -> str:
    if card.local is None:
        return "(this task has no local layout; it loads from the hub)"
    files = ", ".join(f"{card.local.dir}/{card.local.split(s).file}" for s in card.local.splits)
    return f"<data dir>/{files}"


def _generate(path: str, split: str, card_json: str, stamp: str):
    card = TaskCard.model_validate_json(card_json)
    spec = card.local.split(split)
    reader = READERS[card.local.reader]
    pair = is_pair(card)
    empty_label = math.nan if card.format == "regression" else -1
    labelled = split == card.train_split or split in card.eval_splits
    for row in reader(Path(path), spec, card):
        if row["label"] is None:
            if labelled:
                raise DataError(
                    f"{path}: split '{split}' needs labels but the label column "
                    f"'{spec.columns.get('label')}' is missing; see the task card {card.path}"
                )
            row["label"] = empty_label
        if not pair:
            row.pop("text_b", None)
        elif row.get("text_b") is None:
            row["text_b"] = ""
        yield row


def _from_local(card: TaskCard, split: str, path: Path, cache: Path) -> datasets.Dataset:
    stat = path.stat()
    try:
        ds = datasets.Dataset.from_generator(
            _generate,
            features=features(card),
            gen_kwargs={
                "path": str(path.resolve()),
                "split": split,
                "card_json": card.model_dump_json(),
                "stamp": f"{stat.st_size}-{stat.st_mtime_ns}",
            },
            cache_dir=str(cache / "datasets"),
        )
    except DataError:
        raise
    except Exception as err:  # datasets wraps generator errors; surface ours unchanged
        cause = err
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise
    return ds


def _from_hub(card: TaskCard, split: str, cache: Path) -> datasets.Dataset:
    hub = card.hub
    raw = datasets.load_dataset(hub.path, hub.name, split=hub.splits.get(split, split), cache_dir=str(cache / "hub"))
    names = None
    label_col = hub.columns.get("label", "label")
    if card.format == "classification" and isinstance(raw.features.get(label_col), datasets.ClassLabel):
        names = raw.features[label_col].names
    pair = is_pair(card)
    where = f"hub dataset {hub.path}/{hub.name or ''} split '{split}'"

    def convert(batch, indices):
        out = {
            "idx": batch[hub.columns["idx"]] if "idx" in hub.columns else indices,
            "text_a": batch[hub.columns.get("text_a", "text_a")],
        }
        if pair:
            out["text_b"] = batch[hub.columns.get("text_b", "text_b")]
        labels = []
        for value in batch[label_col] if label_col in batch else [None] * len(indices):
            if card.format == "regression":
                labels.append(math.nan if value is None or value < 0 else float(value))
            elif value is None or value == -1:
                labels.append(-1)
            else:
                name = names[value] if names is not None else str(value)
                name = hub.label_names.get(name, name)
                try:
                    labels.append(card.label_id(name))
                except (KeyError, ValueError):
                    raise DataError(
                        f"{where}: hub label '{name}' is not a label of task {card.name} ({card.labels}); "
                        f"map it in the task card's hub.label_names"
                    ) from None
        out["label"] = labels
        return out

    return raw.map(
        convert, batched=True, with_indices=True, remove_columns=raw.column_names, features=features(card)
    )


def load_split(
    card: TaskCard,
    split: str,
    data_dir: Path | None,
    source: str = "auto",
    cache: Path | None = None,
) -> datasets.Dataset:
    """One split as an Arrow-backed Dataset. Raises DataError naming missing files or bad rows."""
    cache = cache or default_cache_dir()
    path = local_path(card, split, data_dir)
    use_local = source == "local" or (source == "auto" and path is not None and path.is_file())
    if use_local:
        if path is None or not path.is_file():
            root = data_dir if data_dir is not None else "(no data dir: set data.dir or AGORA_DATA_DIR)"
            raise DataError(
                f"task {card.name}, split '{split}': file {path or '<none>'} not found under data dir {root}. "
                f"Expected the original layout: {expected_layout(card)}"
            )
        ds = _from_local(card, split, path, cache)
        origin = str(path)
    else:
        if card.hub is None:
            raise DataError(
                f"task {card.name}, split '{split}': no local file (expected {expected_layout(card)} under "
                f"{data_dir or 'AGORA_DATA_DIR (unset)'}) and the task has no hub dataset"
            )
        try:
            ds = _from_hub(card, split, cache)
        except DataError:
            raise
        except Exception as err:
            raise DataError(
                f"task {card.name}, split '{split}': no local file (expected {expected_layout(card)} under "
                f"{data_dir or 'AGORA_DATA_DIR (unset)'}), and loading hub dataset {card.hub.path}"
                f"{'/' + card.hub.name if card.hub.name else ''} failed: {type(err).__name__}: {err}"
            ) from err
        origin = f"hub:{card.hub.path}"
    if len(ds) == 0:
        raise DataError(f"task {card.name}: split '{split}' is empty ({origin}); it needs at least one row")
    return ds
