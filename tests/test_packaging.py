"""The wheel's layout: task cards and recipes inside ``agora/``, every subpackage listed.

Building a real wheel needs the network for build isolation, so these tests check the two things
that can go wrong: pyproject.toml forgetting a package or data file, and the installed layout
(``agora/tasks``, ``agora/recipes`` as package data beside the ``agora`` package's modules) not
resolving shipped names from a foreign working directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_subpackage_and_data_folder_is_packaged():
    tool = _setuptools()
    packages = set(tool["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "agora").rglob("__init__.py")}
    assert found <= packages, f"add {sorted(found - packages)} to [tool.setuptools] packages"
    assert tool["package-dir"]["agora.tasks"] == "tasks" and tool["package-dir"]["agora.recipes"] == "recipes"
    # the package-data globs must reach every shipped card and recipe
    cards = {p.relative_to(ROOT / "tasks") for p in (ROOT / "tasks").rglob("*.yaml")}
    globbed = {p.relative_to(ROOT / "tasks") for g in tool["package-data"]["agora.tasks"] for p in (ROOT / "tasks").glob(g)}
    assert cards and cards == globbed
    recipes = {p.name for p in (ROOT / "recipes").rglob("*.yaml")}
    assert recipes == {p.name for g in tool["package-data"]["agora.recipes"] for p in (ROOT / "recipes").glob(g)}


def test_installed_layout_finds_shipped_recipes_from_any_directory(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(ROOT / "agora", site / "agora", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tasks", site / "agora" / "tasks")
    shutil.copytree(ROOT / "recipes", site / "agora" / "recipes")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = (
        "import sys, agora.paths, agora.data.cards\n"
        "print('TASKS', agora.paths.TASKS_DIR)\n"
        "print('CARD', agora.data.cards.load_task('mnli').path)\n"
        "from agora.cli import main\n"
        "sys.exit(main(['rte', '--print-config']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr
    assert f"TASKS {site / 'agora' / 'tasks'}" in out.stdout
    assert f"CARD {site / 'agora' / 'tasks' / 'glue' / 'mnli.yaml'}" in out.stdout
    assert "task: rte" in out.stdout
