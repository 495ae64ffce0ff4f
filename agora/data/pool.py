"""The unlabelled pool: in-domain inputs without labels, which the teacher labels where Agora asks.

``data.unlabelled`` names a file in the task's own format (relative to ``data.dir`` or absolute),
read by the task's own reader with its label column ignored, or ``train``: every input of the
task's train split (all of it, whatever ``data.max_train_samples`` keeps for D). Rows whose input
equals a row of D, E or the dev set are dropped, and so are repeated inputs; what was read and
dropped is counted (``Pool.stats``). The teacher labels pool rows through its cache when a
generator draws them (``generator: nearest``) or when ``agora.pool_rows`` asks for a random sample
(distillation on unlabelled data).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from agora.data.cards import TaskCard
from agora.data.rows import inputs_of
from agora.data.splits import load_split, local_path
from agora.errors import DataError

Segments = tuple[str, ...]


@dataclasses.dataclass
class Pool:
    """Distinct unlabelled inputs, none of them in D, E or dev."""

    idx: np.ndarray
    """int64 idx of each row (as the reader gave it)."""
    inputs: list[Segments]
    source: str
    """The file, or ``train``."""
    stats: dict[str, int]
    """``read``, ``repeated``, ``in_d``, ``in_e``, ``in_dev``, ``kept``."""
    positions: np.ndarray
    """Position of each row among the rows read (``read_inputs``)."""
    read_inputs: list[Segments]
    """Every input read from the file, before deduplication: caches keyed by the file (the nearest
    generator's embeddings) serve every run that reads it, whatever its D and E."""

    def __len__(self) -> int:
        return len(self.inputs)

    def file_identity(self) -> str:
        """A digest of every input read (in order)."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.read_inputs).encode("utf-8")).hexdigest()[:16]


def unlabelled_card(card: TaskCard) -> TaskCard:
    """The card with its label column removed: a pool file's labels, if any, are never read."""
    card = card.model_copy(deep=True)
    if card.local is not None:
        card.local.columns = {k: v for k, v in card.local.columns.items() if k != "label"}
        for name, spec in list(card.local.splits.items()):
            if not isinstance(spec, str) and spec.columns:
                spec.columns = {k: (None if k == "label" else v) for k, v in spec.columns.items()}
    return card


def load_pool(dm) -> Pool | None:
    """The pool of a loaded data module (``dm.cfg.data.unlabelled``), deduplicated against its D, E and dev."""
    dcfg = dm.cfg.data
    if not dcfg.unlabelled:
        return None
    from agora.paths import cache_dir, data_dir

    card, root = dm.card, data_dir(dcfg.dir)
    where = f"data.unlabelled: {dcfg.unlabelled}"
    if dcfg.unlabelled == "train":
        path = local_path(card, card.train_split, root, dcfg.files.get(card.train_split))
        if path is None or not path.exists():
            raise DataError(f"{where}: the task's train file is not here ({path or 'no local layout'}); "
                            "name a file of unlabelled rows in the task's format instead")
    else:
        path = Path(dcfg.unlabelled).expanduser()
        path = path if path.is_absolute() or root is None else root / path
        if not path.exists():
            raise DataError(f"{where}: no such file ({path}); give a file in the task's own format "
                            f"(the layout of its train file), relative to data.dir or absolute, or 'train'")
    try:  # read as a split without labels: a label column, if any, is never read
        ds = load_split(unlabelled_card(card), "unlabelled", root, "local", cache_dir(dcfg.cache_dir), str(path))
    except DataError as err:  # the reader's error names the file already: say only which setting read it
        raise DataError(f"data.unlabelled: {err}" if str(path) in str(err) else f"{where}: {err}") from None
    return dedup(dm, ds, str(dcfg.unlabelled))


def dedup(dm, ds, source: str) -> Pool:
    columns = [c for c in ("text_a", "text_b", "choices") if c in ds.column_names]
    rows = ds.select_columns(["idx", *columns]).to_dict()
    inputs = inputs_of(dm.card, rows)
    taken = {group: {x for split in splits for x in dm.inputs(split)[1]} for group, splits in _splits(dm).items()}
    stats = {"read": len(inputs), "repeated": 0, "in_d": 0, "in_e": 0, "in_dev": 0}
    keep, seen = [], set()
    for j, x in enumerate(inputs):
        if x in seen:
            stats["repeated"] += 1
        elif x in taken["d"]:
            stats["in_d"] += 1
        elif x in taken["e"]:
            stats["in_e"] += 1
        elif x in taken["dev"]:
            stats["in_dev"] += 1
        else:
            keep.append(j)
        seen.add(x)
    stats["kept"] = len(keep)
    if not keep:
        raise DataError(f"data.unlabelled: {source}: every one of its {len(inputs)} rows is also in D, E or the dev "
                        "set (or repeated): the pool is empty; give rows the task does not already hold")
    idx = np.asarray(rows["idx"], dtype=np.int64)[keep]
    return Pool(idx, [inputs[j] for j in keep], source, stats, np.asarray(keep, dtype=np.int64), inputs)


def _splits(dm) -> dict[str, list[str]]:
    return {"d": [dm.card.train_split], "e": [s for s in ("e_gen", "e_sel") if s in dm.raw],
            "dev": list(dm.card.eval_splits)}
