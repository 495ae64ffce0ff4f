"""Files a run writes and reads: atomic writes, JSON and JSONL, plain Python values.

Atomic: a temporary file beside the target, then a rename. A killed process leaves either the
old file or the new one, never half of one. The file gets the usual permissions (``0666`` less
the umask), not ``mkstemp``'s owner-only ``0600``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, content: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``content`` (text as UTF-8, bytes, or a function writing to a binary handle) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plain(value: Any) -> Any:
    """Numpy scalars and arrays, tuples, paths -> plain Python (JSON, and checkpoints that load with
    ``torch.load(weights_only=True)``); dict keys become strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    atomic_write(path, json.dumps(plain(obj), indent=indent) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """One JSON object per line, atomically."""
    atomic_write(path, "".join(json.dumps(plain(r)) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """Every non-empty line of a JSONL file, parsed; ``[]`` for a missing file."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pct(value: float | None) -> str:
    """A fraction as a percentage with 2 decimals, ``-`` for None."""
    return "-" if value is None else f"{value * 100:.2f}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def set_aside(path: Path) -> Path | None:
    """Rename a damaged file or folder to ``<name>.corrupt`` (``.corrupt-2``, ... when taken) beside it, so it is
    never read again and stays there to look at; None when it is already gone (another process set it aside)."""
    path = Path(path)
    target, n = path.with_name(path.name + ".corrupt"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{n}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target
class DuplicateKeyError(Exception):
    """A YAML mapping names the same key twice (plain YAML keeps the last one silently)."""

    def __init__(self, key: Any, line: int, first_line: int):
        self.key, self.line, self.first_line = key, line, first_line
        super().__init__(f"line {line}: key '{key}' appears twice in one mapping (first on line {first_line}); "
                         "YAML would silently keep only the last: remove one, or merge them into one")


def read_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a mapping with a duplicate key (:class:`DuplicateKeyError`, with
    the key and its lines); YAML's own errors are raised as ``yaml.YAMLError``."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # '<<: *anchor' keys are overridden by the mapping's own, as YAML says
                    key = self.construct_object(key_node, deep=True)
                    try:
                        if key in seen:
                            raise DuplicateKeyError(key, key_node.start_mark.line + 1, seen[key])
                    except TypeError:  # an unhashable key: the base loader says what is wrong with it
                        continue
                    seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=StrictLoader)


def disk_full(err: BaseException | None) -> OSError | None:
    """The "no space left" / "quota exceeded" OSError behind ``err`` (itself, or its cause or context), or None."""
    import errno

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        err = err.__cause__ or err.__context__
    return None


def atomic_dir(path: Path, fill: Callable[[Path], None]) -> None:
    """Write a folder whole or not at all: ``fill(tmp)`` writes into a temporary folder beside ``path``,
    which then replaces ``path``; if ``fill`` fails (a full disk), the temporary folder is removed and
    ``path`` is left as it was."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
