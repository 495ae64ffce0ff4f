"""The teacher's persistent cache: each distinct input is scored once, ever (see :mod:`agora.method.teacher`).

Raw teacher outputs are stored in Arrow IPC files ``<cache_dir>/<sha256(identity)[:16]>/part-XXXXX.arrow``
(columns ``key`` string, ``probs`` list<float32>), keyed by ``sha256(json.dumps([identity,
segments]))``. New entries go to a new part file written atomically (temporary file in the same
directory, then ``os.replace``). One writer per cache directory at a time; other processes call
``refresh()`` to see new parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from agora.files import atomic_write

_SCHEMA = pa.schema([("key", pa.string()), ("probs", pa.list_(pa.float32()))])


def cache_key(identity: str, segments: Sequence[str]) -> str:
    """The cache key of one input: ``sha256(json.dumps([identity, segments]))``."""
    return hashlib.sha256(json.dumps([identity, list(segments)]).encode("utf-8")).hexdigest()


class TeacherCache:
    """Teacher outputs keyed by (teacher identity, input), persisted as Arrow part files.

    Args:
        cache_dir: root directory; ``None`` keeps the cache in memory only (still one model
            call per distinct input for the life of the object).
        teacher_id: identity of the teacher and of everything that changes its output.

    Attributes:
        hits, misses: counts of looked-up inputs found / not found.
        directory: ``cache_dir/<sha256(teacher_id)[:16]>`` (None in memory).

    Example:
        >>> cache = TeacherCache(None, "my-teacher")  # in memory; give a directory to persist
        >>> cache.add([("a premise", "a hypothesis")], [[0.3, 0.7]])
        1
        >>> cache.lookup([("a premise", "a hypothesis"), ("unseen",)])
        (array([[0.3, 0.7],
               [nan, nan]], dtype=float32), array([False,  True]))
    """

    def __init__(self, cache_dir: str | os.PathLike | None, teacher_id: str):
        self.teacher_id = teacher_id
        self.hits = 0
        self.misses = 0
        self._rows: dict[str, np.ndarray] = {}
        self._loaded: set[str] = set()
        self.directory = None
        if cache_dir is not None:
            self.directory = Path(cache_dir) / hashlib.sha256(teacher_id.encode("utf-8")).hexdigest()[:16]
            self.directory.mkdir(parents=True, exist_ok=True)
            info = self.directory / "teacher.json"
            if not info.exists():  # for people browsing the cache; never read back
                atomic_write(info, lambda f: f.write(json.dumps({"teacher_id": teacher_id}).encode()))
            self.refresh()

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, segments: Sequence[str]) -> bool:
        return cache_key(self.teacher_id, segments) in self._rows

    def refresh(self) -> None:
        """Load part files written since the last load (e.g. by another process)."""
        if self.directory is None:
            return
        for path in sorted(self.directory.glob("part-*.arrow")):
            if path.name in self._loaded:
                continue
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
                keys = table.column("key").to_pylist()
                probs = table.column("probs").combine_chunks()
                offsets = probs.offsets.to_numpy()
                values = np.array(probs.values.to_numpy(zero_copy_only=False), dtype=np.float32)  # copy out of the map
            for i, key in enumerate(keys):
                self._rows.setdefault(key, values[offsets[i] : offsets[i + 1]])
            self._loaded.add(path.name)

    def lookup(self, inputs: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(probs, miss)``: float32 ``[n, width]`` with NaN rows for misses, and a bool mask.

        ``width`` is that of the stored rows (0 when nothing matched); rows of different widths
        in one lookup raise ``ValueError``.
        """
        found = [self._rows.get(cache_key(self.teacher_id, seg)) for seg in inputs]
        miss = np.array([row is None for row in found], dtype=bool)
        widths = {len(row) for row in found if row is not None}
        if len(widths) > 1:
            raise ValueError(f"teacher cache {self.directory}: rows of different widths {sorted(widths)} in one lookup")
        probs = np.full((len(found), widths.pop() if widths else 0), np.nan, dtype=np.float32)
        for i, row in enumerate(found):
            if row is not None:
                probs[i] = row
        self.hits += int((~miss).sum())
        self.misses += int(miss.sum())
        return probs, miss

    def add(self, inputs: Sequence[Sequence[str]], probs) -> int:
        """Store outputs for inputs not yet cached; returns how many entries were new."""
        probs = np.asarray(probs, dtype=np.float32)
        if len(probs) != len(inputs):
            raise ValueError(f"TeacherCache.add: {len(inputs)} inputs but {len(probs)} rows of probabilities")
        new: dict[str, np.ndarray] = {}
        for seg, row in zip(inputs, probs):
            key = cache_key(self.teacher_id, seg)
            if key not in self._rows and key not in new:
                new[key] = np.array(row, dtype=np.float32).reshape(-1)
        if not new:
            return 0
        if self.directory is not None:
            table = pa.table(
                {"key": list(new), "probs": [row.tolist() for row in new.values()]},
                schema=_SCHEMA.with_metadata({"teacher_id": self.teacher_id}),
            )

            def write(f):
                with pa.ipc.new_file(f, table.schema) as writer:
                    writer.write_table(table)

            taken = [re.fullmatch(r"part-(\d+)\.arrow", p.name) for p in self.directory.glob("part-*.arrow")]
            name = f"part-{max((int(m.group(1)) for m in taken if m), default=-1) + 1:05d}.arrow"
            atomic_write(self.directory / name, write)
            self._loaded.add(name)
        self._rows.update(new)
        return len(new)
