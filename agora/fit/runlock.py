"""One writer per run dir: a fit or a search holds ``<run>/.lock`` for as long as it writes there.

The lock is an OS file lock (``filelock``: ``flock`` on POSIX), so it dies with its process: a run killed
with ``kill -9`` leaves no lock behind, and the next run into the dir takes it. Beside it, ``<run>/.lock.json``
says who holds it (pid, host, start time, command), so a second run into a held dir fails at once
(:class:`RunDirLocked`, exit 2 from the CLI) naming the dir and that process. The holder deletes
``.lock.json`` when it lets go; one left behind names a killed holder, and the next run says it took over.

Only rank 0 locks (DDP ranks > 0 share rank 0's dir). A search's fits lock their own dirs
(``<run>/trials/<name>``), a different file from the search's lock, in this process or in Ray's workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from agora.errors import AgoraError
from agora.files import atomic_write

LOCK, OWNER = ".lock", ".lock.json"


class RunDirLocked(AgoraError, RuntimeError):
    """Another process is writing into this run dir."""


_HELD: dict[Path, bool] = {}
"""Run dirs this process holds the lock of, and whether taking the lock created the dir."""


def created_by_lock(path: Path) -> bool:
    """Whether this process created ``path`` when it took its lock (the run made the dir)."""
    return _HELD.get(Path(path).resolve(), False)


def holder(path: Path) -> dict | None:
    """What ``<run>/.lock.json`` says of the process that holds (or held) the lock, or None."""
    try:
        return json.loads((Path(path) / OWNER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def describe(owner: dict | None) -> str:
    if not owner:
        return "another process (it has not written its pid yet)"
    return (f"process {owner.get('pid')} on host {owner.get('host')} (started {owner.get('started')}: "
            f"{owner.get('command', '?')})")


@contextlib.contextmanager
def locked(path: Path, is_worker: bool = False, announce=print) -> Iterator[Path]:
    """Hold ``path``'s run lock for the block (created if missing); :class:`RunDirLocked` at once when another
    process holds it. A dir this made and that holds only the lock files when the block ends is removed."""
    import filelock

    path = Path(path)
    if is_worker:
        yield path
        return
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path / LOCK), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunDirLocked(f"output.dir {path} is in use: {describe(holder(path))} holds its lock "
                           f"({path / LOCK}). Wait for that run to end or stop it, or choose another output.dir"
                           ) from None
    key = path.resolve()
    try:
        stale = holder(path)
        if stale is not None:
            announce(f"[run] {path}: took over the lock left by {describe(stale)}, which is no longer running")
        atomic_write(path / OWNER, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)[:300]}))
        _HELD[key] = created
        yield path
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            (path / OWNER).unlink()
        if created and path.is_dir() and {p.name for p in path.iterdir()} <= {LOCK}:
            with contextlib.suppress(OSError):
                (path / LOCK).unlink()
                path.rmdir()
        lock.release()
