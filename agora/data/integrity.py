"""Caches checked on read: the Arrow files ``datasets`` writes under the cache dir (parsed splits,
tokenized splits), the pool's embeddings, and the teacher's cache (:mod:`agora.method.teacher_cache`).

``datasets`` verifies downloads, not its own cache files, so each Arrow cache file gets a sidecar
``<file>.sha256`` written when it is first used, and checked every time it is read again. A file that
fails (its digest differs, or it cannot be read: truncated, overwritten) is named in a warning and set
aside as ``<name>.corrupt`` (a parsed split: its whole builder folder, which holds its tokenized
caches too), and the split is parsed or tokenized again; a damaged file is never served. A cache dir
that cannot be written (read-only, full) is a :class:`RecipeError` naming it and its setting.
"""

from __future__ import annotations

import errno
import warnings
from collections.abc import Callable
from pathlib import Path

from agora.errors import DataError, RecipeError
from agora.files import atomic_write, set_aside, sha256_file

_UNWRITABLE = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


def unwritable(err: OSError, directory, setting: str, what: str = "cache dir") -> RecipeError | None:
    """The RecipeError for a cache dir that cannot be written (read-only, full, no permission), or None."""
    if not isinstance(err, OSError) or err.errno not in _UNWRITABLE:
        return None
    fix = "free some space there, or " if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return RecipeError(f"the {what} {directory} cannot be written ({err.strerror or err}): {fix}set {setting} to a "
                       "writable directory with free space")


def sidecar(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def damaged(path: Path) -> str | None:
    """Why the cache file ``path`` cannot be trusted, or None; a file without a sidecar gets one now."""
    path = Path(path)
    try:
        digest = sha256_file(path)
    except FileNotFoundError:
        return "it is missing"
    side = sidecar(path)
    if not side.is_file():
        atomic_write(side, digest + "\n")
        return None
    return None if side.read_text(encoding="utf-8").strip() == digest else \
        "its sha256 differs from the one recorded when it was written"


def unreadable(path: Path) -> str | None:
    """Why an Arrow stream file cannot be read whole, or None (used when ``datasets`` failed to read the cache)."""
    import pyarrow as pa

    why = damaged(path) if sidecar(path).is_file() else None
    if why is not None:
        return why
    try:
        with pa.memory_map(str(path)) as source:
            pa.ipc.open_stream(source).read_all()
    except (pa.ArrowException, OSError) as err:
        return f"it cannot be read ({str(err).strip()[:200]})"
    return None


def _builder_folder(path: Path) -> Path:
    """What to set aside for a damaged file: a parsed split's whole builder folder (``datasets`` rebuilds only
    a missing folder), else the file itself."""
    return path.parent if (path.parent / "dataset_info.json").is_file() and not path.name.startswith("cache-") \
        else path


def put_aside(path: Path, why: str, what: str) -> None:
    target = _builder_folder(Path(path))
    moved = set_aside(target)
    if target == path:
        set_aside(sidecar(path)) if sidecar(path).exists() else None
    if moved is not None:
        warnings.warn(f"{what}: the cache file {path} is damaged ({why}); set aside as {moved} and built again. "
                      "A damaged cache file is never read.", stacklevel=3)


def verified(build: Callable, root: Path, what: str, setting: str = "data.cache_dir"):
    """``build()`` (a ``datasets`` call that writes or reads Arrow caches under ``root``) with every cache file
    it returns checked (:func:`damaged`); a damaged one is set aside and ``build()`` runs once more. When
    ``datasets`` itself fails to read a cache, the unreadable files under ``root`` are set aside and it runs
    again (none found: the error is raised as it is)."""
    import pyarrow as pa

    for attempt in (0, 1):
        try:
            ds = build()
        except (pa.ArrowException, OSError) as err:
            clear = unwritable(err, root, setting)
            if clear is not None:
                raise clear from None
            if getattr(err, "errno", None) is not None:  # an OS error, not a damaged file (pyarrow's carry none)
                raise
            files = [] if attempt else [p for p in sorted(Path(root).rglob("*.arrow")) if ".corrupt" not in str(p)]
            bad = [(p, why) for p in files if (why := unreadable(p))]
            if not bad:  # not a damaged cache file: the error is someone else's
                raise
            for path, why in bad:
                put_aside(path, why, what)
            continue
        bad = [(Path(f["filename"]), why) for f in ds.cache_files if (why := damaged(Path(f["filename"])))]
        if not bad:
            return ds
        if attempt:
            raise DataError(f"{what}: the Arrow cache under {root} fails its checksum again after being rebuilt "
                            f"({bad[0][0]}: {bad[0][1]}); the disk may be failing: set {setting} to another folder")
        for path, why in bad:
            put_aside(path, why, what)
    raise AssertionError("unreachable")
