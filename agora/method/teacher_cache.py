"""The teacher's persistent cache: each distinct input is scored once, ever (see :mod:`agora.method.teacher`).

Raw teacher outputs are stored in Arrow IPC files ``<cache_dir>/<sha256(identity)[:16]>/part-*.arrow``
(columns ``key`` string, ``probs`` list<float32>), keyed by ``sha256(json.dumps([identity,
segments]))``.

Integrity: each part carries the sha256 of its content (keys, row offsets and values) in its schema metadata,
checked when the part is read, and its values are checked too (finite; probabilities in [0, 1], each row summing
to 1). A part that fails (truncated, overwritten, edited, or written before parts carried a checksum) is named in
a warning and set aside as ``part-*.arrow.corrupt``: its rows are never served, and the teacher scores them again
when they are next asked for. A cache dir that cannot be written (read-only, full) is a ``RecipeError`` naming it
and the setting (``teacher.cache_dir``).

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
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from agora.data.integrity import unwritable
from agora.files import atomic_write, set_aside

try:
    import fcntl
except ImportError:  # not POSIX: no lock; writes stay atomic, an input may be scored twice
    fcntl = None

_SCHEMA = pa.schema([("key", pa.string()), ("probs", pa.list_(pa.float32()))])


class DamagedPart(ValueError):
    """A cache part whose checksum or values fail (the message says which)."""


def bad_row(rows: np.ndarray, probabilities: bool) -> tuple[int, str] | None:
    """The first row of a ``[n, width]`` block of teacher outputs that cannot be served, and why; or None.
    Probabilities: finite, in [0, 1], each row summing to 1 (within 1e-3); raw scores (regression): finite."""
    rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        return i, f"not finite {rows[i].tolist()}"
    if probabilities and rows.size:
        wrong = ((rows < -1e-6) | (rows > 1 + 1e-6)).any(axis=1) | (np.abs(rows.sum(axis=1) - 1) > 1e-3)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            return i, f"not probabilities {rows[i].tolist()} (values in [0, 1] summing to 1)"
    return None


def content_digest(keys: Sequence[str], offsets: np.ndarray, values: np.ndarray) -> str:
    """sha256 of a part's content: its keys, row offsets (int64) and values (float32), as written."""
    digest = hashlib.sha256(json.dumps(list(keys)).encode("utf-8"))
    digest.update(np.ascontiguousarray(offsets, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return digest.hexdigest()


def read_part(path: Path, probabilities: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(keys, offsets, values)`` of one part, checked: DamagedPart when it cannot be read, its checksum
    differs from its content, or a row fails :func:`bad_row`."""
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
            keys = table.column("key").to_pylist()
            probs = table.column("probs").combine_chunks()
            offsets = probs.offsets.to_numpy().astype(np.int64) - probs.offsets[0].as_py()
            values = np.array(probs.values.to_numpy(zero_copy_only=False), dtype=np.float32)  # copy out of the map
            stored = (table.schema.metadata or {}).get(b"sha256", b"").decode("ascii", "replace")
    except (pa.ArrowException, OSError, KeyError, ValueError, TypeError) as err:
        raise DamagedPart(f"it cannot be read ({type(err).__name__}: {str(err).strip()[:200]})") from None
    if not stored:
        raise DamagedPart("it carries no checksum (written by an older version, or its metadata is damaged)")
    if content_digest(keys, offsets, values) != stored:
        raise DamagedPart("its checksum does not match its content")
    widths = np.diff(offsets)
    for width in np.unique(widths):
        rows = np.flatnonzero(widths == width)
        found = bad_row(np.stack([values[offsets[i] : offsets[i + 1]] for i in rows]), probabilities)
        if found is not None:
            raise DamagedPart(f"its row for key {keys[rows[found[0]]][:16]}... is {found[1]}")
    return keys, offsets, values


def cache_key(identity: str, segments: Sequence[str]) -> str:
    """The cache key of one input: ``sha256(json.dumps([identity, segments]))``."""
    return hashlib.sha256(json.dumps([identity, list(segments)]).encode("utf-8")).hexdigest()


class TeacherCache:
    """Teacher outputs keyed by (teacher identity, input), persisted as Arrow part files.

    Args:
        cache_dir: root directory; ``None`` keeps the cache in memory only (still one model
            call per distinct input for the life of the object).
        teacher_id: identity of the teacher and of everything that changes its output.
        probabilities: rows are probability vectors (False: raw regression scores, checked finite only).
        setting: the recipe setting that names ``cache_dir`` (said in errors).

    Raises:
        RecipeError: ``cache_dir`` cannot be written (read-only, full, no permission).

    Attributes:
        hits, misses: counts of looked-up inputs found / not found.
        set_aside: the damaged parts set aside so far (their new paths).
        directory: ``cache_dir/<sha256(teacher_id)[:16]>`` (None in memory).

    Example:
        >>> cache = TeacherCache(None, "my-teacher")  # in memory; give a directory to persist
        >>> cache.add([("a premise", "a hypothesis")], [[0.3, 0.7]])
        1
        >>> cache.lookup([("a premise", "a hypothesis"), ("unseen",)])
        (array([[0.3, 0.7],
               [nan, nan]], dtype=float32), array([False,  True]))
    """

    def __init__(self, cache_dir: str | os.PathLike | None, teacher_id: str, probabilities: bool = True,
                 setting: str = "teacher.cache_dir"):
        self.teacher_id = teacher_id
        self.probabilities, self.setting = probabilities, setting
        self.hits = 0
        self.misses = 0
        self.set_aside: list[Path] = []
        self._rows: dict[str, np.ndarray] = {}
        self._loaded: set[str] = set()
        self.directory = None
        if cache_dir is not None:
            self.directory = Path(cache_dir) / hashlib.sha256(teacher_id.encode("utf-8")).hexdigest()[:16]
            info = self.directory / "teacher.json"
            with self._writing():
                self.directory.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=self.directory).close()  # a read-only dir fails now, not at the first miss
                if not info.exists():  # for people browsing the cache; never read back
                    atomic_write(info, lambda f: f.write(json.dumps({"teacher_id": teacher_id}).encode()))
            self.refresh()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn an OSError of a read-only or full cache dir into a RecipeError naming it and the setting."""
        try:
            yield
        except OSError as err:
            clear = unwritable(err, self.directory, self.setting, "teacher cache dir")
            if clear is None:
                raise
            raise clear from None

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
        with self._writing():
            handle = open(self.directory / ".lock", "a+b")
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                self.refresh()
                yield self
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def refresh(self) -> None:
        """Load part files written since the last load (e.g. by another process), each checked (see the module
        docstring): a damaged part is named in a warning and set aside, and its rows are missing from now on."""
        if self.directory is None:
            return
        for path in sorted(self.directory.glob("part-*.arrow")):
            if path.name in self._loaded:
                continue
            try:
                keys, offsets, values = read_part(path, self.probabilities)
            except DamagedPart as why:
                moved = set_aside(path)
                if moved is not None:
                    self.set_aside.append(moved)
                    warnings.warn(f"teacher cache part {path} is damaged: {why}. Set aside as {moved.name}; its rows "
                                  "are never served, and the teacher scores them again.", stacklevel=2)
                continue
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
        found = bad_row(probs, self.probabilities) if len(probs) else None
        if found is not None:
            raise ValueError(f"TeacherCache.add: the output for input {list(inputs[found[0]])} is {found[1]}")
        new: dict[str, np.ndarray] = {}
        for seg, row in zip(inputs, probs):
            key = cache_key(self.teacher_id, seg)
            if key not in self._rows and key not in new:
                new[key] = np.array(row, dtype=np.float32).reshape(-1)
        if not new:
            return 0
        if self.directory is not None:
            self._write(new)
        self._rows.update(new)
        return len(new)

    def _write(self, new: dict[str, np.ndarray]) -> None:
        """One new part holding ``new``, its content's sha256 in its metadata, written atomically."""
        keys, rows = list(new), list(new.values())
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        values = np.concatenate(rows).astype(np.float32) if rows else np.zeros(0, np.float32)
        metadata = {"teacher_id": self.teacher_id, "sha256": content_digest(keys, offsets, values)}
        table = pa.table({"key": keys, "probs": [row.tolist() for row in rows]}, schema=_SCHEMA.with_metadata(metadata))

        def write(f):
            with pa.ipc.new_file(f, table.schema) as writer:
                writer.write_table(table)

        name = f"part-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.arrow"  # unique to this writer
        with self._writing():
            atomic_write(self.directory / name, write)
        self._loaded.add(name)
