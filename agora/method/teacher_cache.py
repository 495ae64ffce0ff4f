"""The teacher's persistent cache: each distinct input is scored once, ever (see :mod:`agora.method.teacher`).

Raw teacher outputs are stored in Arrow IPC files ``<cache_dir>/<sha256(identity)[:16]>/part-*.arrow``
(columns ``key`` string, ``probs`` list<float32>), keyed by ``sha256(json.dumps([identity,
segments]))``.

Concurrency (several fits of a search label at once, on one machine or on a shared filesystem):

- Writes are atomic and never collide: new entries go to a new part file whose name is unique to
  its writer (``part-<time_ns>-<pid>-<random>.arrow``), written as a temporary file in the same
  directory and renamed into place (``os.replace``). A reader lists only ``part-*.arrow``, so it
  sees a whole part or none of it, never a torn entry; no part is ever rewritten or deleted.
- Each input is scored once across processes: :meth:`TeacherCache.exclusive` holds an advisory lock
  (``fcntl.flock`` on ``<dir>/.lock``) while a process loads the parts written since it last
  looked, scores what is still missing and writes it (:meth:`agora.method.teacher.Teacher.score`);
  a second process missing the same inputs waits, then finds them. The lock dies with its process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from agora.files import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX: no lock; writes stay atomic, an input may be scored twice
    fcntl = None

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

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[TeacherCache]:
        """Hold the cache directory's lock (other processes' ``exclusive`` waits) and see every part
        written so far: score-and-add inside it and no input is scored twice (no-op in memory)."""
        if self.directory is None or fcntl is None:
            self.refresh()
            yield self
            return
        with open(self.directory / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                self.refresh()
                yield self
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

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

    def lookup(self, inputs: Sequence[Sequence[str]], count: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(probs, miss)``: float32 ``[n, width]`` with NaN rows for misses, and a bool mask.

        ``width`` is that of the stored rows (0 when nothing matched); rows of different widths
        in one lookup raise ``ValueError``. ``count``: add to ``hits`` and ``misses``.
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
        if count:
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

            name = f"part-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.arrow"  # unique to this writer
            atomic_write(self.directory / name, write)
            self._loaded.add(name)
        self._rows.update(new)
        return len(new)
