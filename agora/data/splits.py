"""Load one split of a task as a memory-mapped ``datasets.Dataset`` with our columns.

Columns: ``idx`` (int64, unique per row), ``text_a`` (string), ``text_b`` (string, pair tasks
only), ``label`` (int64 class id, -1 when unlabelled; float32 score for regression, NaN when
unlabelled), plus the columns of the task's format (:mod:`agora.data.formats`: ``choices`` for
multiple choice, group keys for MultiRC, candidates for ReCoRD) and of its reader (RACE levels).
Local files are parsed once and cached as Arrow under the cache dir (keyed by the file's path,
size and mtime); hub datasets come through ``datasets.load_dataset`` with labels mapped by name.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import datasets

from agora.errors import DataError
from agora.data import formats
from agora.data.formats import format_of, is_pair
from agora.data.integrity import verified
from agora.paths import cache_dir as default_cache_dir
from agora.data.readers import HUB_READERS, READERS
from agora.data.cards import TaskCard


def features(card: TaskCard) -> datasets.Features:
    return format_of(card).features(card)


def local_path(card: TaskCard, split: str, root: Path | None, override: str | None = None) -> Path | None:
    """The split's file (a directory for RACE); ``override`` (``data.files``) is relative to ``root``."""
    if override is not None:
        path = Path(override).expanduser()
        return path if path.is_absolute() or root is None else root / path
    if card.local is None or root is None or split not in card.local.splits:
        return None
    return root / card.local.dir / card.local.split(split).file


def code_stamp(*objects) -> str:
    """A hash of the source of the modules defining ``objects``: cached rows and tokens are rebuilt
    when the code that made them changes (``datasets`` fingerprints do not see into called code)."""
    import inspect

    sources = sorted({inspect.getsource(inspect.getmodule(o)) for o in objects})
    return hashlib.sha256("".join(sources).encode()).hexdigest()[:16]


def _stamp(path: Path) -> str:
    """Size and mtime of a file, or of every file under a directory (RACE's per-article layout)."""
    if path.is_file():
        stat = path.stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"
    parts = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(root, name))
            parts.append(f"{os.path.relpath(os.path.join(root, name), path)}:{stat.st_size}-{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def expected_layout(card: TaskCard) -> str:
    if card.local is None:
        return "(this task has no local layout; it loads from the hub)"
    files = ", ".join(f"{card.local.dir}/{card.local.split(s).file}" for s in card.local.splits)
    return f"<data dir>/{files}"


def _generate(path: str, split: str, card_json: str, stamp: str, code: str = "", card_path: str | None = None):
    card = TaskCard.model_validate_json(card_json)
    card.path = card_path  # not part of the card's JSON; errors name the card's file
    spec = card.local.split(split) if split in card.local.splits else card.local.split(next(iter(card.local.splits)))
    spec._labelled = split == card.train_split or split in card.eval_splits
    reader = READERS[card.local.reader]
    yield from _checked(reader(Path(path), spec, card), card, split, path)


def _generate_hub(split: str, card_json: str, raw: datasets.Dataset, code: str = ""):
    """Hub examples (the loaded split, hashed by its fingerprint) through the card's hub reader
    (same rows as the local reader gives)."""
    card = TaskCard.model_validate_json(card_json)
    hub = card.hub
    where = f"hub dataset {hub.path}{'/' + hub.name if hub.name else ''} split '{split}'"
    yield from _checked(HUB_READERS[hub.reader](raw, card, where), card, split, where)


def _checked(rows, card: TaskCard, split: str, where: str):
    """Fill unlabelled rows, drop or fill ``text_b`` as the format wants, reject duplicate idx."""
    cols = features(card)
    empty_label = math.nan if card.format == "regression" else -1
    labelled = split == card.train_split or split in card.eval_splits
    seen: set[int] = set()
    for row in rows:
        if row["label"] is None:
            if labelled:
                raise DataError(
                    f"{where}: split '{split}' needs labels but the row with idx {row['idx']} has none "
                    f"(its label column is missing or empty); check the file, or the label column "
                    f"named in task card '{card.name}' (local.columns)"
                )
            row["label"] = empty_label
        if "text_b" not in cols:
            row.pop("text_b", None)
        elif row.get("text_b") is None:
            row["text_b"] = ""
        if row["idx"] in seen:
            raise DataError(f"{where}: idx {row['idx']} appears twice; every row needs its own idx")
        seen.add(row["idx"])
        yield row


def _surface_data_error(err: Exception) -> None:
    """``datasets`` wraps errors raised in generators; re-raise ours unchanged."""
    cause = err
    while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        raise cause from None


def _from_local(card: TaskCard, split: str, path: Path, cache: Path) -> datasets.Dataset:
    if card.local is None:
        raise DataError(f"task card {card.path or card.name} has no local: section, so it cannot read {path} "
                        "(data.files); add local: with its reader and columns")
    if card.local.reader not in READERS:
        raise DataError(f"task card {card.path or card.name}: local.reader '{card.local.reader}' is not a reader; "
                        f"the readers are {', '.join(sorted(READERS))}")
    try:
        ds = verified(lambda: datasets.Dataset.from_generator(
            _generate,
            features=features(card),
            gen_kwargs={
                "path": str(path.resolve()),
                "split": split,
                "card_json": card.model_dump_json(),
                "card_path": card.path,
                "stamp": _stamp(path),
                "code": code_stamp(READERS[card.local.reader], _generate, *formats.CODE),
            },
            cache_dir=str(cache / "datasets"),
        ), cache / "datasets", f"task {card.name}, split '{split}' ({path})")
    except DataError:
        raise
    except Exception as err:  # datasets wraps generator errors; surface ours unchanged
        _surface_data_error(err)
        if "corresponds to no data" in str(err):  # a generator that yields no row
            raise DataError(f"task {card.name}: split '{split}' is empty ({path}); it needs at least one row") from None
        raise
    return ds


def _load_hub(card: TaskCard, split: str, cache: Path | None = None) -> datasets.Dataset:
    hub = card.hub
    cache = cache or default_cache_dir()
    return datasets.load_dataset(hub.path, hub.name, split=hub.splits.get(split, split), cache_dir=str(cache / "hub"))


def _from_hub(card: TaskCard, split: str, cache: Path) -> datasets.Dataset:
    hub = card.hub
    raw = _load_hub(card, split, cache)
    if hub.reader is not None:
        if hub.reader not in HUB_READERS:
            raise DataError(f"task {card.name}: hub.reader '{hub.reader}' is not a registered hub reader "
                            f"({sorted(HUB_READERS)})")
        try:
            return verified(lambda: datasets.Dataset.from_generator(
                _generate_hub,
                features=features(card),
                gen_kwargs={"split": split, "card_json": card.model_dump_json(), "raw": raw,
                            "code": code_stamp(HUB_READERS[hub.reader], _generate, *formats.CODE)},
                cache_dir=str(cache / "datasets"),
            ), cache / "datasets", f"task {card.name}, split '{split}' (hub)")
        except DataError:
            raise
        except Exception as err:
            _surface_data_error(err)
            raise
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
        for row, value in zip(indices, batch[label_col] if label_col in batch else [None] * len(indices)):
            if card.format == "regression":
                labels.append(math.nan if value is None or value < 0 else float(value))
                if math.isinf(labels[-1]):
                    raise DataError(f"{where}, row {row}: label {value} is not a finite number; a regression "
                                    "label must be finite")
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
    file: str | None = None,
) -> datasets.Dataset:
    """One split as an Arrow-backed Dataset. Raises DataError naming missing files or bad rows.

    ``file`` replaces the card's file for this split (``data.files``; relative to ``data_dir``).
    """
    cache = cache or default_cache_dir()
    path = local_path(card, split, data_dir, file)
    use_local = file is not None or source == "local" or (source == "auto" and path is not None and path.exists())
    if use_local:
        if path is None or not path.exists():
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
